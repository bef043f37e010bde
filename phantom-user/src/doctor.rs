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
    probe_prog_btf(prog_type, attach, 0, ret)
}

/// [`probe_prog`] for programs that hook a kernel function (`btf_id` in
/// the kernel's BTF).
fn probe_prog_btf(prog_type: u32, attach: u32, btf_id: u32, ret: i32) -> Result<(), std::io::Error> {
    // mov64 r0, ret ; exit
    let insns: [u64; 2] = [0xb7 | ((ret as u32 as u64) << 32), 0x95];
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    let load = phantom_bpf_sys::ProgLoad {
        prog_type,
        expected_attach_type: attach,
        insns: &bytes,
        license: c"GPL",
        name: "phantom_probe",
        attach_btf_id: btf_id,
    };
    phantom_bpf_sys::prog_load(&load, 0).map(drop).map_err(std::io::Error::from)
}

const BPF_PROG_TYPE_LSM: u32 = 29;
use phantom_bpf_sys::BPF_LSM_CGROUP;

/// Whether this kernel runs lsm_cgroup programs: it loads one on
/// `file_open` (returning 1, allow; never attached). `bpf` in the active
/// LSM list is not enough: a kernel can list it and still refuse the
/// programs (this project's CI host does, with EPERM).
pub fn probe_bpf_lsm() -> Result<(), String> {
    // Parsing the kernel's BTF takes tens of milliseconds: once per process,
    // and once per boot through a file only root can write (the answer
    // cannot change before the kernel does).
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            let cache = read("/proc/sys/kernel/random/boot_id")
                .map(|id| std::path::PathBuf::from(PROBE_CACHE_DIR).join(format!("bpf-lsm-{id}")));
            if let Some(text) = cache.as_ref().and_then(|c| std::fs::read_to_string(c).ok()) {
                if let Some(reason) = text.strip_prefix("no\t") {
                    return Err(reason.trim_end().to_string());
                }
                if text.trim_end() == "ok" {
                    return Ok(());
                }
            }
            let r = probe_bpf_lsm_uncached();
            if let Some(c) = &cache {
                let text = match &r {
                    Ok(()) => "ok\n".to_string(),
                    Err(e) => format!("no\t{e}\n"),
                };
                let tmp = c.with_extension(format!("{}.tmp", std::process::id()));
                let written = std::fs::create_dir_all(PROBE_CACHE_DIR)
                    .and_then(|()| std::fs::write(&tmp, text))
                    .and_then(|()| std::fs::rename(&tmp, c));
                if written.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            r
        })
        .clone()
}

/// Where [`probe_bpf_lsm`] keeps its answer for the current boot.
pub const PROBE_CACHE_DIR: &str = "/run/phantom";

fn probe_bpf_lsm_uncached() -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF (/sys/kernel/btf/vmlinux): {e}"))?;
    let id = btf
        .id_by_type_name_kind("bpf_lsm_file_open", aya_obj::btf::BtfKind::Func)
        .map_err(|e| format!("the kernel BTF has no bpf_lsm_file_open (CONFIG_BPF_LSM off?): {e}"))?;
    probe_prog_btf(BPF_PROG_TYPE_LSM, BPF_LSM_CGROUP, id, 1)
        .map_err(|e| format!("loading an lsm_cgroup/file_open program: {e}"))
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
    // Allowlist sandboxes reach the host end of their veth pair; going
    // further needs forwarding and NAT on the host, which phantom never
    // changes (a global setting) but reports.
    let fwd4 = read("/proc/sys/net/ipv4/ip_forward").is_some_and(|v| v == "1");
    let fwd6 = read("/proc/sys/net/ipv6/conf/all/forwarding").is_some_and(|v| v == "1");
    p.push(Probe {
        layer: "allowlist-net",
        available: fwd4 && fwd6,
        detail: format!(
            "veth pairs 10.200.0.0/16 and fd70:6861:6e74::/48; forwarding: IPv4 {}, IPv6 {}",
            if fwd4 { "on" } else { "off" },
            if fwd6 { "on" } else { "off" }
        ),
        fix: (!(fwd4 && fwd6)).then(|| {
            "allowlist sandboxes reach only their host end until the host forwards and masquerades their \
             traffic: sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1, and e.g. \
             nft add table ip phantom; nft add chain ip phantom post '{ type nat hook postrouting priority 100; }'; \
             nft add rule ip phantom post ip saddr 10.200.0.0/16 masquerade (likewise for ip6 fd70:6861:6e74::/48)"
                .into()
        }),
    });
    let lsms = read("/sys/kernel/security/lsm").unwrap_or_default();
    let listed = lsms.split(',').any(|l| l == "bpf");
    let loads = if listed { probe_bpf_lsm() } else { Err("not tried".into()) };
    let lockdown = read("/sys/kernel/security/lockdown");
    p.push(Probe {
        layer: "bpf-lsm",
        available: loads.is_ok(),
        detail: format!(
            "active LSMs: {}; {}{}",
            if lsms.is_empty() { "unknown (securityfs not mounted?)" } else { &lsms },
            match &loads {
                Ok(()) => "lsm_cgroup programs load".to_string(),
                Err(e) if listed => e.clone(),
                Err(_) => "bpf is not an active LSM".to_string(),
            },
            lockdown.as_ref().map_or(String::new(), |l| format!("; lockdown: {l}"))
        ),
        fix: loads.is_err().then(|| {
            if listed {
                "this kernel lists bpf but refuses LSM programs (a lockdown mode or a security policy of the \
                 host); BPF-LSM rules need a host that allows them (cargo xtask vm-test shows one)"
                    .to_string()
            } else {
                format!(
                    "boot with `bpf` in the lsm= parameter, e.g. lsm={},bpf (needs CONFIG_BPF_LSM)",
                    if lsms.is_empty() { "landlock,lockdown,yama" } else { &lsms }
                )
            }
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
