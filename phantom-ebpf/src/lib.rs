//! Phantom backends: turn the policy IR into kernel artifacts.
//!
//! Nothing is emitted yet; the seccomp, Landlock and eBPF backends land with
//! their issues. The crate exists so the workspace shape is the final one.
