//! Independent oracles that Phantom's tests and benchmarks compare the
//! product against. Today: [`libseccomp`], the reference seccomp filter
//! compiler, through raw FFI.
//!
//! Not part of the product: only dev-dependencies (tests) and xtask
//! (benches) may depend on this crate, never a product crate's normal
//! dependencies (`tests/not_a_product_dependency.rs` checks the workspace).
//! It shares no code with the backends it checks: it reads the policy IR
//! from phantom-dsl and nothing from phantom-ebpf.

pub mod libseccomp;
