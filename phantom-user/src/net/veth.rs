//! The veth pair of an allowlist sandbox: `phv<N>` on the host side,
//! `eth0` inside the sandbox's network namespace, point-to-point
//! addresses derived from `N`, the sandbox's default routes through the
//! host end, and the XDP programs on both ends ([`attach_xdp`]).
//!
//! # Addresses
//! Pair `N` (0 to [`MAX_PAIRS`] - 1) gets `10.200.0.0/16` split in /30s
//! and `fd70:6861:6e74::/48` split in /64s:
//!
//! | end | IPv4 | IPv6 |
//! |---|---|---|
//! | host `phv<N>` | 10.200.(4N / 256).(4N % 256 + 1)/30 | fd70:6861:6e74:N::1/64 |
//! | sandbox `eth0` | the next address (+2) | fd70:6861:6e74:N::2/64 |
//!
//! `N` is the first index whose host interface name is free (creation is
//! exclusive, so concurrent supervisors never share a pair). The pair
//! vanishes with the sandbox's namespace: the kernel deletes both ends.
//! Forwarding and NAT beyond the host end are the host's business (phantom
//! changes no global sysctl or firewall rule).

use super::netlink::{self, ifinfomsg, Msg, Netlink};
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// How many pairs the address plan has room for.
pub const MAX_PAIRS: u32 = 16_384;
/// The sandbox end's name inside its namespace.
pub const SANDBOX_IF: &str = "eth0";

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_XDP: u16 = 43;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
/// Native (driver) XDP: veth runs it on its receive path.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_ADDRESS: u16 = 1;
const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REPLACE: u16 = 0x100;
const NUD_PERMANENT: u16 = 0x80;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const IF_OPER_UP: u8 = 6;
/// How long [`create`] waits for both ends to become operational.
const OPER_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The addresses of pair `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairAddrs {
    pub index: u32,
    pub host_v4: Ipv4Addr,
    pub sandbox_v4: Ipv4Addr,
    pub host_v6: Ipv6Addr,
    pub sandbox_v6: Ipv6Addr,
}

impl PairAddrs {
    pub fn new(index: u32) -> PairAddrs {
        assert!(index < MAX_PAIRS, "pair index {index} is past the address plan");
        let base = index * 4;
        let v4 = |host: u32| Ipv4Addr::new(10, 200, (base >> 8) as u8, (base & 0xff) as u8 + host as u8);
        let v6 = |host: u16| Ipv6Addr::new(0xfd70, 0x6861, 0x6e74, index as u16, 0, 0, 0, host);
        PairAddrs { index, host_v4: v4(1), sandbox_v4: v4(2), host_v6: v6(1), sandbox_v6: v6(2) }
    }

    pub fn host_name(&self) -> String {
        format!("phv{}", self.index)
    }
}

/// A configured pair (the kernel owns it; it goes away with the sandbox's
/// namespace, or with [`Veth::delete`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    pub addrs: PairAddrs,
    pub host_ifindex: u32,
    pub sandbox_ifindex: u32,
}

/// Runs `f` on a short-lived thread inside network namespace `ns` (the
/// calling thread's own when `None`).
pub fn in_netns<T: Send>(ns: Option<BorrowedFd<'_>>, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let raw = ns.map(|n| n.as_raw_fd());
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(raw) = raw {
                // SAFETY: setns on this thread only; raw is a live netns fd
                // borrowed for the scope.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))?;
    // SAFETY: a valid NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

fn set_up(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let up = libc::IFF_UP as u32;
    nl.request(Msg::new(netlink::RTM_NEWLINK, 0, &ifinfomsg(index as i32, up, up)))
}

/// No IPv6 link-local address and no duplicate address detection on
/// interface `name` of the calling thread's namespace: the pair's two
/// ends are ours, and DAD, router solicitations and MLD reports of a fresh
/// link-local address only delay the first packets.
fn quiet_ipv6(name: &str) -> io::Result<()> {
    for (key, value) in [("accept_dad", "0"), ("addr_gen_mode", "1")] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}

/// Attribute `attr` of interface `index` (RTM_GETLINK).
fn link_attr(nl: &mut Netlink, index: u32, attr: u16) -> io::Result<Vec<u8>> {
    let replies = nl.exchange(Msg::new(netlink::RTM_GETLINK, 0, &ifinfomsg(index as i32, 0, 0)))?;
    let reply = replies.first().ok_or_else(|| io::Error::other("RTM_GETLINK: no reply"))?;
    let found = netlink::attrs(reply, 16).into_iter().find(|(k, _)| *k == attr);
    found.map(|(_, v)| v.to_vec()).ok_or_else(|| io::Error::other(format!("RTM_GETLINK: no attribute {attr}")))
}

/// The RFC 2863 operational state of interface `index`.
fn operstate(nl: &mut Netlink, index: u32) -> io::Result<u8> {
    link_attr(nl, index, IFLA_OPERSTATE)?.first().copied().ok_or_else(|| io::Error::other("an empty IFLA_OPERSTATE"))
}

/// A permanent neighbour entry: `addr` is at `mac` on interface `index`.
/// The two ends of the pair know each other from the start, so neither
/// ARP nor neighbour discovery runs (nothing to wait for, nothing for the
/// XDP programs to let through).
fn add_neighbour(nl: &mut Netlink, index: u32, addr: IpAddr, mac: &[u8]) -> io::Result<()> {
    let (family, bytes) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let mut ndmsg = [0u8; 12];
    ndmsg[0] = family;
    ndmsg[4..8].copy_from_slice(&index.to_ne_bytes());
    ndmsg[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
    let m = Msg::new(RTM_NEWNEIGH, netlink::NLM_F_CREATE | NLM_F_REPLACE, &ndmsg)
        .attr(NDA_DST, &bytes)
        .attr(NDA_LLADDR, mac);
    nl.request(m)
}

/// Waits until interface `index` is operational. The kernel activates a
/// link's queue from deferred work (rate-limited to about once a second
/// under load); until then it drops what is sent, and a sandbox's first
/// SYN would wait a second for its retransmission.
fn wait_operational(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let deadline = std::time::Instant::now() + OPER_UP_WAIT;
    loop {
        if operstate(nl, index)? == IF_OPER_UP {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("interface {index} did not come up")));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn add_addr(nl: &mut Netlink, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let (family, bytes, flags) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 0),
        // No duplicate address detection: the link has two ends we own, and
        // a tentative address could not be used for a second or two.
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), IFA_F_NODAD),
    };
    let mut body = [0u8; 8];
    body[0] = family;
    body[1] = prefix;
    body[2] = flags;
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut m = Msg::new(netlink::RTM_NEWADDR, netlink::NLM_F_CREATE | netlink::NLM_F_EXCL, &body);
    if addr.is_ipv4() {
        m = m.attr(IFA_LOCAL, &bytes);
    }
    nl.request(m.attr(IFA_ADDRESS, &bytes))
}

fn add_default_route(nl: &mut Netlink, index: u32, gateway: IpAddr) -> io::Result<()> {
    let (family, bytes) = match gateway {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    // struct rtmsg: family, dst_len 0, src_len 0, tos 0, table main,
    // protocol static, scope universe, type unicast; flags 0.
    let body = [
        family,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let m = Msg::new(netlink::RTM_NEWROUTE, netlink::NLM_F_CREATE | netlink::NLM_F_EXCL, &body)
        .attr(RTA_GATEWAY, &bytes)
        .attr_u32(RTA_OIF, index);
    nl.request(m)
}

/// Creates pair `index` between the namespace `host_ns` (the caller's when
/// `None`) and `sandbox_ns`, configures both ends and brings them (and
/// the sandbox's loopback) up. `EEXIST`: the index is taken.
pub fn create(host_ns: Option<BorrowedFd<'_>>, sandbox_ns: BorrowedFd<'_>, index: u32) -> io::Result<Veth> {
    let addrs = PairAddrs::new(index);
    let name = addrs.host_name();
    let sandbox_fd = sandbox_ns.as_raw_fd() as u32;
    let host_ifindex = in_netns(host_ns, || {
        let mut nl = Netlink::open()?;
        let m = Msg::new(netlink::RTM_NEWLINK, netlink::NLM_F_CREATE | netlink::NLM_F_EXCL, &ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, &name)
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .nest(IFLA_INFO_DATA)
            .nest(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, SANDBOX_IF)
            .attr_u32(IFLA_NET_NS_FD, sandbox_fd)
            .end()
            .end()
            .end();
        nl.request(m)?;
        let idx = ifindex(&name)?;
        let configured = (|| {
            quiet_ipv6(&name)?;
            add_addr(&mut nl, idx, addrs.host_v4.into(), 30)?;
            add_addr(&mut nl, idx, addrs.host_v6.into(), 64)?;
            set_up(&mut nl, idx)
        })();
        let mac = configured.and_then(|()| link_attr(&mut nl, idx, IFLA_ADDRESS));
        match mac {
            Ok(mac) => Ok((idx, mac)),
            Err(e) => {
                let _ = nl.request(Msg::new(netlink::RTM_DELLINK, 0, &ifinfomsg(idx as i32, 0, 0)));
                Err(e)
            }
        }
    })?;
    let (host_ifindex, host_mac) = host_ifindex;
    let sandbox_ifindex = in_netns(Some(sandbox_ns), || {
        let mut nl = Netlink::open()?;
        let idx = ifindex(SANDBOX_IF)?;
        quiet_ipv6(SANDBOX_IF)?;
        set_up(&mut nl, ifindex("lo")?)?;
        add_addr(&mut nl, idx, addrs.sandbox_v4.into(), 30)?;
        add_addr(&mut nl, idx, addrs.sandbox_v6.into(), 64)?;
        add_neighbour(&mut nl, idx, addrs.host_v4.into(), &host_mac)?;
        add_neighbour(&mut nl, idx, addrs.host_v6.into(), &host_mac)?;
        set_up(&mut nl, idx)?;
        add_default_route(&mut nl, idx, addrs.host_v4.into())?;
        add_default_route(&mut nl, idx, addrs.host_v6.into())?;
        wait_operational(&mut nl, idx)?;
        Ok((idx, link_attr(&mut nl, idx, IFLA_ADDRESS)?))
    })
    .and_then(|(idx, mac)| {
        in_netns(host_ns, || {
            let mut nl = Netlink::open()?;
            add_neighbour(&mut nl, host_ifindex, addrs.sandbox_v4.into(), &mac)?;
            add_neighbour(&mut nl, host_ifindex, addrs.sandbox_v6.into(), &mac)?;
            wait_operational(&mut nl, host_ifindex)
        })?;
        Ok(idx)
    });
    let veth = Veth { addrs, host_ifindex, sandbox_ifindex: 0 };
    match sandbox_ifindex {
        Ok(i) => Ok(Veth { sandbox_ifindex: i, ..veth }),
        Err(e) => {
            let _ = veth.delete(host_ns);
            Err(e)
        }
    }
}

/// [`create`] with the first free index from `start` on.
pub fn create_any(host_ns: Option<BorrowedFd<'_>>, sandbox_ns: BorrowedFd<'_>, start: u32) -> io::Result<Veth> {
    for i in 0..MAX_PAIRS {
        let index = (start + i) % MAX_PAIRS;
        match create(host_ns, sandbox_ns, index) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            other => return other,
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, format!("all {MAX_PAIRS} veth pairs (phv*) are in use")))
}

impl Veth {
    /// Deletes the pair (both ends) from the host side.
    pub fn delete(&self, host_ns: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let index = self.host_ifindex;
        in_netns(host_ns, || {
            Netlink::open()?.request(Msg::new(netlink::RTM_DELLINK, 0, &ifinfomsg(index as i32, 0, 0)))
        })
    }
}

/// Attaches the XDP program `prog` (native mode) to interface `ifindex`
/// of namespace `ns`; `prog` = `None` detaches. The attachment belongs to
/// the interface: it ends when the interface goes away.
pub fn attach_xdp(ns: Option<BorrowedFd<'_>>, ifindex: u32, prog: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let fd = prog.map_or(-1, |p| p.as_raw_fd());
    in_netns(ns, || {
        let m = Msg::new(netlink::RTM_SETLINK, 0, &ifinfomsg(ifindex as i32, 0, 0))
            .nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &fd.to_ne_bytes())
            .attr_u32(IFLA_XDP_FLAGS, XDP_FLAGS_DRV_MODE)
            .end();
        Netlink::open()?.request(m)
    })
}

/// Replaces `old` by `new` on interface `ifindex` of namespace `ns` in one
/// step (`XDP_FLAGS_REPLACE`: the driver swaps the program pointer, so
/// every packet meets one of the two; it fails if `old` is not the one
/// attached).
pub fn replace_xdp(
    ns: Option<BorrowedFd<'_>>,
    ifindex: u32,
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
) -> io::Result<()> {
    let (new, old) = (new.as_raw_fd(), old.as_raw_fd());
    in_netns(ns, || {
        let m = Msg::new(netlink::RTM_SETLINK, 0, &ifinfomsg(ifindex as i32, 0, 0))
            .nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &new.to_ne_bytes())
            .attr_u32(IFLA_XDP_FLAGS, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE)
            .attr(IFLA_XDP_EXPECTED_FD, &old.to_ne_bytes())
            .end();
        Netlink::open()?.request(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_plan() {
        let a = PairAddrs::new(0);
        assert_eq!((a.host_v4, a.sandbox_v4), (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2)));
        let b = PairAddrs::new(70);
        assert_eq!((b.host_v4, b.sandbox_v4), (Ipv4Addr::new(10, 200, 1, 25), Ipv4Addr::new(10, 200, 1, 26)));
        assert_eq!(b.host_v6, "fd70:6861:6e74:46::1".parse::<Ipv6Addr>().unwrap());
        let last = PairAddrs::new(MAX_PAIRS - 1);
        assert_eq!(last.sandbox_v4, Ipv4Addr::new(10, 200, 255, 254));
        assert!(last.host_name().len() <= 15, "interface names are at most 15 bytes");
    }
}
