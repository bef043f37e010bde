//! The kernel layout the host-side LSM tests encode with (lsm_codegen.rs
//! and the file_open interpreter tests), in one place.

use phantom_ebpf::lsm::KernelLayout;

/// The 6.12 layout (any fixed layout works for the host tests).
pub const LAYOUT: KernelLayout = KernelLayout {
    file_f_mode: 4,
    file_f_path: 64,
    file_f_flags: 72,
    task_tgid: 1268,
    task_cgroups: 2376,
    css_set_dfl_cgrp: 136,
    cgroup_kn: 304,
    kernfs_node_id: 96,
};
