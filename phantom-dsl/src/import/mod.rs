//! Importers: other formats to policy text.

pub mod docker_seccomp;
