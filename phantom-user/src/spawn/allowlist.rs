//! The network of an allowlist sandbox at spawn time: a namespace of its
//! own (from the pool, or made here) with a veth pair to the host and the
//! bundle's XDP programs on both ends ([`crate::net`]). The pair lives as
//! long as the namespace: the kernel removes it when the sandbox is gone.

use super::netns::{self, NetKind};
use super::LayerStatus;
use crate::apply::LoadedBundle;
use crate::report::Enforcement;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the next pair's index search starts: spread by process so that
/// supervisors rarely probe each other's indices (creation is exclusive
/// either way).
static NEXT_PAIR: AtomicU32 = AtomicU32::new(u32::MAX);

fn next_index() -> u32 {
    let _ = NEXT_PAIR.compare_exchange(u32::MAX, std::process::id() * 97, Ordering::Relaxed, Ordering::Relaxed);
    NEXT_PAIR.fetch_add(1, Ordering::Relaxed) % crate::net::veth::MAX_PAIRS
}

/// Gives `ns` (or a fresh namespace when `None`) the allowlist network.
/// Returns the namespace the sandbox joins and the report lines of the XDP
/// layer and of the network; `Err` carries the reason when it cannot
/// (the caller fails closed if XDP is required).
pub(super) fn prepare(
    bundle: &LoadedBundle,
    ns: Option<OwnedFd>,
) -> Result<(OwnedFd, LayerStatus, String, crate::net::XdpAttachment), String> {
    let ns = match ns {
        Some(ns) => ns,
        None => netns::create(NetKind::Loopback).map_err(|e| format!("creating a network namespace: {e}"))?,
    };
    let programs = bundle.xdp_programs()?;
    let v = crate::net::setup_allowlist(None, ns.as_fd(), &programs, next_index()).map_err(|e| e.to_string())?;
    let (host_name, addrs) = (v.addrs.host_name(), v.addrs);
    let xdp = LayerStatus {
        layer: "xdp".into(),
        enforcement: Enforcement::Full,
        reason: Some(format!("egress on {host_name}, ingress on the sandbox's eth0")),
    };
    let network = format!(
        "veth pair {} {} <-> eth0 {} / {}; beyond the host end the host's forwarding and NAT decide (phantom doctor)",
        host_name, addrs.host_v4, addrs.sandbox_v4, addrs.sandbox_v6
    );
    let sandbox_ns = ns.try_clone().map_err(|e| format!("keeping the network namespace: {e}"))?;
    let attachment = crate::net::XdpAttachment { sandbox_ns, veth: v, programs };
    Ok((ns, xdp, network, attachment))
}
