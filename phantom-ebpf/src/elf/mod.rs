//! BPF ELF objects in libbpf conventions, written without clang or LLVM.
//!
//! The objects are the standard artifact other tools read: they load with
//! libbpf (`bpftool prog loadall`) and with aya (`Ebpf::load`), and
//! `bpftool prog dump xlated linum` shows, for each instruction, the line
//! of the policy file it implements.
//!
//! ```no_run
//! use phantom_ebpf::bpf::{encode, Insn, Reg};
//! use phantom_ebpf::elf::{MapDef, ObjectBuilder, Program, BPF_MAP_TYPE_ARRAY};
//!
//! let code = encode(&[Insn::mov64_imm(Reg::R0, 2), Insn::exit()]).unwrap();
//! let bytes = ObjectBuilder::new("GPL")
//!     .map(MapDef::new("counters", BPF_MAP_TYPE_ARRAY, 4, 8, 1))
//!     .program(Program::new("xdp", "pass", code))
//!     .source("policy.yaml", "net:\n  allow: all\n")
//!     .build()
//!     .unwrap();
//! ```
//!
//! | module | role |
//! |---|---|
//! | [`object`] | [`ObjectBuilder`]: programs, maps and policy text -> object bytes |
//! | [`types`] | the C-level BTF types (`int prog(struct xdp_md *ctx)`, map definitions, `_license`) |
//! | [`btf`] | the `.BTF` encoder: type table, deduplicated types and strings |
//! | [`btf_ext`] | `.BTF.ext`: func_info and line_info (policy lines), CO-RE relocations |
//! | [`core`] | CO-RE field relocations: local struct definitions and `bpf_core_relo` records |
//! | [`btf_read`] | decoding `.BTF`, for round-trip tests and tools |
//! | [`read`] | reading an object's programs back (slots, map relocations, line_info), for `inspect` and tests |
//! | [`writer`] | the ELF64 little-endian `EM_BPF` relocatable writer |
//!
//! Sections written: one per program section name (`xdp`,
//! `cgroup/connect4`, ...; several programs may share one), `.rel<section>`
//! with an `R_BPF_64_64` relocation against the map's symbol for every map
//! load, `license`, `.maps`, `.BTF`, `.BTF.ext`, `.strtab` and `.symtab`.
//! Output is deterministic: the same inputs always give the same bytes.

pub mod btf;
pub mod btf_ext;
pub mod btf_read;
pub mod core;
pub mod object;
pub mod read;
pub mod types;
pub mod writer;

pub use object::{
    MapDef, ObjectBuilder, Program, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE,
    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF,
};

/// Errors of writing (and, for tests and tools, reading back) an object.
/// Every one names the program, map or section involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("program `{program}` loads map `{map}`, which the object does not define")]
    UnknownMap { program: String, map: String },
    #[error("program `{program}` calls kernel function `{name}`; kfunc relocations are not written yet")]
    UnsupportedKfunc { program: String, name: String },
    #[error("two {what}s are named `{name}`")]
    Duplicate { what: &'static str, name: String },
    #[error("{what} name `{name}` is not valid: {reason}")]
    InvalidName { what: &'static str, name: String, reason: &'static str },
    #[error("program `{program}` has no instructions")]
    EmptyProgram { program: String },
    #[error("the license contains a NUL byte")]
    InvalidLicense,
    #[error("malformed BTF: {0}")]
    BadBtf(String),
    #[error("malformed ELF object: {0}")]
    BadElf(String),
}

#[cfg(test)]
mod tests;
