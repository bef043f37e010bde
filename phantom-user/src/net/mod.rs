//! The network of an allowlist sandbox: a veth pair between the host and
//! the sandbox's namespace ([`veth`]), configured over rtnetlink
//! ([`netlink`], no `ip` binary), with the policy's XDP programs
//! ([`xdp`]) on both ends: egress on the host end (it receives what the
//! sandbox sends), ingress on the sandbox end.

pub mod netlink;
pub mod veth;
pub mod xdp;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Kernel { what: String, source: io::Error },
    /// Loading the bundle's XDP object (a verifier rejection included).
    #[error(transparent)]
    Object(crate::loader::LoaderError),
}

/// Gives the sandbox namespace `sandbox_ns` a veth pair to `host_ns` (the
/// caller's when `None`) with the first free index from `start`, and
/// attaches the loaded XDP programs to both ends. On an error nothing is
/// left behind.
pub fn setup_allowlist(
    host_ns: Option<BorrowedFd<'_>>,
    sandbox_ns: BorrowedFd<'_>,
    programs: &xdp::LoadedXdp,
    start: u32,
) -> Result<veth::Veth, NetError> {
    let kernel = |what: &'static str| move |source| NetError::Kernel { what: what.into(), source };
    let v = veth::create_any(host_ns, sandbox_ns, start).map_err(kernel("creating the veth pair"))?;
    let attached = veth::attach_xdp(host_ns, v.host_ifindex, Some(programs.egress.as_fd()))
        .map_err(kernel("attaching XDP egress to the host end"))
        .and_then(|()| {
            veth::attach_xdp(Some(sandbox_ns), v.sandbox_ifindex, Some(programs.ingress.as_fd()))
                .map_err(kernel("attaching XDP ingress to the sandbox end"))
        });
    if let Err(e) = attached {
        let _ = v.delete(host_ns);
        return Err(e);
    }
    Ok(v)
}

/// The XDP programs on one sandbox's veth pair: what a policy update swaps
/// ([`crate::live`]). Holds the sandbox's network namespace (the pair's
/// other end) until dropped.
#[derive(Debug)]
pub struct XdpAttachment {
    pub sandbox_ns: std::os::fd::OwnedFd,
    pub veth: veth::Veth,
    pub programs: std::sync::Arc<xdp::LoadedXdp>,
}

impl XdpAttachment {
    /// Swaps both ends to `new` in place (the host end first: egress is
    /// what leaves the sandbox). On an error the ends already swapped stay
    /// swapped (each runs one version, never none).
    pub fn replace_with(&mut self, new: std::sync::Arc<xdp::LoadedXdp>) -> Result<(), NetError> {
        if std::sync::Arc::ptr_eq(&new, &self.programs) {
            return Ok(());
        }
        let kernel = |what: &'static str| move |source| NetError::Kernel { what: what.into(), source };
        veth::replace_xdp(None, self.veth.host_ifindex, new.egress.as_fd(), self.programs.egress.as_fd())
            .map_err(kernel("replacing XDP egress on the host end"))?;
        veth::replace_xdp(
            Some(self.sandbox_ns.as_fd()),
            self.veth.sandbox_ifindex,
            new.ingress.as_fd(),
            self.programs.ingress.as_fd(),
        )
        .map_err(kernel("replacing XDP ingress on the sandbox end"))?;
        self.programs = new;
        Ok(())
    }
}
