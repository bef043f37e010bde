//! `phantom doctor`: probes the kernel features each layer needs (never
//! kernel versions: distributions backport) and says what each layer will
//! be on this host, with the fix for a missing one.

use crate::spawn::cgroup;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub layer: &'static str,
    pub available: bool,
    pub detail: String,
    /// What to do when it is missing.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub kernel: String,
    pub probes: Vec<Probe>,
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Loads `r0 = ret; exit` as `prog_type`; Ok if the kernel accepts it.
fn probe_prog(prog_type: u32, attach: u32, ret: i32) -> Result<(), std::io::Error> {
    // mov64 r0, ret ; exit
    let insns: [u64; 2] = [0xb7 | ((ret as u32 as u64) << 32), 0x95];
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    let load = phantom_bpf_sys::ProgLoad {
        prog_type,
        expected_attach_type: attach,
        insns: &bytes,
        license: c"GPL",
        name: "phantom_probe",
    };
    phantom_bpf_sys::prog_load(&load, phantom_bpf_sys::INITIAL_LOG_SIZE).map(drop).map_err(std::io::Error::from)
}

fn landlock_abi() -> Option<i64> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    (v > 0).then_some(v)
}

pub fn probe() -> DoctorReport {
    let mut p = Vec::new();
    let actions = read("/proc/sys/kernel/seccomp/actions_avail");
    p.push(Probe {
        layer: "seccomp",
        available: actions.is_some(),
        detail: actions.clone().map_or("no seccomp filter support".into(), |a| format!("actions: {a}")),
        fix: actions.is_none().then(|| "use a kernel built with CONFIG_SECCOMP_FILTER".into()),
    });
    let abi = landlock_abi();
    p.push(Probe {
        layer: "landlock",
        available: abi.is_some(),
        detail: abi.map_or("not available".into(), |v| {
            format!("ABI {v}{}", if v >= 4 { " (filesystem and TCP ports)" } else { " (filesystem only)" })
        }),
        fix: abi.is_none().then(|| "boot with `landlock` in the lsm= parameter (CONFIG_SECURITY_LANDLOCK)".into()),
    });
    let layout = cgroup::layout();
    let v2 = cgroup::v2_root();
    let v2_ctrl =
        v2.as_ref().and_then(|r| read(&r.join("cgroup.controllers").display().to_string())).unwrap_or_default();
    let v1: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| std::path::Path::new("/sys/fs/cgroup").join(c).join("cgroup.procs").exists())
        .collect();
    p.push(Probe {
        layer: "cgroups",
        available: v2.is_some() || !v1.is_empty(),
        detail: format!(
            "{layout:?}: cgroup2 at {} (controllers: {}); v1 controllers: {}",
            v2.as_ref().map_or("-".into(), |r| r.display().to_string()),
            if v2_ctrl.is_empty() { "none" } else { &v2_ctrl },
            if v1.is_empty() { "none".to_string() } else { v1.join(", ") }
        ),
        fix: v2.is_none().then(|| "mount cgroup2 (cgroup-BPF programs attach to a cgroup v2 directory)".into()),
    });
    let cg_bpf = [(9, 0, "cgroup/sock_create"), (18, 10, "cgroup/connect4"), (15, 6, "cgroup/dev")]
        .iter()
        .map(|(t, a, name)| (name, probe_prog(*t, *a, 1)))
        .collect::<Vec<_>>();
    let cg_ok = cg_bpf.iter().all(|(_, r)| r.is_ok());
    p.push(Probe {
        layer: "cgroup-bpf",
        available: cg_ok && v2.is_some(),
        detail: cg_bpf
            .iter()
            .map(|(n, r)| format!("{n}: {}", r.as_ref().map_or_else(|e| e.to_string(), |_| "loads".into())))
            .collect::<Vec<_>>()
            .join("; "),
        fix: (!cg_ok)
            .then(|| "run as root (or with CAP_BPF + CAP_NET_ADMIN) on a kernel with CONFIG_CGROUP_BPF".into()),
    });
    let xdp = probe_prog(6, 0, 2);
    p.push(Probe {
        layer: "xdp",
        available: xdp.is_ok(),
        detail: xdp.as_ref().map_or_else(|e| format!("XDP program load: {e}"), |_| "XDP programs load".into()),
        fix: xdp.is_err().then(|| "run as root (or with CAP_BPF + CAP_NET_ADMIN)".into()),
    });
    let lsms = read("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_lsm = lsms.split(',').any(|l| l == "bpf");
    p.push(Probe {
        layer: "bpf-lsm",
        available: bpf_lsm,
        detail: format!("active LSMs: {}", if lsms.is_empty() { "unknown (securityfs not mounted?)" } else { &lsms }),
        fix: (!bpf_lsm).then(|| {
            format!(
                "boot with `bpf` in the lsm= parameter, e.g. lsm={},bpf (needs CONFIG_BPF_LSM)",
                if lsms.is_empty() { "landlock,lockdown,yama" } else { &lsms }
            )
        }),
    });
    let userns = read("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let unpriv = read("/proc/sys/kernel/unprivileged_userns_clone").map(|v| v == "1");
    p.push(Probe {
        layer: "user-namespaces",
        available: userns > 0,
        detail: format!(
            "max_user_namespaces {userns}; unprivileged: {}",
            match unpriv {
                Some(true) => "allowed",
                Some(false) => "disabled (kernel.unprivileged_userns_clone=0)",
                None => "no Debian switch (allowed unless restricted by an LSM)",
            }
        ),
        fix: (userns == 0).then(|| "sysctl user.max_user_namespaces=15000".into()),
    });
    DoctorReport { kernel: read("/proc/sys/kernel/osrelease").unwrap_or_default(), probes: p }
}

pub fn render(r: &DoctorReport) -> String {
    let mut out = format!("kernel {}\n", r.kernel);
    for p in &r.probes {
        out += &format!("{:<16} {:<4} {}\n", p.layer, if p.available { "yes" } else { "NO" }, p.detail);
        if let Some(f) = &p.fix {
            out += &format!("{:<21} fix: {f}\n", "");
        }
    }
    out
}
