//! `bench spawn-cli`: whole commands as a user runs them, timed from exec to
//! exit in the same run, in turns (like `hyperfine -N`, interleaved): plain exec (the floor),
//! `phantom run` through a resident zygote (warm) and without one (cold),
//! and bubblewrap with and without a seccomp filter (Docker's profile, as
//! compiled by Phantom). Then memory: the zygote's RSS and the supervisor
//! side's PSS per live sandbox. Needs root; installs bubblewrap (a peer
//! only) when it is missing.

use super::{Case, Harness};
use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const POLICY: &str = "profile: bench-cli\nsecurity:\n  level: low\n  seccomp:\n    default: allow\n    deny: [ptrace, kexec_load, bpf]\n  landlock:\n    paths:\n      - path: /usr\n        access: read-only\nnetwork:\n  mode: loopback-only\nperformance:\n  zygote: true\n";

/// The static `phantom` of `cargo xtask dist` (built by the bench's
/// release re-run), as users install it.
fn phantom_bin() -> Result<PathBuf> {
    let dir =
        std::env::var_os("PHANTOM_DIST_DIR").context("PHANTOM_DIST_DIR unset: run through `cargo xtask bench`")?;
    let p = PathBuf::from(dir).join("phantom");
    if !p.exists() {
        bail!("{} is missing: `cargo xtask dist` first", p.display());
    }
    Ok(p)
}

fn ensure_bwrap() -> Result<()> {
    if Command::new("bwrap").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("bench spawn-cli: installing bubblewrap (a benchmark peer only): apt-get install -y bubblewrap");
    let ok = Command::new("apt-get").args(["install", "-y", "-q", "bubblewrap"]).status()?.success();
    if !ok {
        bail!("could not install bubblewrap; install it and rerun");
    }
    Ok(())
}

const BWRAP: &[&str] = &[
    "--unshare-all",
    "--die-with-parent",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/bin",
    "/bin",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
];

/// Times the commands in turns (one call of each per round, for the
/// harness's budget per command), so that load from elsewhere on a small,
/// shared host falls on every command alike; three rounds warm up first.
fn round_robin(h: &Harness, cmds: &mut [(&str, &mut dyn FnMut() -> std::process::ExitStatus)]) -> Vec<super::Stats> {
    let t = std::time::Instant::now();
    for _ in 0..3 {
        cmds.iter_mut().for_each(|(_, f)| {
            f();
        });
    }
    let per_round = t.elapsed() / 3;
    let rounds = (h.budget.as_nanos() * cmds.len() as u128 / per_round.as_nanos().max(1)).clamp(20, 5_000) as usize;
    let mut samples = vec![Vec::with_capacity(rounds); cmds.len()];
    for _ in 0..rounds {
        for ((_, f), s) in cmds.iter_mut().zip(&mut samples) {
            let t = std::time::Instant::now();
            f();
            s.push(t.elapsed().as_nanos() as u64);
        }
    }
    cmds.iter()
        .zip(samples)
        .map(|((label, _), s)| {
            let stats = super::Stats::from_samples(s);
            h.note(&format!("  {label:<40} {rounds:>6} rounds, p50 {:.1} µs", stats.p50 as f64 / 1000.0));
            stats
        })
        .collect()
}

fn run_quiet(cmd: &mut Command) -> std::process::ExitStatus {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run")
}

/// PSS of a process in KiB.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Children of every thread of `pid` (the zygote forks from handler threads).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn run(h: &Harness) -> Result<Vec<Case>> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench spawn-cli needs root (namespaces, cgroups)");
    }
    ensure_bwrap()?;
    let phantom = phantom_bin()?;
    let dir = std::env::temp_dir().join(format!("phantom-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let policy = dir.join("bench.yaml");
    std::fs::write(&policy, POLICY)?;
    // Docker's profile compiled by Phantom, for bwrap --seccomp.
    let docker = phantom_dsl::compile_file(Path::new("policies/docker-default.yaml"))?;
    let filter = phantom_ebpf::seccomp::compile(
        &docker.policy.context("docker-default.yaml")?.seccomp,
        phantom_dsl::syscalls::Arch::X86_64,
    )?;
    let filter_path = dir.join("docker.bpf");
    std::fs::write(&filter_path, filter.to_bytes())?;

    let warm =
        || Command::new(&phantom).args(["run", "-q", "--policy"]).arg(&policy).args(["--", "/bin/true"]).status();
    // Start the zygote and check both paths work before timing.
    if !warm()?.success()
        || !run_quiet(
            Command::new(&phantom)
                .args(["run", "-q", "--no-zygote", "--policy"])
                .arg(&policy)
                .args(["--", "/bin/true"]),
        )
        .success()
    {
        bail!("phantom run failed");
    }
    let bwrap_plain = run_quiet(Command::new("bwrap").args(BWRAP).arg("/bin/true"));
    if !bwrap_plain.success() {
        bail!("bwrap failed: {bwrap_plain}");
    }
    let mut bwrap_seccomp = || {
        let f = std::fs::File::open(&filter_path).expect("filter");
        let fd = f.as_raw_fd();
        let mut cmd = Command::new("bwrap");
        cmd.args(BWRAP).args(["--seccomp", &fd.to_string(), "/bin/true"]);
        // SAFETY: clears FD_CLOEXEC on the filter fd in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
        run_quiet(&mut cmd)
    };
    let mut warm_run =
        || run_quiet(Command::new(&phantom).args(["run", "-q", "--policy"]).arg(&policy).args(["--", "/bin/true"]));
    let mut cold_run = || {
        run_quiet(
            Command::new(&phantom)
                .args(["run", "-q", "--no-zygote", "--policy"])
                .arg(&policy)
                .args(["--", "/bin/true"]),
        )
    };
    let [floor, bwrap, bwrap_sec, warm_s, cold_s]: [super::Stats; 5] = round_robin(
        h,
        &mut [
            ("exec /bin/true", &mut || run_quiet(&mut Command::new("/bin/true"))),
            ("bwrap --unshare-all", &mut || run_quiet(Command::new("bwrap").args(BWRAP).arg("/bin/true"))),
            ("bwrap --unshare-all --seccomp (Docker)", &mut bwrap_seccomp),
            ("phantom run (warm: zygote)", &mut warm_run),
            ("phantom run (cold: --no-zygote)", &mut cold_run),
        ],
    )
    .try_into()
    .map_err(|_| anyhow::anyhow!("five cases"))?;

    // Memory: 20 live sandboxes through the zygote.
    let zygote = Command::new("pgrep").args(["-o", "-f", &format!("serve --policy {}", policy.display())]).output()?;
    let zpid: u32 = String::from_utf8_lossy(&zygote.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("zygote pid")?;
    let idle_rss = rss_kib(zpid);
    let idle_pss = pss_kib(zpid);
    let mut live: Vec<Child> = (0..20)
        .map(|_| {
            Command::new(&phantom)
                .args(["run", "-q", "--policy"])
                .arg(&policy)
                .args(["--", "/bin/sleep", "3"])
                .stdout(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(1500));
    let first_stages = children_of(zpid);
    let busy_pss = pss_kib(zpid);
    let stages_pss: u64 = first_stages.iter().map(|p| pss_kib(*p)).sum();
    for c in &mut live {
        c.wait()?;
    }
    let per_sandbox = (busy_pss.saturating_sub(idle_pss) + stages_pss) as f64 / first_stages.len().max(1) as f64;
    let _ = Command::new("kill").arg(zpid.to_string()).status();
    let _ = std::fs::remove_dir_all(&dir);
    // Targets go through the harness, so the summary counts the misses.
    h.check("zygote RSS < 5 MiB", idle_rss < 5 * 1024, format!("{idle_rss} KiB"));
    h.check(
        "supervisor-side PSS per live sandbox < 1 MiB",
        per_sandbox < 1024.0,
        format!("{per_sandbox:.0} KiB over {} sandboxes", first_stages.len()),
    );
    let ratio = |a: &super::Stats, b: &super::Stats| b.p50 as f64 / a.p50.max(1) as f64;
    let warm = ratio(&warm_s, &bwrap_sec);
    h.check("warm phantom run >= 3x faster than bwrap+seccomp", warm >= 3.0, format!("{warm:.2}x faster"));
    let cold = ratio(&cold_s, &bwrap_sec);
    h.check("cold phantom run no slower than bwrap+seccomp", cold_s.p50 <= bwrap_sec.p50, format!("{cold:.2}x"));
    let case = |name: &str, ours: super::Stats, peer: (&'static str, super::Stats)| Case {
        name: name.into(),
        detail: "whole command, exec to exit, same run".into(),
        ours,
        peer: Some(peer),
        target: None,
    };
    Ok(vec![
        case("phantom run warm vs bwrap+seccomp", warm_s.clone(), ("bwrap+seccomp", bwrap_sec.clone())),
        case("phantom run cold vs bwrap+seccomp", cold_s, ("bwrap+seccomp", bwrap_sec)),
        case("phantom run warm vs exec", warm_s, ("exec", floor.clone())),
        case("bwrap (no seccomp) vs exec", bwrap, ("exec", floor)),
    ])
}
