//! Loads a bundle's XDP object (`xdp.bpf.o`: [`phantom_ebpf::xdp`]'s two
//! programs and their shared flow map) with aya, through the same checked
//! path as the cgroup object ([`crate::bundle_object`]), so the kernel runs
//! the bytes `phantom-policy inspect` shows.

use super::NetError;
use crate::bundle_object::{self, BundleObject};
use phantom_ebpf::xdp::Direction;
use std::os::fd::OwnedFd;

/// Both programs, loaded (their maps live as long as the programs do).
#[derive(Debug)]
pub struct LoadedXdp {
    /// For the host end of the veth.
    pub egress: OwnedFd,
    /// For the sandbox end.
    pub ingress: OwnedFd,
}

/// Loads the object: maps created (and filled, for the LPM-trie design),
/// both programs verified; a rejection keeps the whole verifier log with
/// its instructions mapped to policy lines.
pub fn load(obj: &BundleObject) -> Result<LoadedXdp, NetError> {
    let loaded = bundle_object::load(obj).map_err(NetError::Object)?;
    let fd = |d: Direction| loaded.program_fd(d.name()).map_err(NetError::Object);
    Ok(LoadedXdp { egress: fd(Direction::Egress)?, ingress: fd(Direction::Ingress)? })
}
