//! Loads a bundle's XDP object (`xdp.bpf.o`: [`phantom_ebpf::xdp`]'s two
//! programs and their shared flow map) with aya, through the same checked
//! path as the cgroup object ([`crate::bundle_object`], without aya), so the kernel runs
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

/// Loads the object ([`bundle_object::load_direct`]): maps created (and
/// filled, for the LPM-trie design), both programs verified; a rejection
/// keeps the whole verifier log with its instructions mapped to policy
/// lines.
pub fn load(obj: &BundleObject) -> Result<LoadedXdp, NetError> {
    let mut loaded = bundle_object::load_direct(obj).map_err(NetError::Object)?;
    let mut take = |d: Direction| {
        let i = loaded.programs.iter().position(|(n, _)| n == d.name()).ok_or_else(|| {
            NetError::Object(crate::loader::LoaderError::Object {
                what: obj.name.clone(),
                message: format!("no program `{}`", d.name()),
            })
        })?;
        Ok::<_, NetError>(loaded.programs.remove(i).1)
    };
    Ok(LoadedXdp { egress: take(Direction::Egress)?, ingress: take(Direction::Ingress)? })
}
