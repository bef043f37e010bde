//! The request a prepared sandbox waits for: the supervisor hands it over
//! on the sandbox's control socket as one message (an 8-byte header, then
//! the payload, with the descriptors attached by SCM_RIGHTS). A sandbox
//! reads exactly one handover, then execs or exits: it is used once.
//!
//! Payload: NUL-terminated strings: the working directory, the argument
//! count, the arguments, then the environment. Descriptors: stdin, stdout,
//! stderr, then (optionally) a detached mount tree for `/workspace`.

use super::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// What one run needs from the supervisor.
pub(super) struct Handover {
    pub cwd: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// stdin, stdout, stderr.
    pub stdio: [RawFd; 3],
    /// A detached mount tree (`open_tree`) to attach at `/workspace`.
    pub workspace: Option<RawFd>,
}

/// The most descriptors one handover carries.
const MAX_FDS: usize = 4;

impl Handover {
    /// Sends the handover; the descriptors stay owned by the caller.
    pub fn send(&self, sock: RawFd) -> io::Result<()> {
        let mut payload = Vec::new();
        let mut push = |s: &[u8]| {
            payload.extend_from_slice(s);
            payload.push(0);
        };
        push(self.cwd.as_bytes());
        push(self.argv.len().to_string().as_bytes());
        for a in self.argv.iter().chain(&self.envp) {
            push(a.as_bytes());
        }
        let mut fds: Vec<RawFd> = self.stdio.to_vec();
        fds.extend(self.workspace);
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("the request is larger than 4 GiB"))?;
        let mut message = Vec::with_capacity(8 + payload.len());
        message.extend_from_slice(&len.to_ne_bytes());
        message.extend_from_slice(&(fds.len() as u32).to_ne_bytes());
        message.extend_from_slice(&payload);
        // One send: the sandbox wakes once, with the whole request there.
        sys::send_with_fds(sock, &message, &fds)
    }

    /// Waits for the handover. `Ok(None)`: the supervisor closed the socket
    /// without one (the pool was shut down). Received descriptors are
    /// close-on-exec.
    pub fn recv(sock: RawFd) -> io::Result<Option<Handover>> {
        let mut header = [0u8; 8];
        let (n, fds) = sys::recv_with_fds(sock, &mut header, MAX_FDS)?;
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("handover: {why}"));
        if n < header.len() {
            sys::read_exact(sock, &mut header[n..])?;
        }
        let len = u32::from_ne_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let nfds = u32::from_ne_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        if fds.len() != nfds || !(3..=MAX_FDS).contains(&nfds) {
            return Err(bad("wrong number of descriptors"));
        }
        let mut payload = vec![0u8; len];
        sys::read_exact(sock, &mut payload)?;
        let mut parts = payload.split(|b| *b == 0);
        let mut next = || -> io::Result<CString> {
            let s = parts.next().ok_or_else(|| bad("truncated"))?;
            CString::new(s).map_err(|_| bad("NUL inside a string"))
        };
        let cwd = next()?;
        let argc: usize = next()?.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("argument count"))?;
        let argv = (0..argc).map(|_| next()).collect::<io::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        // The payload ends with a NUL, so the split ends with an empty piece.
        for piece in parts {
            if !piece.is_empty() {
                envp.push(CString::new(piece).map_err(|_| bad("NUL inside a string"))?);
            }
        }
        if argv.is_empty() {
            return Err(bad("no command"));
        }
        Ok(Some(Handover { cwd, argv, envp, stdio: [fds[0], fds[1], fds[2]], workspace: fds.get(3).copied() }))
    }
}
