//! System packages the tests need, checked with dpkg and installed with apt
//! when we are root. Keep the table to what some test needs today; add a
//! row (with the reason) when a test starts needing something.

use crate::util;
use anyhow::{bail, Result};
use std::process::Command;

/// One Debian package and why the tests need it.
#[derive(Debug)]
pub struct SystemPackage {
    pub name: &'static str,
    pub why: &'static str,
}

pub const TEST_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        name: "libseccomp-dev",
        why: "seccomp differential tests link libseccomp as an independent oracle",
    },
    SystemPackage { name: "pkg-config", why: "finds libseccomp for those tests" },
    SystemPackage {
        name: "bpftool",
        why:
            "eBPF tests compare our disassembler with `bpftool prog dump xlated` (an oracle, never used by the product)",
    },
];

/// What `cargo xtask vm-test` (the VM tier, xtask/src/vm.rs) needs on the
/// host. The guest kernel and virtme-ng are not here: vm.rs caches them
/// under target/vm/.
pub const VM_PACKAGES: &[SystemPackage] = &[
    SystemPackage { name: "qemu-system-x86", why: "the VM (software emulation, `vng --disable-kvm`)" },
    SystemPackage { name: "busybox-static", why: "virtme-ng builds the guest's initramfs around busybox" },
    SystemPackage {
        name: "udev",
        why: "virtme-ng's guest init runs udevd for /dev/virtio-ports/*: without it the guest's output and exit status are lost",
    },
    SystemPackage { name: "kmod", why: "depmod indexes the guest kernel's modules (9p, overlay) after unpacking" },
    SystemPackage { name: "file", why: "virtme-ng reads the kernel release from the image with `file`" },
    SystemPackage { name: "python3-venv", why: "the venv that virtme-ng (PyPI) is installed into" },
];

/// Whether dpkg says the package is installed.
fn installed(name: &str) -> Result<bool> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", name]).output();
    match out {
        // dpkg-query exits 1 for a package it has never heard of.
        Ok(o) => {
            Ok(o.status.success() && String::from_utf8_lossy(&o.stdout).trim_end().ends_with("install ok installed"))
        }
        Err(e) => bail!(
            "cannot run dpkg-query ({e}): the package check supports Debian and Ubuntu; \
             install the equivalents of [{}] yourself and pass --no-deps",
            TEST_PACKAGES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The packages of `packages` that are not installed (printing nothing).
pub fn missing(packages: &[SystemPackage]) -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for p in packages {
        if !installed(p.name)? {
            missing.push(p.name);
        }
    }
    Ok(missing)
}

/// Checks every package of `packages`; installs the missing ones with apt
/// when root, fails with the command to run otherwise.
pub fn ensure(packages: &[SystemPackage]) -> Result<()> {
    let mut missing = Vec::new();
    for p in packages {
        let ok = installed(p.name)?;
        println!("  {:<16} {:<13} {}", p.name, if ok { "installed" } else { "MISSING" }, p.why);
        if !ok {
            missing.push(p.name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !util::is_root() {
        bail!("missing system packages; run as root:\n    sudo apt-get update && sudo {install}\n  (or pass --no-deps to skip this step)");
    }
    println!("  installing: {}", missing.join(" "));
    util::run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p).unwrap_or(false)).collect();
    if !still.is_empty() {
        bail!("apt-get finished but these are still not installed: {}", still.join(", "));
    }
    Ok(())
}
