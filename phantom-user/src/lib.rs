//! Phantom runtime: applies compiled policy layers to processes, and (with
//! the runtime issue) loads bundles and spawns sandboxes.
//!
//! Every `apply` here changes the calling process irreversibly; callers run
//! it in the sandbox child after fork and before exec, tests in forked
//! children.

pub mod apply;
pub mod audit_events;
pub mod bundle_object;
pub mod cgroup_bpf;
pub mod doctor;
pub mod landlock;
pub mod live;
pub mod loader;
pub mod lsm;
pub mod net;
pub mod reload;
pub mod report;
pub(crate) mod resident;
pub mod seccomp;
pub mod spawn;
pub mod zygote;
