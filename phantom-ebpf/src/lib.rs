//! Phantom backends: turn the policy IR into kernel artifacts.
//!
//! [`seccomp`] compiles the seccomp part of a policy into a classic BPF
//! filter; [`landlock`] turns it into a Landlock ruleset description. The eBPF
//! backend lands with its issue.

pub mod audit;
pub mod bpf;
pub mod bundle;
pub mod elf;
pub mod landlock;
pub mod lsm;
pub mod netprog;
pub mod seccomp;
pub mod xdp;
