//! `lsm_cgroup/socket_create` (raw and packet sockets) and
//! `lsm_cgroup/socket_connect` (the unix-socket allow-list).
//!
//! socket_create denies `AF_PACKET` sockets of any type and `SOCK_RAW`
//! sockets of `AF_INET`/`AF_INET6` (the kernel has already turned the
//! obsolete `AF_INET` + `SOCK_PACKET` into `AF_PACKET`). Netlink's
//! `SOCK_RAW` is not a raw socket in this sense (glibc and iproute2 need
//! it). Sockets the kernel creates for itself (`kern` = 1) pass.
//!
//! socket_connect runs for the connecting socket's cgroup (the cgroup of
//! the task that created it). For `AF_UNIX` it copies the address (the
//! kernel's copy of the caller's `sockaddr`, in a `sockaddr_storage`) with
//! `bpf_probe_read_kernel` into the record and compares it with each
//! entry: a path entry of n bytes needs `addrlen >= 2 + n`, the same bytes
//! at `sun_path`, and then the end of the address or a NUL; an abstract
//! entry `@name` needs `addrlen == 3 + len(name)`, a NUL at `sun_path[0]`
//! and the name's bytes. Names are compared as the caller wrote them: a
//! relative path or a symlink to an allowed socket does not match (deny).
//! Other families pass (the cgroup-BPF connect programs judge them).
//!
//! Registers: r6 = record, r7 = ctx, r8 = family / addrlen, r9 = type.

use super::emit::Emitter;
use super::{Hook, LsmProgram};
use crate::audit::{self, ObjectKind, Site, Verdict};
use crate::bpf::{Helper, Insn, Reg::*, SourceLoc};

pub const AF_UNIX: i32 = 1;
pub const AF_INET: i32 = 2;
pub const AF_INET6: i32 = 10;
pub const AF_PACKET: i32 = 17;
pub const SOCK_RAW: i32 = 3;
/// `sizeof(struct sockaddr_un)`: family (2) + `sun_path` (108).
pub const SOCKADDR_UN_LEN: i32 = 110;

pub(super) fn raw_sockets(site: Site, loc: Option<SourceLoc>, verdict: Verdict) -> LsmProgram {
    let mut e = Emitter::new(Hook::SocketCreate, loc);
    e.push(Insn::mov64_reg(R7, R1));
    e.scratch("nobuf");
    e.push(Insn::ldx_dw(R1, R7, 24)); // kern
    e.push(Insn::jne32_imm(R1, 0, "allow"));
    e.push(Insn::ldx_dw(R8, R7, 0)); // family
    e.push(Insn::ldx_dw(R9, R7, 8)); // type
    e.push(Insn::jeq32_imm(R8, AF_PACKET, "raw"));
    e.push(Insn::jeq32_imm(R8, AF_INET, "inet"));
    e.push(Insn::jeq32_imm(R8, AF_INET6, "inet"));
    e.label("allow");
    e.allow();
    e.label("inet");
    e.push(Insn::mov32_reg(R1, R9));
    e.push(Insn::and32_imm(R1, 0xf));
    e.push(Insn::jne32_imm(R1, SOCK_RAW, "allow"));
    e.label("raw");
    e.push(Insn::stx_w(R6, audit::off::OBJECT, R8));
    e.push(Insn::stx_w(R6, audit::off::OBJECT + 4, R9));
    e.push(Insn::ldx_dw(R1, R7, 16)); // protocol
    e.push(Insn::stx_w(R6, audit::off::OBJECT + 8, R1));
    e.push(Insn::st_w(R6, audit::off::DETAIL, 0));
    e.object(ObjectKind::Socket, 12);
    e.deny_at(site);
    e.label("nobuf");
    e.ret(verdict);
    e.record_tail(verdict);
    e.finish()
}

/// One entry of `kernel.unix_sockets.connect`.
pub(super) struct UnixEntry<'a> {
    pub name: &'a str,
    pub loc: Option<SourceLoc>,
}

pub(super) fn unix_connect(entries: &[UnixEntry], site: Site, loc: Option<SourceLoc>, verdict: Verdict) -> LsmProgram {
    let obj = audit::off::OBJECT;
    let mut e = Emitter::new(Hook::SocketConnect, loc.clone());
    e.push(Insn::mov64_reg(R7, R1));
    e.scratch("nobuf");
    e.object(ObjectKind::UnixAddr, 0);
    e.push(Insn::mov64_reg(R1, R6));
    e.push(Insn::add64_imm(R1, i32::from(obj)));
    e.push(Insn::mov64_imm(R2, SOCKADDR_UN_LEN));
    e.push(Insn::ldx_dw(R3, R7, 8)); // address
    e.push(Insn::call(Helper::ProbeReadKernel));
    e.push(Insn::jne_imm(R0, 0, "unreadable"));
    e.push(Insn::ldx_h(R1, R6, obj)); // sa_family
    e.push(Insn::jne_imm(R1, AF_UNIX, "allow"));
    e.push(Insn::ldx_dw(R8, R7, 16)); // addrlen
    e.push(Insn::stx_w(R6, audit::off::DETAIL, R8));
    e.push(Insn::mov32_reg(R2, R8));
    e.push(Insn::jle32_imm(R2, SOCKADDR_UN_LEN, "len_ok"));
    e.push(Insn::mov32_imm(R2, SOCKADDR_UN_LEN));
    e.label("len_ok");
    e.push(Insn::stx_h(R6, audit::off::OBJECT_LEN, R2));
    let base = obj as usize;
    for (j, entry) in entries.iter().enumerate() {
        if entry.loc.is_some() {
            e.loc = entry.loc.clone();
        }
        let miss = format!("unix{j}_miss");
        match entry.name.strip_prefix('@') {
            Some(name) => {
                let len = 3 + name.len() as i32;
                e.push(Insn::jne32_imm(R8, len, miss.as_str()));
                e.push(Insn::ldx_b(R1, R6, obj + 2));
                e.push(Insn::jne_imm(R1, 0, miss.as_str()));
                e.compare_bytes(R6, base + 3, name.as_bytes(), &miss);
                e.push(Insn::ja("allow"));
            }
            None => {
                let n = entry.name.len();
                let len = 2 + n as i32;
                e.push(Insn::jlt32_imm(R8, len, miss.as_str()));
                e.compare_bytes(R6, base + 2, entry.name.as_bytes(), &miss);
                e.push(Insn::jeq32_imm(R8, len, "allow"));
                e.push(Insn::ldx_b(R1, R6, obj + 2 + n as i16));
                e.push(Insn::jeq_imm(R1, 0, "allow"));
            }
        }
        e.label(miss);
    }
    e.loc = loc;
    e.deny_at(site);
    e.label("unreadable");
    e.object(ObjectKind::None, 0);
    e.deny_at(site);
    e.label("allow");
    e.allow();
    e.label("nobuf");
    e.ret(verdict);
    e.record_tail(verdict);
    e.finish()
}
