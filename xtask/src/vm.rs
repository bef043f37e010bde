//! `cargo xtask vm-test`: the VM test tier (BPF-LSM on a real kernel).
//!
//! The host kernel refuses `BPF_PROG_TYPE_LSM` programs, so the tests that
//! need BPF-LSM run in a VM (see ../shared/design/BRIEF.md and README.md,
//! "The VM tier"):
//!
//! 1. installs what it needs, once, caching everything: the Debian
//!    packages of [`deps::VM_PACKAGES`] (apt), Debian's 6.12 kernel image
//!    (downloaded with `apt-get download` and unpacked under `target/vm/`,
//!    never installed as the host's kernel), and virtme-ng from PyPI into a
//!    venv under `target/vm/venv` (pinned to [`VNG_VERSION`]);
//! 2. builds the VM test binaries on the host (phantom-user's `vm-tests`
//!    feature), boots the kernel once with virtme-ng
//!    (`vng --disable-kvm --append lsm=landlock,lockdown,yama,bpf`), and runs
//!    every test binary inside that one boot with `PHANTOM_VM=1`, streaming
//!    the guest's output. The guest sees the host's filesystem, so the
//!    binaries run unchanged.
//!
//! It fails, never skips, when BPF-LSM is not active in the guest.

use crate::{deps, util};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// virtme-ng from PyPI, pinned: its command line and guest init are what
/// this harness was written against.
pub const VNG_VERSION: &str = "1.42";

/// The Debian meta-package whose dependency names the current 6.12 image
/// (bookworm-security carries `linux-image-6.12.*+deb12-amd64`; only the
/// newest build stays downloadable, so the version is resolved, not pinned).
const KERNEL_META: &str = "linux-image-6.12-amd64";

/// The guest kernel's `lsm=`: BPF-LSM on, next to the LSMs Debian enables.
pub const GUEST_LSMS: &str = "landlock,lockdown,yama,bpf";

/// Guest resources: software emulation (`--disable-kvm`: KVM fails on an
/// MSR on the CI machines) boots in ~20 s. One vCPU: with two, qemu's
/// emulation occasionally lets one vCPU run code the other is patching
/// (the kernel rewrites its own text for static keys at boot and for
/// BPF trampolines when the first lsm_cgroup program of a hook attaches
/// or the last detaches), and the guest dies of an `int3` Oops (seen at
/// boot in `sched_clock_cpu` and in `bpf_lsm_file_open`). One vCPU costs
/// ~45 s per run of the tier.
const GUEST_MEMORY: &str = "2G";
const GUEST_CPUS: &str = "1";

/// Exit status of the guest script when BPF-LSM is not active.
const EXIT_NO_BPF_LSM: i32 = 90;

/// The VM test binaries: (package, integration test target). All run in
/// one boot, in this order. Their package must have the `vm-tests` feature.
const VM_TESTS: &[(&str, &str)] = &[("phantom-user", "vm_lsm"), ("phantom-cli", "vm_audit")];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not install anything: fail (with the commands to run) if a package, the kernel or virtme-ng is missing.
    #[arg(long)]
    no_deps: bool,
    /// Show the guest kernel's console (vng --verbose).
    #[arg(long)]
    verbose: bool,
    /// The guest kernel's `lsm=` list. Only for checking the harness itself:
    /// without `bpf` the tier must fail.
    #[arg(long, default_value = GUEST_LSMS)]
    lsm: String,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Arguments for every test binary in the guest (a test name filter, --nocapture, ...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// What the guest's test binaries reported, summed over their
/// `test result:` lines.
pub type VmCounts = util::TestCounts;

/// How `run` behaves; `cargo xtask test` uses the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub install: bool,
    pub verbose: bool,
    pub lsm: String,
    pub timeout: Duration,
    pub test_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            install: true,
            verbose: false,
            lsm: GUEST_LSMS.into(),
            timeout: Duration::from_secs(1200),
            test_args: Vec::new(),
        }
    }
}

pub fn main(args: &Args) -> Result<ExitCode> {
    let opts = Options {
        install: !args.no_deps,
        verbose: args.verbose,
        lsm: args.lsm.clone(),
        timeout: Duration::from_secs(args.timeout),
        test_args: args.test_args.clone(),
    };
    let start = Instant::now();
    let counts = run(&opts)?;
    println!(
        "xtask vm-test: OK in {}: {} passed, {} failed, {} ignored in {} suites",
        util::secs(start.elapsed()),
        counts.passed,
        counts.failed,
        counts.ignored,
        counts.suites
    );
    Ok(ExitCode::SUCCESS)
}

/// The whole tier: install, build, boot once, run every VM test binary.
/// An error names what failed; `Ok` means every guest test passed.
pub fn run(opts: &Options) -> Result<VmCounts> {
    let start = Instant::now();
    let vm = Vm::prepare(opts.install, start)?;
    phase("VM test binaries", start);
    let binaries = build_tests()?;
    phase("boot and test", start);
    let script = write_guest_script(&vm.dir, &binaries, &opts.test_args)?;
    boot_and_test(&vm, &script, opts)
}

/// Everything a boot needs, installed and cached: the guest kernel and
/// virtme-ng (`cargo xtask bench lsm` boots the same VM).
#[derive(Debug)]
pub struct Vm {
    /// `target/vm`, canonical: the guest sees the host's filesystem, so
    /// scripts written here run inside.
    pub dir: PathBuf,
    vng: PathBuf,
    kernel: Kernel,
}

/// The guest kernel never reached the test script (it panicked or hung
/// while booting).
#[derive(Debug)]
pub struct NeverStarted(String);

impl std::fmt::Display for NeverStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest never ran its script ({}); rerun with `cargo xtask vm-test --verbose` to see the guest \
             kernel's console",
            self.0
        )
    }
}

impl std::error::Error for NeverStarted {}

/// How a boot ended.
#[derive(Debug)]
pub struct Boot {
    pub status: std::process::ExitStatus,
    /// The guest's active LSMs, as the script printed them.
    pub lsms: Option<String>,
    pub took: Duration,
}

impl Vm {
    /// Root check, then packages, kernel and virtme-ng (each a phase).
    pub fn prepare(install: bool, start: Instant) -> Result<Vm> {
        if !util::is_root() {
            let packages: Vec<&str> = deps::VM_PACKAGES.iter().map(|p| p.name).collect();
            bail!(
                "the VM tier must run as root: it installs Debian packages, and the programs inside the \
                 guest load BPF programs as the user that started the VM. Run:\n    \
                 sudo env \"PATH=$PATH\" cargo xtask vm-test\n\
                 (the first run installs `apt-get install -y --no-install-recommends {}`, downloads \
                 Debian's {KERNEL_META} kernel into target/vm/kernel/ without installing it, and \
                 virtme-ng {VNG_VERSION} from PyPI into target/vm/venv/)",
                packages.join(" ")
            );
        }
        let dir = util::target_dir().join("vm");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        phase("system packages", start);
        ensure_packages(install)?;
        phase("guest kernel", start);
        let kernel = ensure_kernel(&dir, install)?;
        phase("virtme-ng", start);
        let vng = ensure_vng(&dir, install)?;
        Ok(Vm { dir, vng, kernel })
    }

    /// Boots once with `lsm=` `lsm` and runs `sh script` as the guest's
    /// command; every stdout line of the guest goes to `on_line` (stderr is
    /// copied to ours). Killed after `timeout`. Fails when the guest never
    /// started the script or ran out of time; the script's status is in
    /// [`Boot::status`].
    pub fn boot(
        &self,
        script: &Path,
        lsm: &str,
        verbose: bool,
        timeout: Duration,
        mut on_line: impl FnMut(&str) -> Result<()>,
    ) -> Result<Boot> {
        let bin_dir = self.vng.parent().expect("vng is in venv/bin");
        // vng starts `virtme-run` through PATH.
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut dirs = vec![bin_dir.to_path_buf()];
                dirs.extend(std::env::split_paths(&p));
                std::env::join_paths(dirs)?
            }
            None => bin_dir.as_os_str().to_owned(),
        };
        let mut cmd = Command::new(&self.vng);
        cmd.arg("--run").arg(&self.kernel.vmlinuz).args([
            "--disable-kvm",
            "--memory",
            GUEST_MEMORY,
            "--cpus",
            GUEST_CPUS,
            "--append",
        ]);
        cmd.arg(format!("lsm={lsm}"));
        if verbose {
            cmd.arg("--verbose");
        }
        cmd.arg("--").arg(format!("sh {}", sh_quote(&script.to_string_lossy())));
        // Both outputs through pipes: qemu reopens them (`-chardev
        // file,path=/proc/self/fd/N`) with O_TRUNC, which would empty a log
        // file that `cargo xtask test > log` writes to.
        cmd.env("PATH", path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, so that the time limit ends vng, virtme-run
        // and qemu together.
        cmd.process_group(0);
        let shown = util::display(&cmd);
        println!(
            "  booting {} (release {}) under software emulation, time limit {}s",
            self.kernel.package,
            self.kernel.release,
            timeout.as_secs()
        );
        println!("$ {shown}");
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("could not start `{shown}`"))?;
        let pgid = child.id() as i32;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                eprintln!("xtask: the VM ran past {}s; killing it", timeout.as_secs());
                // SAFETY: signals the process group we created for vng.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                true
            } else {
                false
            }
        });

        let stderr = child.stderr.take().expect("stderr is piped");
        let copier = std::thread::spawn(move || {
            let mut err = std::io::stderr();
            let _ = std::io::copy(&mut BufReader::new(stderr), &mut err);
        });

        let mut guest_up = None;
        let mut lsms = None;
        let stdout = child.stdout.take().expect("stdout is piped");
        let read = || -> Result<()> {
            for line in BufReader::new(stdout).lines() {
                let line = line.context("reading the guest's output")?;
                if line.starts_with("phantom-vm: guest up") && guest_up.is_none() {
                    guest_up = Some(started.elapsed());
                }
                if let Some(l) = line.strip_prefix("phantom-vm: active LSMs: ") {
                    lsms = Some(l.to_string());
                }
                on_line(&line)?;
            }
            Ok(())
        };
        let read = read();
        if read.is_err() {
            // SAFETY: as above; the caller gave up on this boot.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let status = child.wait()?;
        let _ = done_tx.send(());
        let _ = copier.join();
        let timed_out = watchdog.join().unwrap_or(false);
        read?;
        let took = started.elapsed();
        if let Some(up) = guest_up {
            println!("  guest script started {} after launch; VM ran {}", util::secs(up), util::secs(took));
        }
        if timed_out {
            bail!("the VM was killed after the {}s time limit", timeout.as_secs());
        }
        if guest_up.is_none() {
            return Err(NeverStarted(format!(
                "{status}{}",
                status.signal().map_or(String::new(), |s| format!(", signal {s}"))
            ))
            .into());
        }
        Ok(Boot { status, lsms, took })
    }
}

/// The guest script's preamble: announce the guest, check that BPF-LSM is
/// active (exit [`EXIT_NO_BPF_LSM`] if not) and enter the workspace.
pub fn guest_preamble(writer: &str) -> Result<String> {
    let root = std::env::current_dir()?;
    let mut s = String::new();
    s.push_str(&format!("#!/bin/sh\n# Written by {writer}; runs inside the VM.\n"));
    s.push_str("echo \"phantom-vm: guest up: Linux $(uname -r)\"\n");
    s.push_str(
        "if [ ! -e /sys/kernel/security/lsm ]; then\n  \
           mount -t securityfs securityfs /sys/kernel/security || echo 'phantom-vm: cannot mount securityfs'\n\
         fi\n\
         lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)\n\
         echo \"phantom-vm: active LSMs: ${lsm:-<cannot read /sys/kernel/security/lsm>}\"\n",
    );
    s.push_str(&format!(
        "case \",$lsm,\" in\n  *,bpf,*) ;;\n  *) echo 'phantom-vm: BPF-LSM is NOT active in the guest'; exit {EXIT_NO_BPF_LSM};;\nesac\n"
    ));
    s.push_str(&format!("cd {} || exit 91\n", sh_quote(&root.to_string_lossy())));
    Ok(s)
}

/// The error for a guest script that exited [`EXIT_NO_BPF_LSM`].
pub fn no_bpf_lsm(boot: &Boot, lsm: &str) -> Option<anyhow::Error> {
    (boot.status.code() == Some(EXIT_NO_BPF_LSM)).then(|| {
        anyhow::anyhow!(
            "BPF-LSM is not active in the guest (active LSMs: {}); the kernel was booted with `lsm={lsm}`",
            boot.lsms.as_deref().unwrap_or("unknown"),
        )
    })
}

/// Announces a phase, with the time since the tier started.
fn phase(name: &str, start: Instant) {
    println!("--> vm: {name} (at {})", util::secs(start.elapsed()));
}

fn ensure_packages(install: bool) -> Result<()> {
    if install {
        return deps::ensure(deps::VM_PACKAGES);
    }
    let missing = deps::missing(deps::VM_PACKAGES)?;
    if !missing.is_empty() {
        bail!(
            "missing system packages (and --no-deps was given); run:\n    apt-get update && \
             apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The guest kernel, unpacked from Debian's package under
/// `target/vm/kernel/<package>/` (`boot/vmlinuz-<release>` and
/// `lib/modules/<release>/`, indexed with depmod; virtme-ng finds the
/// modules next to the image and shares them with the guest).
#[derive(Debug)]
struct Kernel {
    vmlinuz: PathBuf,
    release: String,
    package: String,
}

/// Marker written last: its presence means the unpacked tree is complete.
const COMPLETE: &str = ".phantom-complete";

fn cached_kernel(kernel_root: &Path) -> Result<Option<Kernel>> {
    let Ok(dir) = std::fs::read_dir(kernel_root) else { return Ok(None) };
    let mut found = Vec::new();
    for entry in dir {
        let path = entry?.path();
        if path.join(COMPLETE).is_file() {
            found.push(path);
        }
    }
    found.sort();
    let Some(tree) = found.pop() else { return Ok(None) };
    let package = tree.file_name().unwrap_or_default().to_string_lossy().into_owned();
    kernel_in(&tree, package).map(Some)
}

/// The image and release of an unpacked kernel package.
fn kernel_in(tree: &Path, package: String) -> Result<Kernel> {
    let boot = tree.join("boot");
    for entry in std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok(Kernel { release: release.to_string(), vmlinuz: path, package });
        }
    }
    bail!("{} has no vmlinuz-*", boot.display())
}

/// The versioned image package the meta-package depends on today.
fn resolve_kernel_package() -> Result<Option<String>> {
    let out = Command::new("apt-cache").args(["depends", "--no-recommends", "--no-suggests", KERNEL_META]).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-6.12.") && p.ends_with("-amd64"))
        .map(str::to_string))
}

fn ensure_kernel(vm_dir: &Path, install: bool) -> Result<Kernel> {
    let kernel_root = vm_dir.join("kernel");
    if let Some(k) = cached_kernel(&kernel_root)? {
        println!("  cached: {} ({})", k.package, k.vmlinuz.display());
        return Ok(k);
    }
    if !install {
        bail!(
            "the guest kernel is not in {} (and --no-deps was given); run `cargo xtask vm-test`",
            kernel_root.display()
        );
    }
    let package = match resolve_kernel_package()? {
        Some(p) => p,
        None => {
            println!("  apt does not know {KERNEL_META} yet: updating the package lists");
            util::run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
            resolve_kernel_package()?.with_context(|| {
                format!(
                    "apt-cache finds no linux-image-6.12.*-amd64 behind {KERNEL_META}: it is in Debian 12's \
                     bookworm-security suite; add `bookworm-security main` to the apt sources"
                )
            })?
        }
    };
    println!("  downloading {package} (about 100 MB; unpacked under {}, not installed)", kernel_root.display());
    let download = vm_dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    // As root, apt drops to `_apt` to download, which cannot write here;
    // downloading as root is what it would fall back to (with a warning).
    util::run(
        Command::new("apt-get")
            .args(["download", "-o", "APT::Sandbox::User=root", &package])
            .current_dir(&download)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    let partial = kernel_root.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    let k = kernel_in(&partial, package.clone())?;
    // Debian's package leaves modules.dep to its postinst; virtme-ng needs
    // it to find 9p and overlay for the guest's root.
    util::run(Command::new("depmod").arg("-a").arg("-b").arg(&partial).arg(&k.release))?;
    let dep = partial.join("lib/modules").join(&k.release).join("modules.dep");
    if !dep.is_file() {
        bail!("depmod did not write {}", dep.display());
    }
    std::fs::write(partial.join(COMPLETE), format!("{package}\n{}\n", deb.display()))?;
    let tree = kernel_root.join(&package);
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(&partial, &tree)?;
    std::fs::remove_dir_all(&download)?;
    let k = kernel_in(&tree, package)?;
    println!("  unpacked: {} (release {})", k.vmlinuz.display(), k.release);
    Ok(k)
}

/// `target/vm/venv/bin/vng`, installed from PyPI at [`VNG_VERSION`] if the
/// venv does not have exactly that version.
fn ensure_vng(vm_dir: &Path, install: bool) -> Result<PathBuf> {
    let venv = vm_dir.join("venv");
    let vng = venv.join("bin/vng");
    let python = venv.join("bin/python3");
    let installed = || {
        Command::new(&python)
            .args(["-c", "import importlib.metadata as m; print(m.version('virtme-ng'))"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(v) = installed() {
        if v == VNG_VERSION && vng.is_file() {
            println!("  cached: virtme-ng {v} in {}", venv.display());
            return Ok(vng);
        }
        println!("  {} has virtme-ng {v}, want {VNG_VERSION}", venv.display());
    }
    if !install {
        bail!(
            "virtme-ng {VNG_VERSION} is not in {} (and --no-deps was given); run `cargo xtask vm-test`",
            venv.display()
        );
    }
    // Debian's interpreter (python3-venv is in VM_PACKAGES), not whatever
    // python3 comes first on PATH.
    let system_python = if Path::new("/usr/bin/python3").is_file() { "/usr/bin/python3" } else { "python3" };
    println!("  installing virtme-ng {VNG_VERSION} from PyPI into {}", venv.display());
    util::run(Command::new(system_python).args(["-m", "venv", "--clear"]).arg(&venv))?;
    util::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("virtme-ng=={VNG_VERSION}"),
    ]))?;
    match installed() {
        Some(v) if v == VNG_VERSION && vng.is_file() => Ok(vng),
        other => bail!("pip finished but {} has virtme-ng {other:?}, want {VNG_VERSION}", venv.display()),
    }
}

/// Builds the VM test binaries with cargo and returns their paths (from
/// cargo's JSON messages).
fn build_tests() -> Result<Vec<(String, PathBuf)>> {
    let mut binaries = Vec::new();
    for &(package, test) in VM_TESTS {
        let mut cmd = util::cargo();
        cmd.args([
            "test",
            "--no-run",
            "-p",
            package,
            "--features",
            "vm-tests",
            "--test",
            test,
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
        let shown = util::display(&cmd);
        println!("$ {shown}");
        let out = cmd.spawn().and_then(|c| c.wait_with_output()).with_context(|| format!("could not run `{shown}`"))?;
        if !out.status.success() {
            bail!("`{shown}` failed ({})", out.status);
        }
        let mut exe = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == test
                && msg["profile"]["test"] == true
                && msg["executable"].is_string()
            {
                exe = msg["executable"].as_str().map(PathBuf::from);
            }
        }
        let exe = exe.with_context(|| format!("`{shown}` named no executable for test `{test}`"))?;
        println!("  {package} --test {test}: {}", exe.display());
        binaries.push((format!("{package}/{test}"), exe));
    }
    Ok(binaries)
}

/// `'text'` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest runs: the [`guest_preamble`], then every test
/// binary.
fn write_guest_script(vm_dir: &Path, binaries: &[(String, PathBuf)], test_args: &[String]) -> Result<PathBuf> {
    let args: Vec<String> = test_args.iter().map(|a| sh_quote(a)).collect();
    let mut s = guest_preamble("`cargo xtask vm-test` (xtask/src/vm.rs)")?;
    s.push_str("status=0\n");
    for (name, exe) in binaries {
        s.push_str(&format!(
            "echo 'phantom-vm: running {name}'\nPHANTOM_VM=1 {} {} || status=1\n",
            sh_quote(&exe.to_string_lossy()),
            args.join(" ")
        ));
    }
    s.push_str("echo \"phantom-vm: tests done (status $status)\"\nexit $status\n");
    let path = vm_dir.join("guest-run.sh");
    std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn boot_and_test(vm: &Vm, script: &Path, opts: &Options) -> Result<VmCounts> {
    let mut counts;
    let mut out = std::io::stdout();
    let mut attempt = 0;
    let boot = loop {
        attempt += 1;
        counts = VmCounts::default();
        let boot = vm.boot(script, &opts.lsm, opts.verbose, opts.timeout, |line| {
            counts.add_line(line);
            writeln!(out, "{line}")?;
            Ok(out.flush()?)
        });
        match boot {
            // Only a guest that died before running anything of ours is
            // booted again (once): nothing was tested, so nothing is hidden.
            Err(e) if attempt == 1 && e.downcast_ref::<NeverStarted>().is_some() => {
                println!("xtask: {e}; booting once more");
            }
            other => break other?,
        }
    };
    if let Some(e) = no_bpf_lsm(&boot, &opts.lsm) {
        return Err(e);
    }
    if boot.status.code() != Some(0) {
        bail!(
            "VM tests failed ({}): {} passed, {} failed, {} ignored",
            boot.status,
            counts.passed,
            counts.failed,
            counts.ignored
        );
    }
    if counts.suites as usize != VM_TESTS.len() {
        bail!("expected {} `test result:` lines from the guest, saw {}", VM_TESTS.len(), counts.suites);
    }
    if counts.passed == 0 {
        bail!("the guest ran no tests (a filter that matches nothing?)");
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn counts_libtest_lines() {
        let mut c = VmCounts::default();
        c.add_line("test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 3.64s");
        c.add_line("phantom-vm: running phantom-user/vm_lsm");
        assert_eq!((c.passed, c.failed, c.ignored, c.suites), (2, 0, 1, 1));
    }
}
