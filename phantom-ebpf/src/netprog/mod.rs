//! cgroup-BPF programs generated from the network and device parts of the
//! policy IR, with the instruction core in [`crate::bpf`]. Every
//! instruction of a rule carries that rule's policy line.
//!
//! | program | section | prog type / expected attach type | decides |
//! |---|---|---|---|
//! | sock_create | `cgroup/sock_create` | CGROUP_SOCK / INET_SOCK_CREATE | which inet socket (type, protocol) may be created |
//! | connect4/6 | `cgroup/connect4`, `cgroup/connect6` | CGROUP_SOCK_ADDR / INET{4,6}_CONNECT | egress by address + port + protocol |
//! | sendmsg4/6 | `cgroup/sendmsg4`, `cgroup/sendmsg6` | CGROUP_SOCK_ADDR / UDP{4,6}_SENDMSG | the same egress rules, unconnected UDP |
//! | bind4/6 | `cgroup/bind4`, `cgroup/bind6` | CGROUP_SOCK_ADDR / INET{4,6}_BIND | bind by port + protocol |
//! | dev | `cgroup/dev` | CGROUP_DEVICE / CGROUP_DEVICE | device allow-list + the minimal `/dev` |
//!
//! Every program returns 1 (allow) or 0 (deny, which the caller sees as
//! `EPERM`). The socket programs are emitted only for `network.mode:
//! allowlist` (the other modes give the sandbox a network namespace with no
//! way out, so there is nothing to filter); the device program always.
//!
//! # Semantics (what [`reference`] implements and the programs must agree with)
//! - **Egress** (connect, sendmsg): allowed when some egress rule matches.
//!   A rule matches when its protocol matches (`tcp` = IPPROTO_TCP,
//!   `udp` = IPPROTO_UDP, `icmp` = IPPROTO_ICMP or IPPROTO_ICMPV6, `any` =
//!   every protocol), its ports match (no ports: any port; with ports, only
//!   TCP and UDP can match, since other protocols have no port), and its
//!   addresses match (no `to`: any address of either family; otherwise one
//!   CIDR of the address's family contains it).
//! - **IPv4-mapped IPv6** destinations (`::ffff:a.b.c.d`) seen by connect6
//!   and sendmsg6 are judged as the IPv4 address against the IPv4 CIDRs:
//!   the kernel sends them as IPv4 without running the IPv4 hooks, so this
//!   closes a bypass; IPv6 CIDRs never match them.
//! - **Loopback is not special**: the rules are followed strictly, also
//!   inside a sandbox whose loopback is its own: a policy that wants it
//!   says `to: [127.0.0.0/8, ::1]`. So the object in the bundle is exactly
//!   what runs, every allow traces to a policy line, and the same programs
//!   are safe on a cgroup whose processes share the host's network
//!   namespace.
//! - **bind**: allowed for port 0 (the kernel picks an ephemeral port; a
//!   `listen()` without `bind()` gets one anyway without running the hook)
//!   and when a bind rule matches protocol and port. The address is not
//!   examined.
//! - **sock_create** only sees AF_INET and AF_INET6 (other families are the
//!   job of seccomp and the LSM socket_create hook; the program allows
//!   them). It allows `SOCK_STREAM`/TCP when any egress, ingress or bind
//!   rule is `tcp` or `any`, `SOCK_DGRAM`/UDP likewise for `udp`, ping
//!   sockets (`SOCK_DGRAM` + ICMP for AF_INET, ICMPV6 for AF_INET6) when a
//!   rule is `icmp` or `any`, raw ICMP sockets only when in addition
//!   `security.kernel.raw_sockets: allow` ([`Options::raw_sockets`]), and
//!   nothing else (SCTP, UDP-Lite, MPTCP, other raw protocols). Raw sockets
//!   matter because connect/sendmsg hooks never run for them.
//! - **dev**: an access (a set of mknod/read/write) to a device (type,
//!   major, minor) is allowed when at least one rule names the device and
//!   every requested kind is granted by some rule naming it. The minimal
//!   `/dev` (char 1:3 null, 1:5 zero, 1:7 full, 1:8 random, 1:9 urandom,
//!   5:0 tty; read + write, no mknod) is allowed unless a rule covers
//!   that device, in which case the rule alone decides (so `1:9 [read]`
//!   really makes /dev/urandom read-only).
//!
//! # Code generation strategy
//! Rules are tested in policy order; each rule is a block of compares
//! against constants, falling through to the next rule on a mismatch and
//! jumping to `allow` on a match; the end of the chain is `deny`. Protocol
//! and port are loaded once into r7/r8 (port converted to host order), the
//! address into r2 (IPv4) or r2-r5 (IPv6 words, host order), and a CIDR
//! test is `w0 = addr & mask; if w0 == net goto allow` per 32-bit word.
//!
//! When one address family has more than [`Options::lpm_threshold`]
//! (default [`DEFAULT_LPM_THRESHOLD`] = 64) CIDRs across the egress rules,
//! the addresses of that family go through an LPM trie map instead
//! ([`MapSpec`], created and filled by the loader): the key is `prefixlen`
//! (u32, host order) + the address (network order), the value a bitmap of
//! the rules that contain the matched prefix (each entry's bitmap includes
//! the rules of all shorter entries containing it, so the longest match
//! alone answers "which rules contain this address"). The program looks
//! the address up once and each rule block tests its bit instead of its
//! CIDRs. Straight-line compares cost ~2-3 instructions per CIDR and no
//! helper call; past 64 CIDRs a single trie lookup is cheaper and keeps the
//! program small. Port lists stay straight-line (ranges: two compares).

mod codegen;
mod deny_record;
pub(crate) mod lpm;
pub mod reference;

use crate::bpf::{BpfError, Encoded, Insn, SourceLoc};
use phantom_dsl::ir::{DevicePolicy, NetMode, NetworkPolicy, Origin, Policy, Toggle};
use std::sync::Arc;

pub use codegen::DEFAULT_DEVICES;

/// CIDR count per family above which egress addresses go through an LPM trie.
pub const DEFAULT_LPM_THRESHOLD: usize = 64;

/// `enum bpf_prog_type` values used here.
pub const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `enum bpf_map_type` BPF_MAP_TYPE_LPM_TRIE.
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_F_NO_PREALLOC`, mandatory for LPM tries.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Which cgroup program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProgKind {
    SockCreate,
    Connect4,
    Connect6,
    Sendmsg4,
    Sendmsg6,
    Bind4,
    Bind6,
    Device,
}

impl ProgKind {
    pub const ALL: [ProgKind; 8] = [
        ProgKind::SockCreate,
        ProgKind::Connect4,
        ProgKind::Connect6,
        ProgKind::Sendmsg4,
        ProgKind::Sendmsg6,
        ProgKind::Bind4,
        ProgKind::Bind6,
        ProgKind::Device,
    ];

    /// The `hook` field of this program's audit records: its position in
    /// [`ProgKind::ALL`], from 1.
    pub fn audit_id(self) -> u16 {
        ProgKind::ALL.iter().position(|&k| k == self).expect("every kind is in ALL") as u16 + 1
    }

    /// The ELF section name in libbpf conventions.
    pub fn section(self) -> &'static str {
        match self {
            ProgKind::SockCreate => "cgroup/sock_create",
            ProgKind::Connect4 => "cgroup/connect4",
            ProgKind::Connect6 => "cgroup/connect6",
            ProgKind::Sendmsg4 => "cgroup/sendmsg4",
            ProgKind::Sendmsg6 => "cgroup/sendmsg6",
            ProgKind::Bind4 => "cgroup/bind4",
            ProgKind::Bind6 => "cgroup/bind6",
            ProgKind::Device => "cgroup/dev",
        }
    }

    /// The program (and function) name, at most 15 characters.
    pub fn name(self) -> &'static str {
        match self {
            ProgKind::SockCreate => "phantom_sock",
            ProgKind::Connect4 => "phantom_conn4",
            ProgKind::Connect6 => "phantom_conn6",
            ProgKind::Sendmsg4 => "phantom_send4",
            ProgKind::Sendmsg6 => "phantom_send6",
            ProgKind::Bind4 => "phantom_bind4",
            ProgKind::Bind6 => "phantom_bind6",
            ProgKind::Device => "phantom_dev",
        }
    }

    /// `enum bpf_prog_type`.
    pub fn prog_type(self) -> u32 {
        match self {
            ProgKind::SockCreate => BPF_PROG_TYPE_CGROUP_SOCK,
            ProgKind::Device => BPF_PROG_TYPE_CGROUP_DEVICE,
            _ => BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        }
    }

    /// `enum bpf_attach_type`: the expected attach type at load and the
    /// attach type at attach.
    pub fn attach_type(self) -> u32 {
        match self {
            ProgKind::SockCreate => 2, // BPF_CGROUP_INET_SOCK_CREATE
            ProgKind::Device => 6,     // BPF_CGROUP_DEVICE
            ProgKind::Bind4 => 8,      // BPF_CGROUP_INET4_BIND
            ProgKind::Bind6 => 9,      // BPF_CGROUP_INET6_BIND
            ProgKind::Connect4 => 10,  // BPF_CGROUP_INET4_CONNECT
            ProgKind::Connect6 => 11,  // BPF_CGROUP_INET6_CONNECT
            ProgKind::Sendmsg4 => 14,  // BPF_CGROUP_UDP4_SENDMSG
            ProgKind::Sendmsg6 => 15,  // BPF_CGROUP_UDP6_SENDMSG
        }
    }
}

/// One generated program: the logical instructions (with policy lines) and
/// their encoding. Map references are by symbol (see [`CgroupPrograms::maps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProgram {
    pub kind: ProgKind,
    pub insns: Vec<Insn>,
    pub encoded: Encoded,
}

impl CgroupProgram {
    /// Encoded bytes, as `BPF_PROG_LOAD` and an ELF section take them.
    pub fn bytes(&self) -> Vec<u8> {
        self.encoded.to_bytes()
    }

    /// Names of the maps the program references ([`Encoded::map_names`]).
    pub fn maps(&self) -> Vec<&str> {
        self.encoded.map_names()
    }

    /// See [`Encoded::loc_of_slot`].
    pub fn loc_of_slot(&self, slot: usize) -> Option<&SourceLoc> {
        self.encoded.loc_of_slot(slot)
    }
}

/// A map the loader creates and fills before loading the programs that
/// reference it (`LD_IMM64` by symbol `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// (key, value), sorted by key; deterministic.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Everything this module generates for one policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupPrograms {
    pub programs: Vec<CgroupProgram>,
    pub maps: Vec<MapSpec>,
}

impl CgroupPrograms {
    pub fn get(&self, kind: ProgKind) -> Option<&CgroupProgram> {
        self.programs.iter().find(|p| p.kind == kind)
    }

    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// Code generation options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// More CIDRs than this in one family: that family uses an LPM trie.
    pub lpm_threshold: usize,
    /// Raw ICMP sockets may be created (when an icmp/any rule exists).
    pub raw_sockets: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { lpm_threshold: DEFAULT_LPM_THRESHOLD, raw_sockets: false }
    }
}

impl Options {
    /// The options a whole policy implies (`security.kernel.raw_sockets`).
    pub fn for_policy(policy: &Policy) -> Options {
        Options { raw_sockets: policy.kernel.raw_sockets == Toggle::Allow, ..Options::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetProgError {
    #[error("{section}: {source}")]
    Encode { section: &'static str, source: BpfError },
}

/// Maps a rule's [`Origin`] to the [`SourceLoc`] instructions carry: the
/// file name comes from the policy's source list.
#[derive(Debug, Clone)]
pub struct Locator {
    files: Vec<Arc<str>>,
}

impl Locator {
    pub fn new(files: &[String]) -> Locator {
        Locator { files: files.iter().map(|f| Arc::from(f.as_str())).collect() }
    }

    pub fn for_policy(policy: &Policy) -> Locator {
        let files: Vec<String> = policy.sources.iter().map(|s| s.path.clone()).collect();
        Locator::new(&files)
    }

    /// `None` for [`Origin::NONE`] (line 0: no policy text).
    pub fn loc(&self, o: &Origin) -> Option<SourceLoc> {
        if o.line == 0 {
            return None;
        }
        let file = self.files.get(usize::from(o.file.0)).cloned().unwrap_or_else(|| Arc::from("<policy>"));
        Some(SourceLoc { file, line: o.line, col: o.col })
    }
}

/// Compiles the cgroup programs of a whole policy.
pub fn compile(policy: &Policy) -> Result<CgroupPrograms, NetProgError> {
    compile_parts(&policy.network, &policy.devices, &Locator::for_policy(policy), &Options::for_policy(policy))
}

/// Compiles from the IR parts: socket programs when `net.mode` is
/// `allowlist`, the device program always.
pub fn compile_parts(
    net: &NetworkPolicy,
    dev: &DevicePolicy,
    locator: &Locator,
    opts: &Options,
) -> Result<CgroupPrograms, NetProgError> {
    let mut out = CgroupPrograms::default();
    if net.mode == NetMode::Allowlist {
        codegen::network(net, locator, opts, &mut out)?;
    }
    out.programs.push(codegen::device(dev, locator)?);
    // Every program records its denials here (docs/audit.md).
    out.maps.push(MapSpec {
        name: crate::audit::RINGBUF_MAP.to_string(),
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: crate::audit::RINGBUF_SIZE,
        flags: 0,
        entries: Vec::new(),
    });
    Ok(out)
}

/// `enum bpf_map_type` BPF_MAP_TYPE_RINGBUF.
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;
