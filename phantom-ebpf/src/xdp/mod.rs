//! XDP programs for `network.mode: allowlist`, generated from the IR with
//! the instruction core in [`crate::bpf`]. Every instruction of a rule
//! carries that rule's policy line.
//!
//! # Where they run
//! An allowlist sandbox reaches the host through a veth pair. XDP runs on
//! a device's receive path, so:
//!
//! | program | attached to | sees | decides with |
//! |---|---|---|---|
//! | egress ([`Direction::Egress`], `phantom_xdp_eg`) | the **host** end of the veth | frames the sandbox sends (source = sandbox) | egress rules: destination address, destination port, protocol |
//! | ingress ([`Direction::Ingress`], `phantom_xdp_in`) | the **sandbox** end of the veth | frames entering the sandbox (destination = sandbox) | ingress rules: source address, destination port, protocol; and the flow table |
//!
//! Both return `XDP_PASS` (2) or `XDP_DROP` (1), and nothing else. The
//! direction is a compile-time constant: the two programs are generated
//! separately and share only the flow map. Section name `xdp`.
//!
//! # Semantics (what [`reference`](mod@reference) implements and the programs must agree with)
//! **Parsing**, identical in both directions (offsets from the frame start):
//! - Fewer than 14 bytes (no Ethernet header): DROP.
//! - EtherType ARP (0x0806): PASS, unexamined (the link needs it; ARP
//!   reaches no further than the veth peer).
//! - EtherType IPv4 (0x0800) or IPv6 (0x86DD): parsed below. Any other
//!   EtherType (VLAN tags included): DROP.
//! - IPv4: the 20-byte header must be in the frame, version 4, IHL >= 5,
//!   and the options (IHL * 4 bytes) must be in the frame, else DROP. A
//!   **non-first fragment** (fragment offset != 0) is DROPped: it carries
//!   no transport header to judge. A first fragment (MF set, offset 0) is
//!   judged like an unfragmented packet; since the rest of it is dropped,
//!   fragmented datagrams never get through (sandboxes rely on path MTU
//!   discovery, which TCP does by default).
//! - IPv6: the 40-byte header must be in the frame and version 6, else
//!   DROP. One **Fragment header** (44) is parsed: it must be in the frame
//!   (else DROP), a non-first fragment (offset != 0) is DROPped, a first
//!   one is judged by the header that follows. Any other **extension
//!   header** where the transport header should be (0 hop-by-hop, 43
//!   routing, 44 a second fragment header, 51 AH, 60 destination options,
//!   135 mobility, 139 HIP, 140 shim6, 253/254 experimental): DROP (we
//!   would otherwise judge the wrong header). Consequently MLD reports
//!   (which carry hop-by-hop) do not pass; neighbour discovery does not need
//!   them on a point-to-point veth.
//! - Transport headers must be whole in the frame or the packet is
//!   DROPped: TCP 20 bytes, UDP 8, ICMP (protocol 1 in IPv4) and ICMPv6
//!   (58 in IPv6) 8 (type, code, checksum, and the identifier of echo
//!   messages). Other protocols are not looked into.
//! - **Neighbour discovery** (ICMPv6 types 133-136: router solicitation
//!   and advertisement, neighbour solicitation and advertisement): PASS,
//!   unexamined, so IPv6 works on the link. Redirects (137) are not
//!   passed.
//! - Checksums, IPv4 total length, the IPv6 payload length and the TCP
//!   data offset are left to the kernel's stack, which drops packets that
//!   are wrong there; the programs only make sure every header byte they
//!   judge is in the frame (which the verifier checks too).
//!
//! **Rules**, the same rule semantics as the cgroup programs
//! ([`crate::netprog`]): a packet matches a rule when its protocol matches
//! (`tcp` = 6, `udp` = 17, `icmp` = 1 or 58 in either IP version, `any` =
//! every protocol), its port matches (no ports: any; with ports, only TCP
//! and UDP can match) and its peer address matches (no CIDRs: any address
//! of either family; otherwise one CIDR of the address's family contains
//! it). The peer address is the destination for egress and the source for
//! ingress; the port is the **destination** port in both directions (the
//! service contacted: the peer's for egress, the sandbox's for ingress).
//! An IPv4-mapped IPv6 peer address (`::ffff:a.b.c.d`) is judged as the
//! IPv4 address against the IPv4 CIDRs, as connect6 does.
//!
//! **Flows** (the state machine, in one `BPF_MAP_TYPE_LRU_HASH` map
//! shared by both programs, [`FLOW_MAP`]): a packet **passes** when the
//! rules of its direction match it, or when it is a reply-capable packet
//! whose flow is in the map. When a packet passes **by a rule** and it can
//! open a flow, its flow is recorded (if absent). So:
//! - TCP: a packet with SYN set opens, every packet answers; the flow is
//!   the 5-tuple. An egress-allowed connection lets the peer's packets of
//!   the same 5-tuple in; an ingress-allowed connection (to a port an
//!   ingress rule opens) lets the sandbox's packets of that 5-tuple out,
//!   even when no egress rule covers the peer. Packets without SYN pass by
//!   their rules without touching the map (the per-packet cost of an
//!   allowed connection is the rules alone); so a connection whose SYN was
//!   not seen (opened before the programs were attached, or its flow
//!   evicted) gets no replies until it reconnects. Nothing else of TCP's
//!   state is tracked (FIN, RST are not interpreted).
//! - UDP: every packet opens and answers; the flow is the 5-tuple.
//! - ICMP echo (IPv4 types 8/0, ICMPv6 128/129) by identifier: an echo
//!   request passed by a rule opens the flow (peer, identifier); only an
//!   echo reply answers it. Other ICMP messages (errors, including
//!   ICMPv6 packet-too-big) pass only by a rule: write an `icmp` ingress
//!   rule to receive them.
//! - Other protocols: rules only, never a flow.
//! - Entries never expire by time: the LRU map evicts the least recently
//!   used flow when it is full ([`Options::flow_entries`]); an evicted flow
//!   must be reopened by a packet its rules allow.
//! - **Flow cache** (a `BPF_MAP_TYPE_PERCPU_ARRAY`, [`FLOW_CACHE_MAP`],
//!   [`Options::flow_cache_slots`] slots per CPU, direct-mapped by a hash
//!   of the ports and the peer's address, shared by both programs): each
//!   slot holds the key of a flow this CPU found in the flow map or put
//!   there, and a hit count. A packet that would look its flow up (an
//!   opener passed by a rule, or an answer no rule passed) and finds its
//!   key in its slot skips the flow map, except on every
//!   [`FLOW_CACHE_REVALIDATE`]th hit of the slot, which asks the map: an
//!   opener records the flow again if the map lost it, an answer is
//!   dropped and the slot cleared. Only what the map holds is cached. So a
//!   flow's steady stream costs no hash lookup in either direction; the
//!   price is that a flow the LRU map evicted keeps being answered on a
//!   CPU for at most 63 more packets (it was an allowed flow), and is
//!   reopened by the 64th opener at the latest rather than the next.
//!
//! The flow key (40 bytes, [`flow_key`]) is oriented from the sandbox, so
//! both directions build the same key for a flow: `family` (u8, 4 or 6),
//! `protocol` (u8), 2 zero bytes, `local_port` and `remote_port` (network
//! order; for ICMP echo the identifier and 0), the sandbox's address and
//! the peer's (16 bytes each; IPv4 in the first 4, the rest zero). The value
//! (u64) records which direction opened the flow (1 egress, 2 ingress).
//!
//! # Code generation strategy
//! The parser keeps the frame start in r6, the protocol in r7 (an exact
//! constant on every path the verifier explores: protocols no rule can tell
//! apart are mapped to 255), the destination port in r8 (host order, 0
//! without ports) and the transport header in r9. Rules then run per
//! address family, by the number of CIDRs of that family in the
//! direction's rules ([`AddrStrategy`], in [`XdpProgram::strategy`]):
//!
//! | CIDRs of the family | strategy | cost per packet |
//! |---|---|---|
//! | up to [`Options::table_threshold`] (default 4) | **straight-line**: each rule a block of compares against constants, in policy order | ~3 instructions per CIDR |
//! | more (default) | **compiled search** (`xdp/search.rs`): the CIDRs flattened into disjoint intervals labelled with their rule classes, found by a balanced binary search written out as compares; IPv6 on 64-bit halves | ~log2(intervals) compares + one class block; no map, no helper call |
//! | more, with [`LargeSets::LpmTrie`], or more than [`Options::max_search_intervals`] intervals | one **LPM trie** lookup (key: `prefixlen` u32 host order + address, network order; netprog's layout) whose value is a bitmap of rule classes | a helper call (10-60 ns here at 1,000 CIDRs, by match depth); kept for comparison |
//!
//! A **rule class** groups the rules with CIDRs by (protocol, ports); a
//! class is one block (`protocol; ports; goto allow`), so a large CIDR set
//! costs its search plus a few instructions per class of the address,
//! whatever its size. The IPv4 search is emitted once: IPv4 frames and
//! IPv4-mapped IPv6 peers enter it with the address in r2 and their IP
//! version in a stack slot (a constant the verifier tracks), which sends
//! its verdict to the tail of the right family. The finished code is
//! jump-threaded (a jump to a `goto` takes the `goto`'s target) and loses
//! unreachable instructions and `goto`s to the next instruction. Measured
//! with `cargo xtask bench xdp` (ns per packet through BPF_PROG_TEST_RUN
//! against an XDP_PASS floor of ~21 ns): the search costs 4-8 ns over the
//! floor at 10, 100 and 1,000 rules, where the trie cost up to ~58 ns at
//! 1,000. Rules without CIDRs run first, before any address is loaded. Flow map accesses happen only after the verdict of the
//! rules: a lookup before an insert when a rule passed an opener (a TCP
//! SYN, a UDP packet, an echo request), a lookup when no rule matched (in
//! the egress program only when the policy has ingress rules: without them
//! the map holds only egress-opened flows, whose packets the egress rules
//! pass anyway). A hash-map lookup costs ~25-35 ns here whatever the key
//! size (8 to 40 bytes measured), which is why established TCP packets
//! skip it and openers ask the per-CPU flow cache first (an array lookup,
//! which the verifier inlines: ~7 ns for the slot, the 40-byte compare and
//! the hit count).

mod codegen;
pub mod reference;
mod search;

use crate::bpf::{BpfError, Encoded, Insn, SourceLoc};
use crate::netprog::{Locator, MapSpec};
use phantom_dsl::ir::{NetMode, NetworkPolicy, Policy};

/// CIDR count per family and direction above which a table (the compiled
/// search, or an LPM trie) replaces per-rule compares.
pub const DEFAULT_TABLE_THRESHOLD: usize = 4;
/// Intervals of one family above which the compiled search gives way to
/// an LPM trie. The verifier walks the search once per protocol the rules
/// tell apart (the protocol register is an exact constant): about 36
/// processed instructions per interval of a program, measured (a
/// 10,000-CIDR policy searched in both families: ~13,500 intervals,
/// ~490,000 instructions). 6,000 intervals per family keep a program
/// under half of the kernel's 1,000,000-instruction limit.
pub const DEFAULT_MAX_SEARCH_INTERVALS: usize = 6000;
/// Default number of flow-cache slots per CPU ([`Options::flow_cache_slots`]).
pub const DEFAULT_FLOW_CACHE_SLOTS: u32 = 64;
/// A cached flow is looked up in the flow map again (and re-recorded if
/// the map lost it) on every this-many-th hit of its cache slot.
pub const FLOW_CACHE_REVALIDATE: u64 = 64;
/// The flow cache's symbol.
pub const FLOW_CACHE_MAP: &str = "xdp_flow_cache";
/// `enum bpf_map_type` BPF_MAP_TYPE_PERCPU_ARRAY.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// Default size of the flow map.
pub const DEFAULT_FLOW_ENTRIES: u32 = 16384;

/// `enum bpf_prog_type` BPF_PROG_TYPE_XDP.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_map_type` BPF_MAP_TYPE_LRU_HASH.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// XDP return values.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The flow map's symbol.
pub const FLOW_MAP: &str = "xdp_flows";
/// The per-CPU count of refused packets (one u64; one in
/// [`REFUSAL_RECORD_EVERY`] gets an audit record).
pub const REFUSALS_MAP: &str = "xdp_refusals";
/// Sampling of refusal records: the first and every this-many-th per CPU.
pub const REFUSAL_RECORD_EVERY: u64 = codegen::RECORD_EVERY as u64;
/// Size of a flow key.
pub const FLOW_KEY_SIZE: usize = 40;
/// Flow value: who opened the flow.
pub const OPENED_BY_EGRESS: u64 = 1;
pub const OPENED_BY_INGRESS: u64 = 2;

/// Which end of the veth a program is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Host end: packets leaving the sandbox, judged by the egress rules.
    Egress,
    /// Sandbox end: packets entering the sandbox, judged by the ingress
    /// rules and the flow table.
    Ingress,
}

impl Direction {
    /// The program (and function) name, at most 15 characters.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Egress => "phantom_xdp_eg",
            Direction::Ingress => "phantom_xdp_in",
        }
    }

    /// The flow value a program of this direction writes.
    pub fn opened_by(self) -> u64 {
        match self {
            Direction::Egress => OPENED_BY_EGRESS,
            Direction::Ingress => OPENED_BY_INGRESS,
        }
    }
}

/// The ELF section of both programs (libbpf convention).
pub const SECTION: &str = "xdp";

/// One generated program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpProgram {
    pub direction: Direction,
    pub insns: Vec<Insn>,
    pub encoded: Encoded,
    /// Per address family (IPv4, IPv6): how the peer address is judged.
    pub strategy: [AddrStrategy; 2],
}

/// How one address family's CIDRs are tested in one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrStrategy {
    /// Per rule, compares against constants ([`Options::table_threshold`]
    /// CIDRs or fewer).
    StraightLine,
    /// A binary search over the flattened CIDR intervals, compiled into
    /// compares (the default above the threshold).
    Search,
    /// One LPM-trie lookup (above the threshold with
    /// [`LargeSets::LpmTrie`]).
    LpmTrie,
}

impl AddrStrategy {
    pub fn name(self) -> &'static str {
        match self {
            AddrStrategy::StraightLine => "straight-line",
            AddrStrategy::Search => "search",
            AddrStrategy::LpmTrie => "LPM trie",
        }
    }
}

/// What judges a family with more than [`Options::table_threshold`] CIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LargeSets {
    /// Compiled binary search (no map).
    Search,
    /// An LPM trie per family (the earlier design, kept for comparison).
    LpmTrie,
}

impl XdpProgram {
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

/// Both programs and the maps they reference (the flow map and any LPM
/// tries), which the loader creates and fills before loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpPrograms {
    pub egress: XdpProgram,
    pub ingress: XdpProgram,
    pub maps: Vec<MapSpec>,
}

impl XdpPrograms {
    pub fn get(&self, d: Direction) -> &XdpProgram {
        match d {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// Code generation options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// More CIDRs than this in one family of one direction's rules: that
    /// family is judged by a table ([`Options::large_sets`]).
    pub table_threshold: usize,
    /// The table: a compiled search or an LPM trie.
    pub large_sets: LargeSets,
    /// A family whose CIDRs flatten into more intervals than this takes an
    /// LPM trie even with [`LargeSets::Search`].
    pub max_search_intervals: usize,
    /// `max_entries` of the flow map.
    pub flow_entries: u32,
    /// Slots per CPU of the cache of recently recorded flows (rounded up
    /// to a power of two; 0: no cache, every opener looks the map up).
    pub flow_cache_slots: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            table_threshold: DEFAULT_TABLE_THRESHOLD,
            large_sets: LargeSets::Search,
            max_search_intervals: DEFAULT_MAX_SEARCH_INTERVALS,
            flow_entries: DEFAULT_FLOW_ENTRIES,
            flow_cache_slots: DEFAULT_FLOW_CACHE_SLOTS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdpError {
    #[error("xdp ({direction:?}): {source}")]
    Encode { direction: Direction, source: BpfError },
    #[error("xdp object: {0}")]
    Object(String),
}

/// The XDP programs of a whole policy: `None` unless `network.mode` is
/// `allowlist`.
pub fn compile(policy: &Policy) -> Result<Option<XdpPrograms>, XdpError> {
    compile_network(&policy.network, &Locator::for_policy(policy), &Options::default())
}

/// The XDP programs of a network policy: `None` unless its mode is
/// `allowlist`.
pub fn compile_network(
    net: &NetworkPolicy,
    locator: &Locator,
    opts: &Options,
) -> Result<Option<XdpPrograms>, XdpError> {
    if net.mode != NetMode::Allowlist {
        return Ok(None);
    }
    codegen::programs(net, locator, opts).map(Some)
}

/// Both programs as one ELF object in libbpf conventions: section `xdp`
/// (two programs, [`Direction::name`]), BTF-defined maps (the flow map,
/// and the LPM tries with [`LargeSets::LpmTrie`], whose entries the loader
/// fills from [`XdpPrograms::maps`]), line_info into the policy files.
/// `texts` (`(path, text)`) puts the policy lines themselves into
/// line_info, as [`crate::bundle::build_with_sources`] does.
pub fn object(set: &XdpPrograms, texts: &[(String, String)]) -> Result<Vec<u8>, XdpError> {
    use crate::elf::{MapDef, ObjectBuilder, Program};
    let mut b = ObjectBuilder::new("GPL");
    for m in &set.maps {
        let mut def = MapDef::new(m.name.clone(), m.map_type, m.key_size, m.value_size, m.max_entries);
        def.flags = m.flags;
        b = b.map(def);
    }
    for p in [&set.egress, &set.ingress] {
        b = b.program(Program::new(SECTION, p.direction.name(), p.encoded.clone()));
    }
    for (path, text) in texts {
        b = b.source(path.clone(), text.clone());
    }
    b.build().map_err(|e| XdpError::Object(e.to_string()))
}

/// The flow key as the programs build it (see the module docs): `local` is
/// the sandbox's address, `remote` the peer's, ports in host order here
/// (stored in network order).
pub fn flow_key(
    v6: bool,
    protocol: u8,
    local_port: u16,
    remote_port: u16,
    local: &[u8],
    remote: &[u8],
) -> [u8; FLOW_KEY_SIZE] {
    let mut k = [0u8; FLOW_KEY_SIZE];
    k[0] = if v6 { 6 } else { 4 };
    k[1] = protocol;
    k[4..6].copy_from_slice(&local_port.to_be_bytes());
    k[6..8].copy_from_slice(&remote_port.to_be_bytes());
    k[8..8 + local.len()].copy_from_slice(local);
    k[24..24 + remote.len()].copy_from_slice(remote);
    k
}
