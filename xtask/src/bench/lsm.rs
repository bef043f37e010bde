//! `bench lsm`: the cost of one `open()`+`close()` under our
//! `lsm_cgroup/file_open` program, against the same loop with no program
//! and under an equivalent Landlock ruleset, all in one boot of the VM tier
//! (the host kernel refuses BPF-LSM; see `vm.rs`).
//!
//! On the host this bench prepares the VM (same kernel, same virtme-ng as
//! `cargo xtask vm-test`) and boots it once with a script that runs this
//! very binary with [`GUEST_ENV`] set; in the guest, [`guest`] measures and
//! prints one JSON line after [`MARK`], which the host turns into the
//! report. Software emulation inflates absolute times, so the report is
//! about ratios: overhead per open = (ns/op of the case) - (ns/op with no
//! program), ours against Landlock's at the same rule count.
//!
//! Cases, each in a forked child that loops over open+close of one file
//! on a tmpfs private to the bench:
//! - `none`: no LSM program attached anywhere (the floor);
//! - `bpf-lsm N` (N = 10, 100, 1,000): the child in a cgroup with the
//!   file_open program of a policy with N deny rules on sibling
//!   directories, none of which matches the opened file (the program walks
//!   its compiled path trie to the point where the path leaves it);
//! - `outside N`: the same program attached, the child outside its cgroup
//!   (what every other process on the machine pays);
//! - `landlock N`: no BPF program; the child under a Landlock ruleset with
//!   N read-only rules on sibling directories plus the file's own directory
//!   (the rules Landlock has to consult for the same open).
//!
//! Rounds interleave the cases so that drift hits all of them; the median
//! round is reported. Targets (issue 5): at 100 rules our overhead is at
//! most 2x Landlock's, and it grows sub-linearly with the rule count.

use super::{Harness, Section};
use crate::vm;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Set by the host in the guest's environment: measure, do not boot.
const GUEST_ENV: &str = "PHANTOM_BENCH_LSM_GUEST";
/// The guest's result line: `MARK {json}`.
const MARK: &str = "phantom-bench-lsm:";
const SIZES: [usize; 3] = [10, 100, 1000];
/// open+close pairs per measurement (software emulation: ~10-30 µs each).
const LOOPS: u32 = 10_000;
const ROUNDS: usize = 9;

pub fn run(h: &Harness) -> Result<Vec<super::Case>> {
    if std::env::var_os(GUEST_ENV).is_some() {
        let results = guest()?;
        println!("{MARK} {}", serde_json::to_string(&results)?);
        // The host prints the report; the guest's own (empty) one is noise.
        std::process::exit(0);
    }
    host(h)
}

// ---------------------------------------------------------------- host side

fn host(h: &Harness) -> Result<Vec<super::Case>> {
    let start = Instant::now();
    let machine = vm::Vm::prepare(true, start)?;
    let exe = std::env::current_exe().context("locating this xtask binary")?;
    let mut script = vm::guest_preamble("`cargo xtask bench lsm` (xtask/src/bench/lsm.rs)")?;
    script.push_str(&format!(
        "PHANTOM_VM=1 {GUEST_ENV}=1 PHANTOM_XTASK_RELEASE=1 '{}' bench lsm --json\n",
        exe.to_string_lossy().replace('\'', r"'\''")
    ));
    let path = machine.dir.join("guest-bench-lsm.sh");
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    let mut line_out = None;
    let boot = machine.boot(&path, vm::GUEST_LSMS, false, Duration::from_secs(1200), |line| {
        match line.strip_prefix(MARK) {
            Some(json) => line_out = Some(json.trim().to_string()),
            None => h.note(&format!("  guest: {line}")),
        }
        Ok(())
    })?;
    if let Some(e) = vm::no_bpf_lsm(&boot, vm::GUEST_LSMS) {
        return Err(e);
    }
    if boot.status.code() != Some(0) {
        bail!("the guest's bench failed ({}); its output is above", boot.status);
    }
    let json = line_out.context("the guest printed no result line")?;
    let results: BTreeMap<String, f64> = serde_json::from_str(&json).context("the guest's result line")?;
    h.note(&format!("  VM ran {}", crate::util::secs(boot.took)));
    report(h, &results)
}

fn report(h: &Harness, r: &BTreeMap<String, f64>) -> Result<Vec<super::Case>> {
    let get = |k: &str| r.get(k).copied().with_context(|| format!("the guest did not measure `{k}`"));
    let none = get("none")?;
    let mut rows = vec![vec!["none (no program)".into(), format!("{none:.0}"), "-".into(), "-".into()]];
    let mut data = serde_json::Map::new();
    data.insert("none_ns".into(), json!(none));
    let mut ours_over = Vec::new();
    for n in SIZES {
        let (ours, outside, ll) =
            (get(&format!("bpf-lsm {n}"))?, get(&format!("outside {n}"))?, get(&format!("landlock {n}"))?);
        let (o, l) = (ours - none, ll - none);
        let ratio = o / l.max(1.0);
        rows.push(vec![
            format!("bpf-lsm, {n} rules"),
            format!("{ours:.0}"),
            format!("{o:+.0}"),
            format!("{ratio:.2}x"),
        ]);
        rows.push(vec![format!("landlock, {n} rules"), format!("{ll:.0}"), format!("{l:+.0}"), "-".into()]);
        rows.push(vec![
            format!("outside the cgroup, {n}"),
            format!("{outside:.0}"),
            format!("{:+.0}", outside - none),
            "-".into(),
        ]);
        data.insert(
            format!("rules_{n}"),
            json!({"bpf_lsm_ns": ours, "landlock_ns": ll, "outside_ns": outside, "bpf_lsm_overhead_ns": o, "landlock_overhead_ns": l, "ratio": ratio}),
        );
        ours_over.push((n, o));
        if n == 100 {
            h.check(
                "bpf-lsm overhead <= 2x Landlock's at 100 rules",
                ratio <= 2.0,
                format!("ours +{o:.0} ns, Landlock +{l:.0} ns per open: {ratio:.2}x"),
            );
        }
    }
    // Growth exponent k in overhead ~ rules^k, per step between rule
    // counts; the steepest step decides (one flat step hides nothing).
    let steps: Vec<(usize, usize, f64)> = ours_over
        .windows(2)
        .map(|w| {
            let ((a, oa), (b, ob)) = (w[0], w[1]);
            (a, b, (ob.max(1.0) / oa.max(1.0)).ln() / (b as f64 / a as f64).ln())
        })
        .collect();
    let k = steps.iter().map(|s| s.2).fold(f64::MIN, f64::max);
    let shown: Vec<String> = steps.iter().map(|(a, b, k)| format!("{a}->{b} rules: {k:.2}")).collect();
    h.check(
        "bpf-lsm overhead grows sub-linearly with the rule count (steepest step exponent < 0.9)",
        k < 0.9,
        format!(
            "overhead {}; growth exponent {}",
            ours_over.iter().map(|(n, o)| format!("+{o:.0} ns at {n}")).collect::<Vec<_>>().join(", "),
            shown.join(", ")
        ),
    );
    data.insert("growth_exponent".into(), json!(k));
    h.section(Section {
        title: "open()+close() in the VM (software emulation), median of rounds".into(),
        columns: vec!["case".into(), "ns/op".into(), "overhead".into(), "ours/Landlock".into()],
        rows,
        notes: vec![
            format!("{LOOPS} open+close per measurement, {ROUNDS} interleaved rounds; overhead = ns/op - ns/op with no program"),
            "deny rules on sibling directories never match the opened file (the trie walk stops where the path leaves it)".into(),
        ],
        json: serde_json::Value::Object(data),
    });
    Ok(Vec::new())
}

// --------------------------------------------------------------- guest side

/// A tmpfs mounted for the bench (9p/virtiofs opens would swamp the
/// numbers), unmounted and removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = PathBuf::from(format!("/run/phantom-bench-lsm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let c = CString::new(dir.as_os_str().as_encoded_bytes())?;
        let fs = CString::new("tmpfs")?;
        // SAFETY: valid NUL-terminated strings, no data argument.
        if unsafe { libc::mount(fs.as_ptr(), c.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } != 0 {
            bail!("mount tmpfs on {}: {}", dir.display(), std::io::Error::last_os_error());
        }
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid path; MNT_DETACH cannot hurt anything else.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A cgroup v2 directory, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Result<Cgroup> {
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|r| r.join("cgroup.subtree_control").exists())
            .context("no cgroup v2 hierarchy in the guest")?;
        let dir = root.join(format!("phantom-bench-lsm-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Cgroup(dir))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// What a measuring child does before its loop.
enum Setup<'a> {
    Nothing,
    JoinCgroup(&'a Path),
    Landlock(&'a phantom_ebpf::landlock::LandlockRuleset),
}

/// ns per open+close of `file`, measured in a forked child after `setup`.
fn measure(file: &Path, setup: &Setup) -> Result<f64> {
    let c = CString::new(file.as_os_str().as_encoded_bytes())?;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the guest process is single-threaded here; the child only
    // runs the setup, the loop and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let ok = match setup {
            Setup::Nothing => true,
            Setup::JoinCgroup(cg) => std::fs::write(cg.join("cgroup.procs"), "0").is_ok(),
            Setup::Landlock(spec) => phantom_user::landlock::apply(spec).is_ok(),
        };
        let mut result = -1.0f64;
        if ok {
            let t = Instant::now();
            let mut failed = false;
            for _ in 0..LOOPS {
                // SAFETY: a valid NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    failed = true;
                    break;
                }
                // SAFETY: fd is ours.
                unsafe { libc::close(fd) };
            }
            if !failed {
                result = t.elapsed().as_nanos() as f64 / LOOPS as f64;
            }
        }
        let bytes = result.to_le_bytes();
        // SAFETY: writes 8 live bytes to our pipe, then ends the child.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), 8);
            libc::_exit(0);
        }
    }
    // SAFETY: closes our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into buf.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 8) };
    // SAFETY: closes the read end; reaps the child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let v = f64::from_le_bytes(buf);
    if n != 8 || v < 0.0 {
        bail!("the measuring child could not set up or open {} (setup failed or open refused)", file.display());
    }
    Ok(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The policies of one rule count: N deny rules on siblings of the opened
/// file's directory (for BPF-LSM), and N read-only allow rules on those
/// siblings plus the file's directory (for Landlock).
fn policies(root: &Path, n: usize) -> (String, String) {
    let mut deny = String::from("profile: bench-lsm\nfilesystem:\n  rules:\n");
    let mut allow = String::from("profile: bench-landlock\nsecurity:\n  landlock:\n    paths:\n");
    allow.push_str(&format!("      - {{path: {}/work, access: read-only}}\n", root.display()));
    for i in 0..n {
        deny.push_str(&format!("    - deny: {}/rules/r{i:04}\n", root.display()));
        allow.push_str(&format!("      - {{path: {}/rules/r{i:04}, access: read-only}}\n", root.display()));
    }
    (deny, allow)
}

fn compile(name: &str, text: &str) -> Result<phantom_dsl::ir::Policy> {
    let c = phantom_dsl::compile_str(name, text);
    if c.has_errors() {
        bail!("{name} does not compile: {:#?}", c.diagnostics);
    }
    c.policy.context("no policy")
}

fn guest() -> Result<BTreeMap<String, f64>> {
    let scratch = Scratch::new()?;
    let root = scratch.0.clone();
    let file = root.join("work/a/b/target");
    std::fs::create_dir_all(file.parent().expect("has a parent"))?;
    std::fs::write(&file, b"bench\n")?;
    for i in 0..*SIZES.iter().max().expect("sizes") {
        std::fs::create_dir_all(root.join(format!("rules/r{i:04}")))?;
    }

    // Everything loaded first; the floor is measured before any attach.
    let mut loaded = Vec::new();
    for n in SIZES {
        let (deny, allow) = policies(&root, n);
        let p = compile("bench-lsm.yaml", &deny)?;
        let progs = phantom_ebpf::lsm::compile(&p, &phantom_ebpf::lsm::Options::default())
            .map_err(|e| anyhow::anyhow!("compile the {n}-rule file_open program: {e}"))?;
        let lsm = phantom_user::lsm::LoadedLsm::load(&progs)
            .map_err(|e| anyhow::anyhow!("the kernel loads the {n}-rule program: {e}"))?;
        let landlock = phantom_ebpf::landlock::compile(&compile("bench-landlock.yaml", &allow)?);
        loaded.push((n, lsm, landlock, Cgroup::new(&format!("r{n}"))?));
    }

    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..ROUNDS {
        eprintln!("phantom-bench-lsm: round {}/{ROUNDS}", round + 1);
        samples.entry("none".into()).or_default().push(measure(&file, &Setup::Nothing)?);
        for (n, lsm, landlock, cg) in &mut loaded {
            samples.entry(format!("landlock {n}")).or_default().push(measure(&file, &Setup::Landlock(landlock))?);
            lsm.attach(&cg.0).map_err(|e| anyhow::anyhow!("attach: {e}"))?;
            let inside = measure(&file, &Setup::JoinCgroup(&cg.0));
            let outside = measure(&file, &Setup::Nothing);
            lsm.detach_all();
            samples.entry(format!("bpf-lsm {n}")).or_default().push(inside?);
            samples.entry(format!("outside {n}")).or_default().push(outside?);
        }
    }
    Ok(samples.into_iter().map(|(k, v)| (k, median(v))).collect())
}
