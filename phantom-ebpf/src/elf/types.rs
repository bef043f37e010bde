//! The C-level types an object declares in `.BTF`, written the way clang
//! writes them for libbpf-style C, so that libbpf, aya and bpftool read
//! them without special cases:
//!
//! - a program is `int name(struct <ctx> *ctx)`, a global `FUNC`;
//! - a map is `struct { int (*type)[T]; int (*key_size)[K]; ... } name
//!   SEC(".maps")`: libbpf's `__uint(field, value)` encodes the value as
//!   the element count of an array that a member points to;
//! - the license is `char _license[N] SEC("license")`.

use super::btf::{Btf, BtfType, FuncLinkage, IntEncoding, Member, Param, TypeId, VarLinkage};

/// `int`, the return type of programs and the element and index type of
/// the map-definition arrays.
pub fn int(btf: &mut Btf) -> TypeId {
    btf.add(BtfType::Int { name: "int".into(), size: 4, encoding: IntEncoding::Signed, bits: 32 })
}

/// What a program's context argument points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtxType {
    /// `struct <name> *ctx`: the UAPI context struct of the program type,
    /// as an empty struct: the kernel matches context arguments by struct
    /// name and knows the layout itself. (A `FWD` also loads, but the
    /// verifier then logs "arg#0 reference type('FWD xdp_md') size cannot
    /// be determined" for every program.)
    Struct(&'static str),
    /// `unsigned long long *ctx`: the argument array of LSM and tracing
    /// programs (what libbpf's `BPF_PROG()` macro declares).
    U64Array,
    /// `void *ctx`, for section names Phantom has no table entry for.
    Void,
}

/// The context type for a libbpf section name (`xdp`, `cgroup/connect4`,
/// `lsm_cgroup/file_open`, ...), following the kernel's
/// `bpf_prog_ctx_type` table for each program type.
pub fn ctx_type(section: &str) -> CtxType {
    let (kind, rest) = section.split_once('/').unwrap_or((section, ""));
    let attach = rest.split('/').next().unwrap_or("");
    match (kind, attach) {
        ("xdp" | "xdp.frags", _) => CtxType::Struct("xdp_md"),
        ("cgroup", "sock" | "sock_create" | "sock_release" | "post_bind4" | "post_bind6") => {
            CtxType::Struct("bpf_sock")
        }
        ("cgroup", "dev") => CtxType::Struct("bpf_cgroup_dev_ctx"),
        ("cgroup", "sysctl") => CtxType::Struct("bpf_sysctl"),
        ("cgroup", "getsockopt" | "setsockopt") => CtxType::Struct("bpf_sockopt"),
        ("cgroup", "skb") | ("cgroup_skb" | "tc" | "tcx" | "classifier" | "socket", _) => CtxType::Struct("__sk_buff"),
        ("cgroup", a)
            if ["bind", "connect", "sendmsg", "recvmsg", "getpeername", "getsockname"]
                .iter()
                .any(|p| a.starts_with(p)) =>
        {
            CtxType::Struct("bpf_sock_addr")
        }
        (
            "lsm" | "lsm.s" | "lsm_cgroup" | "fentry" | "fexit" | "fmod_ret" | "tp_btf" | "raw_tp" | "raw_tracepoint",
            _,
        ) => CtxType::U64Array,
        _ => CtxType::Void,
    }
}

/// Adds `int name(<ctx> *ctx)` and returns the id of its `FUNC`.
pub fn program_func(btf: &mut Btf, name: &str, ctx: CtxType) -> TypeId {
    let ret = int(btf);
    let pointee = match ctx {
        CtxType::Struct(s) => btf.add(BtfType::Struct { name: s.into(), size: 0, members: Vec::new() }),
        CtxType::U64Array => btf.add(BtfType::Int {
            name: "unsigned long long".into(),
            size: 8,
            encoding: IntEncoding::Unsigned,
            bits: 64,
        }),
        CtxType::Void => 0,
    };
    let ptr = btf.add(BtfType::Ptr { to: pointee });
    let proto = btf.add(BtfType::FuncProto { ret, params: vec![Param { name: "ctx".into(), ty: ptr }] });
    btf.add(BtfType::Func { name: name.into(), proto, linkage: FuncLinkage::Global })
}

/// `int (*field)[value]`: one `__uint(field, value)` member type.
fn uint_field(btf: &mut Btf, value: u32) -> TypeId {
    let int = int(btf);
    let array = btf.add(BtfType::Array { elem: int, index: int, nelems: value });
    btf.add(BtfType::Ptr { to: array })
}

/// Adds the anonymous definition struct of a map with the given
/// `(field, value)` members and returns `(struct id, size in bytes)`.
/// Each member is a pointer, 8 bytes.
pub fn map_struct(btf: &mut Btf, fields: &[(&str, u32)]) -> (TypeId, u32) {
    let members = fields
        .iter()
        .enumerate()
        .map(|(i, &(name, value))| Member { name: name.into(), ty: uint_field(btf, value), bit_offset: 64 * i as u32 })
        .collect::<Vec<_>>();
    let size = 8 * fields.len() as u32;
    (btf.add(BtfType::Struct { name: String::new(), size, members }), size)
}

/// A global allocated variable (`VAR`) of type `ty`.
pub fn global_var(btf: &mut Btf, name: &str, ty: TypeId) -> TypeId {
    btf.add(BtfType::Var { name: name.into(), ty, linkage: VarLinkage::GlobalAllocated })
}

/// `char[len]`, the type of `_license`.
pub fn char_array(btf: &mut Btf, len: u32) -> TypeId {
    let int = int(btf);
    let ch = btf.add(BtfType::Int { name: "char".into(), size: 1, encoding: IntEncoding::Signed, bits: 8 });
    btf.add(BtfType::Array { elem: ch, index: int, nelems: len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_types_follow_the_kernel_table() {
        assert_eq!(ctx_type("xdp"), CtxType::Struct("xdp_md"));
        assert_eq!(ctx_type("cgroup/sock_create"), CtxType::Struct("bpf_sock"));
        assert_eq!(ctx_type("cgroup/connect4"), CtxType::Struct("bpf_sock_addr"));
        assert_eq!(ctx_type("cgroup/sendmsg6"), CtxType::Struct("bpf_sock_addr"));
        assert_eq!(ctx_type("cgroup/dev"), CtxType::Struct("bpf_cgroup_dev_ctx"));
        assert_eq!(ctx_type("cgroup/sysctl"), CtxType::Struct("bpf_sysctl"));
        assert_eq!(ctx_type("cgroup_skb/egress"), CtxType::Struct("__sk_buff"));
        assert_eq!(ctx_type("lsm_cgroup/file_open"), CtxType::U64Array);
        assert_eq!(ctx_type("something/else"), CtxType::Void);
    }

    #[test]
    fn map_struct_uses_the_pointer_to_array_encoding() {
        let mut btf = Btf::new();
        let (id, size) = map_struct(&mut btf, &[("type", 2), ("max_entries", 16)]);
        assert_eq!(size, 16);
        let BtfType::Struct { members, .. } = &btf.types()[id as usize - 1] else { panic!("not a struct") };
        assert_eq!(members[1].bit_offset, 64);
        let BtfType::Ptr { to } = btf.types()[members[1].ty as usize - 1] else { panic!("not a pointer") };
        assert!(matches!(btf.types()[to as usize - 1], BtfType::Array { nelems: 16, .. }));
    }
}
