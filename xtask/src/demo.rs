//! The sandbox demo of `cargo xtask run`: the reference profile's runnable
//! sibling runs a Python script that tries one allowed action and several
//! forbidden ones, and the enforcement report shows what stopped each.

use anyhow::{bail, Context, Result};
use phantom_user::apply::LoadedBundle;
use phantom_user::spawn::{self, SpawnRequest};
use std::path::Path;
use std::time::Duration;

/// The script run inside the sandbox. Each line of its output is one attempt.
const SCRIPT: &str = r#"
import errno, os, socket

def attempt(what, action):
    try:
        result = action()
        print(f"ALLOWED  {what}: {result}")
    except OSError as e:
        print(f"DENIED   {what}: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")

def write_workspace():
    with open("/workspace/result.txt", "w") as f:
        f.write(str(sum(range(10))))
    return "wrote /workspace/result.txt = " + open("/workspace/result.txt").read()

def read_host_secret():
    return open("/etc/shadow").read()[:10]

def list_root():
    return os.listdir("/")

def write_usr():
    open("/usr/lib/phantom-was-here", "w").write("x")

def connect_out():
    socket.create_connection(("127.0.0.1", 22), timeout=1)

def host_processes():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if len(pids) > 2:
        return f"{len(pids)} processes visible"
    raise OSError(errno.ESRCH, f"only {pids} visible (own pid namespace)")

attempt("compute and write in the workspace", write_workspace)
attempt("read /etc/shadow", read_host_secret)
attempt("list /", list_root)
attempt("write under /usr", write_usr)
attempt("open a TCP connection", connect_out)
attempt("see host processes", host_processes)
"#;

/// The policy the demo uses, and why.
const POLICY: &str = "policies/python-runnable.yaml";

pub fn run(root: &Path) -> Result<()> {
    println!("━━ sandbox demo {}", "━".repeat(55));
    println!(
        "policies/python-ai-turbo.yaml cannot exec a program (its seccomp allow-list lacks execve and the\n\
         loader's syscalls: see its P0204 warning), so the demo runs its runnable sibling {POLICY}."
    );
    let c = phantom_dsl::compile_file(&root.join(POLICY)).with_context(|| format!("reading {POLICY}"))?;
    let Some(policy) = c.policy else { bail!("{POLICY} has errors") };
    let bundle = LoadedBundle::from_bundle(&phantom_ebpf::bundle::build(&policy)?)?;
    let workspace = std::env::temp_dir().join(format!("phantom-demo-{}", std::process::id()));
    std::fs::create_dir_all(&workspace)?;
    std::fs::write(workspace.join("demo.py"), SCRIPT)?;
    // The sandbox's root maps to this uid; let it write its workspace.
    let uid = phantom_user::spawn::SANDBOX_ID_BASE;
    for p in [workspace.clone(), workspace.join("demo.py")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid))?;
    }
    let req = SpawnRequest {
        argv: vec!["python3".into(), "/workspace/demo.py".into()],
        env: vec![],
        workspace: Some(workspace.clone()),
        timeout: Some(Duration::from_secs(30)),
        output_cap: 1 << 16,
    };
    let result = spawn::run(&policy, &bundle, &req);
    let _ = std::fs::remove_dir_all(&workspace);
    let r = result?;
    println!("$ phantom run --policy {POLICY} -- python3 /workspace/demo.py");
    print!("{}", r.stdout);
    if !r.stderr.is_empty() {
        println!("stderr:\n{}", r.stderr);
    }
    println!(
        "exit {} in {:.1} ms (mode {}, max RSS {} KiB)",
        r.exit_code.map_or_else(|| format!("by signal {}", r.signal.unwrap_or(0)), |c| c.to_string()),
        r.duration_ms,
        r.mode,
        r.max_rss_kib
    );
    println!("enforcement report:");
    for l in &r.enforcement {
        println!(
            "  {:<14} {:<8} {}",
            l.layer,
            format!("{:?}", l.enforcement).to_lowercase(),
            l.reason.as_deref().unwrap_or("")
        );
    }
    let allowed = r.stdout.lines().filter(|l| l.starts_with("ALLOWED")).count();
    let denied = r.stdout.lines().filter(|l| l.starts_with("DENIED")).count();
    if r.exit_code != Some(0) || allowed != 1 || denied != 5 {
        bail!("the demo expected 1 allowed and 5 denied attempts, got {allowed} and {denied} (exit {:?})", r.exit_code);
    }
    println!("demo: 1 allowed action worked, 5 forbidden ones were denied");
    Ok(())
}
