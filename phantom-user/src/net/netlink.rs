//! A minimal rtnetlink client: one request at a time, each acknowledged
//! (`NLM_F_ACK`), for the handful of link, address and route messages the
//! allowlist network needs. Messages are built with [`Msg`]; attributes
//! nest with [`Msg::nest`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_NEWROUTE: u16 = 24;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;

/// A netlink message under construction: header, fixed body, attributes.
#[derive(Debug)]
pub struct Msg {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Msg {
    /// A request of `kind` with `flags` (besides REQUEST and ACK), whose
    /// fixed part is `body` (`ifinfomsg`, `ifaddrmsg`, `rtmsg`).
    pub fn new(kind: u16, flags: u16, body: &[u8]) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(body);
        pad(&mut buf);
        Msg { buf, open: Vec::new() }
    }

    /// Appends attribute `kind` with `value`.
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Msg {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        pad(&mut self.buf);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(self, kind: u16, value: &str) -> Msg {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    pub fn attr_u32(self, kind: u16, value: u32) -> Msg {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// Opens a nested attribute; close it with [`Msg::end`].
    pub fn nest(mut self, kind: u16) -> Msg {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Raw bytes inside the current nest (a nested fixed struct such as
    /// the peer's `ifinfomsg` of a veth).
    pub fn raw(mut self, bytes: &[u8]) -> Msg {
        self.buf.extend_from_slice(bytes);
        pad(&mut self.buf);
        self
    }

    pub fn end(mut self) -> Msg {
        let start = self.open.pop().expect("end() closes an open nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "every nest is closed");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// `struct ifinfomsg`.
pub fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// A `NETLINK_ROUTE` socket, bound to the network namespace it was made in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        Ok(Netlink { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// Sends `msg` and waits for its acknowledgement; the kernel's error
    /// (negative errno in `NLMSG_ERROR`) becomes the `io::Error`.
    pub fn request(&mut self, msg: Msg) -> io::Result<()> {
        self.exchange(msg).map(drop)
    }

    /// [`Netlink::request`], returning the messages the kernel sent
    /// before its acknowledgement (each without its 16-byte header).
    pub fn exchange(&mut self, msg: Msg) -> io::Result<Vec<Vec<u8>>> {
        let mut replies = Vec::new();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sends a live buffer on our socket (to the kernel: no address).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: receives into a live buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
                let got_seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated netlink reply"));
                }
                if kind == NLMSG_ERROR && got_seq == seq && len >= 20 {
                    let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                    return if err == 0 { Ok(replies) } else { Err(io::Error::from_raw_os_error(-err)) };
                }
                if got_seq == seq {
                    replies.push(buf[off + 16..off + len].to_vec());
                }
                off += (len + 3) & !3;
            }
        }
    }
}

/// The attributes after a fixed header of `fixed` bytes: `(kind, value)`
/// (the nested flag cleared).
pub fn attrs(payload: &[u8], fixed: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = fixed;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & !NLA_F_NESTED;
        if len < 4 || off + len > payload.len() {
            break;
        }
        out.push((kind, &payload[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_are_sized_and_padded() {
        let m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(0, 0, 0)).attr_str(3, "ab").nest(18).attr_u32(1, 7).end();
        let b = m.finish(9);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize, b.len());
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        // header 16 + ifinfomsg 16 + "ab\0" attr (7 -> 8) + nest header 4 + u32 attr 8
        assert_eq!(b.len(), 16 + 16 + 8 + 4 + 8);
        let nest_len = u16::from_ne_bytes(b[40..42].try_into().unwrap());
        assert_eq!(nest_len, 12);
        assert_eq!(u16::from_ne_bytes(b[42..44].try_into().unwrap()), 18 | NLA_F_NESTED);
    }
}
