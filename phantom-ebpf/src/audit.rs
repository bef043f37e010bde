//! Audit records: one binary layout for every layer that can report a
//! decision from the kernel (BPF-LSM now; cgroup-BPF and XDP programs can
//! emit the same record later), written by BPF programs into a
//! `BPF_MAP_TYPE_RINGBUF` map and decoded here. The layout is documented in
//! docs/audit.md; this file is its single definition.
//!
//! ```text
//! off size field
//!   0    2 version      RECORD_VERSION (1)
//!   2    1 layer        Layer (5 = bpf-lsm)
//!   3    1 verdict      Verdict (0 deny, 1 complain: would deny, allowed)
//!   4    2 hook         layer-specific program id (BPF-LSM: lsm::Hook::id)
//!   6    2 file         index into Policy::sources; 0xffff: none
//!   8    4 rule         index of the rule in its list; 0xffffffff: none
//!  12    4 line         policy line (1-based); 0: none
//!  16    8 sandbox      cgroup v2 id of the acting task (the sandbox's cgroup)
//!  24    8 time_ns      bpf_ktime_get_ns (CLOCK_MONOTONIC)
//!  32    4 pid          acting task's tgid (initial pid namespace)
//!  36    4 tid          acting task's pid
//!  40   16 comm         acting task's comm, NUL-padded
//!  56    2 object_kind  ObjectKind
//!  58    2 object_len   bytes of object that follow
//!  60    4 detail       hook-specific: f_mode, signal, ptrace mode, ...
//!  64    n object       object_len bytes
//! ```
//! All fields little-endian (the byte order of the machine that wrote
//! them; Phantom targets x86_64 and aarch64, both little-endian).
//!
//! # The emitter
//! A program keeps the record in a per-CPU scratch buffer ([`SCRATCH_MAP`],
//! [`SCRATCH_SIZE`] bytes: header + the largest object) whose address is in
//! a callee-saved register. Each decision site stores its own constants
//! ([`store_site`]), then a shared tail fills what the kernel knows
//! ([`emit_task_fields`]) and sends `HEADER_LEN + object_len` bytes with
//! `bpf_ringbuf_output` ([`emit_output`]). A full ring buffer drops the
//! record (the verdict stands); readers see the gap as a missing event.

use crate::bpf::{Helper, Insn, Reg};

/// The record format version in the first two bytes.
pub const RECORD_VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 64;
/// The largest object (a path of `PATH_MAX` bytes).
pub const MAX_OBJECT: usize = 4096;
/// Per-CPU scratch value size: one whole record.
pub const SCRATCH_SIZE: u32 = (HEADER_LEN + MAX_OBJECT) as u32;
/// The per-CPU array that holds the record being built.
pub const SCRATCH_MAP: &str = "phantom_rec";
/// The ring buffer the records go to (pinned as `audit` by the loader).
pub const RINGBUF_MAP: &str = "phantom_audit";
/// Ring buffer size: 256 KiB (a power of two, a multiple of the page size),
/// 60 full-path records or ~4,000 records without an object.
pub const RINGBUF_SIZE: u32 = 256 * 1024;
/// `file` when the decision has no policy file.
pub const NO_FILE: u16 = 0xffff;
/// `rule` when no single rule decided (a default or an allow-list miss).
pub const NO_RULE: u32 = u32::MAX;

/// Field offsets in the header.
pub mod off {
    pub const VERSION: i16 = 0;
    pub const LAYER: i16 = 2;
    pub const VERDICT: i16 = 3;
    pub const HOOK: i16 = 4;
    pub const FILE: i16 = 6;
    pub const RULE: i16 = 8;
    pub const LINE: i16 = 12;
    pub const SANDBOX: i16 = 16;
    pub const TIME: i16 = 24;
    pub const PID: i16 = 32;
    pub const TID: i16 = 36;
    pub const COMM: i16 = 40;
    pub const OBJECT_KIND: i16 = 56;
    pub const OBJECT_LEN: i16 = 58;
    pub const DETAIL: i16 = 60;
    pub const OBJECT: i16 = 64;
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident: $repr:ty { $($(#[$vm:meta])* $variant:ident = $v:expr => $text:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant,)* }

        impl $name {
            pub fn code(self) -> $repr {
                match self { $($name::$variant => $v,)* }
            }
            pub fn from_code(c: $repr) -> Option<$name> {
                match c { $($v => Some($name::$variant),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
    };
}

code_enum! {
    /// The enforcement layer that decided.
    Layer: u8 {
        Seccomp = 1 => "seccomp",
        Landlock = 2 => "landlock",
        CgroupBpf = 3 => "cgroup-bpf",
        Xdp = 4 => "xdp",
        BpfLsm = 5 => "bpf-lsm",
    }
}

code_enum! {
    /// What happened to the action.
    Verdict: u8 {
        /// Refused (the caller saw EPERM).
        Deny = 0 => "deny",
        /// Complain mode: a rule would have denied it; it was allowed.
        Complain = 1 => "complain",
    }
}

code_enum! {
    /// What `object` holds.
    ObjectKind: u16 {
        /// Nothing (`object_len` 0).
        None = 0 => "none",
        /// A path as `bpf_d_path` wrote it, NUL-terminated.
        Path = 1 => "path",
        /// A `struct sockaddr_un` as the caller passed it (family, then
        /// `sun_path`; an abstract name starts with a NUL byte).
        UnixAddr = 2 => "unix",
        /// The target task: tgid (u32), 4 bytes padding, cgroup id (u64).
        Task = 3 => "task",
        /// A socket's family, type and protocol (3 x u32).
        Socket = 4 => "socket",
        /// IPv4 address (4 bytes, network order) and port (u16, host order).
        Inet4 = 5 => "inet4",
        /// IPv6 address (16 bytes, network order) and port (u16, host order).
        Inet6 = 6 => "inet6",
        /// A device access (cgroup/dev): access << 16 | type, major, minor
        /// (3 x u32; type 1 block, 2 char; access 1 mknod, 2 read, 4 write).
        Device = 7 => "device",
    }
}

/// The decoded object of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    None,
    Path(Vec<u8>),
    /// The `sun_path` bytes; an abstract name starts with NUL.
    Unix(Vec<u8>),
    Task {
        pid: u32,
        cgroup: u64,
    },
    Socket {
        family: u32,
        kind: u32,
        protocol: u32,
    },
    Inet4 {
        addr: [u8; 4],
        port: u16,
    },
    Inet6 {
        addr: [u8; 16],
        port: u16,
    },
    Device {
        access_type: u32,
        major: u32,
        minor: u32,
    },
    /// A kind this reader does not know (from a newer writer).
    Unknown {
        kind: u16,
        bytes: Vec<u8>,
    },
}

impl Object {
    pub fn kind(&self) -> u16 {
        match self {
            Object::None => ObjectKind::None.code(),
            Object::Path(_) => ObjectKind::Path.code(),
            Object::Unix(_) => ObjectKind::UnixAddr.code(),
            Object::Task { .. } => ObjectKind::Task.code(),
            Object::Socket { .. } => ObjectKind::Socket.code(),
            Object::Inet4 { .. } => ObjectKind::Inet4.code(),
            Object::Inet6 { .. } => ObjectKind::Inet6.code(),
            Object::Device { .. } => ObjectKind::Device.code(),
            Object::Unknown { kind, .. } => *kind,
        }
    }

    /// The object's bytes as the record carries them.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Object::None => Vec::new(),
            Object::Path(p) => {
                let mut b = p.clone();
                b.push(0);
                b
            }
            Object::Unix(path) => {
                let mut b = 1u16.to_le_bytes().to_vec(); // AF_UNIX
                b.extend_from_slice(path);
                b
            }
            Object::Task { pid, cgroup } => {
                let mut b = pid.to_le_bytes().to_vec();
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&cgroup.to_le_bytes());
                b
            }
            Object::Socket { family, kind, protocol } => {
                [family, kind, protocol].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            Object::Inet4 { addr, port } => [&addr[..], &port.to_le_bytes()].concat(),
            Object::Inet6 { addr, port } => [&addr[..], &port.to_le_bytes()].concat(),
            Object::Device { access_type, major, minor } => {
                [access_type, major, minor].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            Object::Unknown { bytes, .. } => bytes.clone(),
        }
    }

    fn decode(kind: u16, b: &[u8]) -> Result<Object, AuditError> {
        let short = |need: usize| AuditError::ShortObject { kind, len: b.len(), need };
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(match ObjectKind::from_code(kind) {
            Some(ObjectKind::None) => Object::None,
            Some(ObjectKind::Path) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Object::Path(b[..end].to_vec())
            }
            Some(ObjectKind::UnixAddr) => Object::Unix(b.get(2..).ok_or_else(|| short(2))?.to_vec()),
            Some(ObjectKind::Task) => {
                if b.len() < 16 {
                    return Err(short(16));
                }
                Object::Task { pid: u32_at(0), cgroup: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")) }
            }
            Some(ObjectKind::Socket) => {
                if b.len() < 12 {
                    return Err(short(12));
                }
                Object::Socket { family: u32_at(0), kind: u32_at(4), protocol: u32_at(8) }
            }
            Some(ObjectKind::Inet4) => {
                if b.len() < 6 {
                    return Err(short(6));
                }
                Object::Inet4 { addr: b[..4].try_into().expect("4"), port: u16::from_le_bytes([b[4], b[5]]) }
            }
            Some(ObjectKind::Inet6) => {
                if b.len() < 18 {
                    return Err(short(18));
                }
                Object::Inet6 { addr: b[..16].try_into().expect("16"), port: u16::from_le_bytes([b[16], b[17]]) }
            }
            Some(ObjectKind::Device) => {
                if b.len() < 12 {
                    return Err(short(12));
                }
                Object::Device { access_type: u32_at(0), major: u32_at(4), minor: u32_at(8) }
            }
            None => Object::Unknown { kind, bytes: b.to_vec() },
        })
    }

    /// Human form: the path, `@abstract`, `pid 42 (cgroup 7)`, ...
    pub fn display(&self) -> String {
        match self {
            Object::None => String::new(),
            Object::Path(p) => String::from_utf8_lossy(p).into_owned(),
            Object::Unix(p) => match p.split_first() {
                Some((0, name)) => format!("@{}", String::from_utf8_lossy(name)),
                _ => {
                    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                    String::from_utf8_lossy(&p[..end]).into_owned()
                }
            },
            Object::Task { pid, cgroup } => format!("pid {pid} (cgroup {cgroup})"),
            Object::Socket { family, kind, protocol } => {
                format!("socket(family {family}, type {kind}, protocol {protocol})")
            }
            Object::Inet4 { addr, port } => format!("{}:{port}", std::net::Ipv4Addr::from(*addr)),
            Object::Inet6 { addr, port } => format!("[{}]:{port}", std::net::Ipv6Addr::from(*addr)),
            Object::Device { access_type, major, minor } => {
                let kind = match access_type & 0xffff {
                    1 => "block",
                    2 => "char",
                    _ => "device",
                };
                let access: Vec<&str> = [(1, "mknod"), (2, "read"), (4, "write")]
                    .iter()
                    .filter(|(bit, _)| access_type >> 16 & bit != 0)
                    .map(|(_, name)| *name)
                    .collect();
                format!("{kind} {major}:{minor} {}", access.join("+"))
            }
            Object::Unknown { kind, bytes } => format!("object kind {kind}, {} bytes", bytes.len()),
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub layer: u8,
    pub verdict: u8,
    pub hook: u16,
    pub file: u16,
    pub rule: u32,
    pub line: u32,
    pub sandbox: u64,
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub detail: u32,
    pub object: Object,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("an audit record is at least {HEADER_LEN} bytes; this one has {0}")]
    Short(usize),
    #[error("audit record version {0}; this reader knows version {RECORD_VERSION}")]
    Version(u16),
    #[error("the record says its object has {declared} bytes, {available} follow the header")]
    ObjectLen { declared: usize, available: usize },
    #[error("a record object of kind {kind} needs {need} bytes, it has {len}")]
    ShortObject { kind: u16, len: usize, need: usize },
}

impl AuditRecord {
    /// The comm up to its first NUL.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    pub fn layer_name(&self) -> String {
        Layer::from_code(self.layer).map_or_else(|| format!("layer-{}", self.layer), |l| l.name().to_string())
    }

    pub fn verdict_name(&self) -> String {
        Verdict::from_code(self.verdict).map_or_else(|| format!("verdict-{}", self.verdict), |v| v.name().to_string())
    }

    /// The bytes a program writes for this record (what tests and tools
    /// compare against; [`AuditRecord::decode`] is its inverse).
    pub fn encode(&self) -> Vec<u8> {
        let obj = self.object.bytes();
        let mut b = Vec::with_capacity(HEADER_LEN + obj.len());
        b.extend_from_slice(&RECORD_VERSION.to_le_bytes());
        b.push(self.layer);
        b.push(self.verdict);
        b.extend_from_slice(&self.hook.to_le_bytes());
        b.extend_from_slice(&self.file.to_le_bytes());
        b.extend_from_slice(&self.rule.to_le_bytes());
        b.extend_from_slice(&self.line.to_le_bytes());
        b.extend_from_slice(&self.sandbox.to_le_bytes());
        b.extend_from_slice(&self.time_ns.to_le_bytes());
        b.extend_from_slice(&self.pid.to_le_bytes());
        b.extend_from_slice(&self.tid.to_le_bytes());
        b.extend_from_slice(&self.comm);
        b.extend_from_slice(&self.object.kind().to_le_bytes());
        b.extend_from_slice(&(obj.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.detail.to_le_bytes());
        b.extend_from_slice(&obj);
        b
    }

    /// Decodes a record as a ring buffer delivers it (possibly followed by
    /// padding).
    pub fn decode(b: &[u8]) -> Result<AuditRecord, AuditError> {
        if b.len() < HEADER_LEN {
            return Err(AuditError::Short(b.len()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let version = u16_at(0);
        if version != RECORD_VERSION {
            return Err(AuditError::Version(version));
        }
        let len = usize::from(u16_at(58));
        let obj = b
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(AuditError::ObjectLen { declared: len, available: b.len() - HEADER_LEN })?;
        Ok(AuditRecord {
            layer: b[2],
            verdict: b[3],
            hook: u16_at(4),
            file: u16_at(6),
            rule: u32_at(8),
            line: u32_at(12),
            sandbox: u64_at(16),
            time_ns: u64_at(24),
            pid: u32_at(32),
            tid: u32_at(36),
            comm: b[40..56].try_into().expect("16 bytes"),
            detail: u32_at(60),
            object: Object::decode(u16_at(56), obj)?,
        })
    }
}

// ------------------------------------------------------------- the emitter

/// The constants of one decision site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Index into `Policy::sources`, [`NO_FILE`] when unknown.
    pub file: u16,
    pub rule: u32,
    /// 1-based, 0 when unknown.
    pub line: u32,
}

impl Site {
    pub const NONE: Site = Site { file: NO_FILE, rule: NO_RULE, line: 0 };
}

/// The constants of one program: layer, verdict, hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub layer: Layer,
    pub verdict: Verdict,
    pub hook: u16,
}

/// Stores a site's file, rule and line into the record at `rec`.
pub fn store_site(rec: Reg, site: Site) -> Vec<Insn> {
    vec![
        Insn::st_h(rec, off::FILE, i32::from(site.file)),
        Insn::st_w(rec, off::RULE, site.rule as i32),
        Insn::st_w(rec, off::LINE, site.line as i32),
    ]
}

/// Stores the object kind and a constant object length.
pub fn store_object(rec: Reg, kind: ObjectKind, len: u16) -> Vec<Insn> {
    vec![Insn::st_h(rec, off::OBJECT_KIND, i32::from(kind.code())), Insn::st_h(rec, off::OBJECT_LEN, i32::from(len))]
}

/// Fills version, layer, verdict, hook and what the kernel knows of the
/// acting task: sandbox (cgroup id), time, pid/tid, comm. Clobbers r0-r5.
/// For programs that run in a task's context (BPF-LSM, cgroup-BPF socket
/// programs); XDP would store zeros instead.
pub fn emit_task_fields(rec: Reg, src: Source) -> Vec<Insn> {
    use Reg::*;
    let head = u32::from(RECORD_VERSION) | u32::from(src.layer.code()) << 16 | u32::from(src.verdict.code()) << 24;
    vec![
        Insn::st_w(rec, off::VERSION, head as i32),
        Insn::st_h(rec, off::HOOK, i32::from(src.hook)),
        Insn::call(Helper::GetCurrentCgroupId),
        Insn::stx_dw(rec, off::SANDBOX, R0),
        Insn::call(Helper::KtimeGetNs),
        Insn::stx_dw(rec, off::TIME, R0),
        Insn::call(Helper::GetCurrentPidTgid),
        Insn::stx_w(rec, off::TID, R0), // low half: the thread's pid
        Insn::rsh64_imm(R0, 32),
        Insn::stx_w(rec, off::PID, R0), // high half: the tgid
        Insn::mov64_reg(R1, rec),
        Insn::add64_imm(R1, i32::from(off::COMM)),
        Insn::mov64_imm(R2, 16),
        Insn::call(Helper::GetCurrentComm),
    ]
}

/// `bpf_ringbuf_output(&RINGBUF_MAP, rec, HEADER_LEN + object_len, 0)`,
/// with `object_len` read back from the record and bounded by
/// [`MAX_OBJECT`] (the verifier checks the size against the scratch
/// value). Clobbers r0-r5.
pub fn emit_output(rec: Reg, label_prefix: &str) -> Vec<Insn> {
    use Reg::*;
    let capped = format!("{label_prefix}_len_ok");
    vec![
        Insn::ldx_h(R3, rec, off::OBJECT_LEN),
        Insn::jle_imm(R3, MAX_OBJECT as i32, capped.as_str()),
        Insn::mov64_imm(R3, MAX_OBJECT as i32),
        Insn::add64_imm(R3, HEADER_LEN as i32).label(capped),
        Insn::ld_map(R1, RINGBUF_MAP),
        Insn::mov64_reg(R2, rec),
        Insn::mov64_imm(R4, 0),
        Insn::call(Helper::RingbufOutput),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(object: Object) -> AuditRecord {
        AuditRecord {
            layer: Layer::BpfLsm.code(),
            verdict: Verdict::Deny.code(),
            hook: 1,
            file: 0,
            rule: 3,
            line: 12,
            sandbox: 0x1234_5678_9abc,
            time_ns: 99,
            pid: 4242,
            tid: 4243,
            comm: *b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
            detail: 0x2,
            object,
        }
    }

    #[test]
    fn records_round_trip_for_every_object_kind() {
        let objects = [
            Object::None,
            Object::Path(b"/etc/shadow".to_vec()),
            Object::Unix(b"\0broker".to_vec()),
            Object::Unix(b"/run/x.sock".to_vec()),
            Object::Task { pid: 7, cgroup: 1 << 40 },
            Object::Socket { family: 17, kind: 3, protocol: 768 },
            Object::Inet4 { addr: [10, 0, 0, 1], port: 443 },
            Object::Inet6 { addr: [0xfe; 16], port: 53 },
            Object::Unknown { kind: 900, bytes: vec![1, 2, 3] },
        ];
        for o in objects {
            let r = sample(o);
            let bytes = r.encode();
            assert_eq!(bytes.len(), HEADER_LEN + r.object.bytes().len());
            // Ring buffer records are padded to 8 bytes: padding is ignored.
            let mut padded = bytes.clone();
            padded.resize(bytes.len().next_multiple_of(8), 0);
            assert_eq!(AuditRecord::decode(&padded).unwrap(), r);
        }
    }

    #[test]
    fn the_header_layout_is_the_documented_one() {
        let b = sample(Object::Path(b"/x".to_vec())).encode();
        assert_eq!(&b[0..2], &1u16.to_le_bytes(), "version");
        assert_eq!(b[2], 5, "layer bpf-lsm");
        assert_eq!(b[3], 0, "verdict deny");
        assert_eq!(&b[8..12], &3u32.to_le_bytes(), "rule");
        assert_eq!(&b[12..16], &12u32.to_le_bytes(), "line");
        assert_eq!(&b[32..36], &4242u32.to_le_bytes(), "pid");
        assert_eq!(&b[40..43], b"cat", "comm");
        assert_eq!(&b[56..58], &1u16.to_le_bytes(), "object kind path");
        assert_eq!(&b[58..60], &3u16.to_le_bytes(), "object length with the NUL");
        assert_eq!(&b[64..], b"/x\0");
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(AuditRecord::decode(&[0; 10]), Err(AuditError::Short(10)));
        let mut b = sample(Object::None).encode();
        b[0] = 9;
        assert_eq!(AuditRecord::decode(&b), Err(AuditError::Version(9)));
        let mut b = sample(Object::None).encode();
        b[58] = 200;
        assert!(matches!(AuditRecord::decode(&b), Err(AuditError::ObjectLen { declared: 200, .. })));
        let mut b = sample(Object::None).encode();
        b[56] = ObjectKind::Task.code() as u8;
        b[58] = 4;
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(AuditRecord::decode(&b), Err(AuditError::ShortObject { need: 16, .. })));
    }

    #[test]
    fn objects_display_for_humans() {
        assert_eq!(Object::Unix(b"\0broker".to_vec()).display(), "@broker");
        assert_eq!(Object::Unix(b"/run/a.sock\0junk".to_vec()).display(), "/run/a.sock");
        assert_eq!(Object::Task { pid: 3, cgroup: 9 }.display(), "pid 3 (cgroup 9)");
        assert_eq!(Object::Inet4 { addr: [1, 2, 3, 4], port: 80 }.display(), "1.2.3.4:80");
    }

    #[test]
    fn the_emitter_sends_header_plus_object_bytes() {
        let code = emit_output(Reg::R6, "t");
        let text = format!("{code:?}");
        assert!(text.contains("RingbufOutput"), "{text}");
        let enc = crate::bpf::encode(&[code, vec![Insn::mov64_imm(Reg::R0, 0), Insn::exit()]].concat()).unwrap();
        let listing = crate::bpf::disasm::disassemble(&enc).unwrap();
        assert!(listing.contains("r3 = *(u16 *)(r6 +58)"), "{listing}");
        assert!(listing.contains("r3 += 64"), "{listing}");
        assert!(listing.contains("call bpf_ringbuf_output"), "{listing}");
    }
}
