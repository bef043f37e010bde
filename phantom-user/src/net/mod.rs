//! The network of an allowlist sandbox: a veth pair between the host and
//! the sandbox's namespace ([`veth`]), configured over rtnetlink
//! ([`netlink`], no `ip` binary), with the policy's XDP programs on both
//! ends.

pub mod netlink;
pub mod veth;
