//! The bundle's `cgroup.bpf.o` against the two loaders the project
//! promises: libbpf (`bpftool prog loadall`, a test oracle only) and aya
//! 0.14. Needs root and bpftool; a missing tool or a failed load fails the
//! test, it never skips.
//!
//! - policies/web-fetcher.yaml (allowlist mode: all seven socket programs
//!   and the device program) loads through both, and the kernel's copy of
//!   each program (`bpftool prog dump xlated ... linum`) shows the lines of
//!   `policies/web-fetcher.yaml` it implements, with their text;
//! - a generated 1,000-CIDR policy (LPM trie map) loads through bpftool;
//! - nothing leaks: the pin directory is removed and the pinned programs
//!   are gone from the kernel afterwards.
mod bpftool;
use bpftool::bpftool;

use phantom_dsl::extends::FileLoader;
use phantom_ebpf::bundle::{self, Bundle, CGROUP_OBJECT};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WEB_FETCHER: &str = "policies/web-fetcher.yaml";

struct RootLoader(PathBuf);

impl FileLoader for RootLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.join(path))
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles `text` named `name` (relative to the repository root) to a
/// bundle, with the source texts, as `phantom-policy compile` does.
fn bundle_of(name: &str, text: &str) -> Bundle {
    let c = phantom_dsl::compile_source(name, text, &RootLoader(root()));
    let policy = c.policy.unwrap_or_else(|| panic!("{name}: {:#?}", c.diagnostics.items));
    let texts: Vec<(String, String)> = c.sources.texts();
    bundle::build_with_sources(&policy, &texts).expect("the bundle builds")
}

fn object(b: &Bundle) -> Vec<u8> {
    b.files.iter().find(|(n, _)| n == CGROUP_OBJECT).expect("the bundle has cgroup.bpf.o").1.clone()
}

fn web_fetcher() -> Bundle {
    bundle_of(WEB_FETCHER, &std::fs::read_to_string(root().join(WEB_FETCHER)).unwrap())
}

/// One allowlist rule with 1,000 IPv4 /24s (more than the LPM threshold).
fn generated_1000() -> String {
    let mut t = String::from("profile: cidr-1000\nmode: sandbox\nnetwork:\n  mode: allowlist\n  egress:\n    - to: [");
    for i in 0..1000u32 {
        let sep = if i == 0 { "" } else { ", " };
        write!(t, "{sep}10.{}.{}.0/24", i / 256, i % 256).unwrap();
    }
    t += "]\n      ports: [443]\n      protocol: tcp\n";
    t
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("phantom-bundle-{tag}-{}.o", std::process::id()));
        std::fs::write(&path, bytes).expect("write object");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the pin directory even when an assertion fails midway.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        PinDir(PathBuf::from(format!("/sys/fs/bpf/phantom-test-{}-{tag}", std::process::id())))
    }
    fn path(&self, prog: &str) -> String {
        self.0.join(prog).to_str().unwrap().to_string()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The id of a pinned program.
fn pinned_id(path: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&bpftool(&["-j", "prog", "show", "pinned", path])).unwrap();
    v["id"].as_u64().unwrap_or_else(|| panic!("no id for {path}: {v}"))
}

/// Waits (the kernel frees programs after an RCU grace period) until no
/// program with one of `ids` is loaded.
fn assert_freed(ids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: serde_json::Value = serde_json::from_str(&bpftool(&["-j", "prog", "show"])).unwrap();
        let live: Vec<u64> =
            v.as_array().unwrap().iter().filter_map(|p| p["id"].as_u64()).filter(|id| ids.contains(id)).collect();
        if live.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "programs {live:?} are still loaded after their pins were removed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (program, section kind as bpftool shows it, line of web-fetcher.yaml, its text).
const WEB_FETCHER_PROGRAMS: [(&str, &str, &str); 8] = [
    ("phantom_sock", "int phantom_sock(struct bpf_sock * ctx):", "cgroup_sock"),
    ("phantom_conn4", "int phantom_conn4(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_conn6", "int phantom_conn6(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_send4", "int phantom_send4(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_send6", "int phantom_send6(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_bind4", "int phantom_bind4(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_bind6", "int phantom_bind6(struct bpf_sock_addr * ctx):", "cgroup_sock_addr"),
    ("phantom_dev", "int phantom_dev(struct bpf_cgroup_dev_ctx * ctx):", "cgroup_device"),
];

#[test]
fn bpftool_loads_the_bundle_object_and_shows_policy_lines() {
    let b = web_fetcher();
    let obj = TempFile::new("web-fetcher", &object(&b));
    let pin = PinDir::new("web-fetcher");
    let pin_str = pin.0.to_str().unwrap().to_string();
    bpftool(&["prog", "loadall", obj.0.to_str().unwrap(), &pin_str]);

    let mut ids = Vec::new();
    for (prog, proto, kind) in WEB_FETCHER_PROGRAMS {
        let path = pin.path(prog);
        assert!(Path::new(&path).exists(), "{prog} is pinned under {pin_str}");
        ids.push(pinned_id(&path));
        let show = bpftool(&["prog", "show", "pinned", &path]);
        assert!(show.contains(kind) && show.contains(prog) && show.contains("btf_id"), "{show}");
        let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &path, "linum"]);
        assert!(xlated.contains(proto), "func_info names {prog}:\n{xlated}");
        assert!(xlated.contains(&format!("[file:{WEB_FETCHER} line_num:")), "{prog} shows policy lines:\n{xlated}");
    }
    // The egress rules (lines 19, 22, 25), with their text.
    let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &pin.path("phantom_conn4"), "linum"]);
    eprintln!("{xlated}");
    for needle in [
        format!("- to: [198.51.100.0/24, 2001:db8:100::/48] [file:{WEB_FETCHER} line_num:19 line_col:7]"),
        format!("- to: 192.0.2.53 [file:{WEB_FETCHER} line_num:22 line_col:7]"),
        format!("- to: 203.0.113.0/24 [file:{WEB_FETCHER} line_num:25 line_col:7]"),
    ] {
        assert!(xlated.contains(&needle), "missing `{needle}` in:\n{xlated}");
    }
    let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &pin.path("phantom_dev"), "linum"]);
    assert!(xlated.contains(&format!("[file:{WEB_FETCHER} line_num:")), "{xlated}");

    drop(pin);
    assert!(!Path::new(&pin_str).exists(), "pin directory {pin_str} is removed");
    assert_freed(&ids);
}

#[test]
fn bpftool_loads_a_1000_cidr_object_with_its_lpm_trie() {
    let b = bundle_of("cidr-1000.yaml", &generated_1000());
    assert!(b.files.iter().any(|(n, _)| n == bundle::CGROUP_MAPS), "the trie's contents are in the bundle");
    let obj = TempFile::new("cidr-1000", &object(&b));
    let pin = PinDir::new("cidr-1000");
    let pin_str = pin.0.to_str().unwrap().to_string();
    bpftool(&["prog", "loadall", obj.0.to_str().unwrap(), &pin_str]);
    let path = pin.path("phantom_conn4");
    let ids = vec![pinned_id(&path)];
    let show = bpftool(&["prog", "show", "pinned", &path]);
    assert!(show.contains("map_ids"), "connect4 uses the LPM trie:\n{show}");
    drop(pin);
    assert!(!Path::new(&pin_str).exists());
    assert_freed(&ids);
}

#[test]
fn aya_loads_the_bundle_object() {
    let bytes = object(&web_fetcher());
    let mut ebpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya parses the object: {e:?}"));
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    let mut ids = Vec::new();
    for (prog, proto, _) in WEB_FETCHER_PROGRAMS {
        assert!(names.iter().any(|n| n == prog), "aya lists {prog}: {names:?}");
        let p = ebpf.program_mut(prog).unwrap();
        let info = match prog {
            "phantom_sock" => {
                let p: &mut aya::programs::CgroupSock = p.try_into().expect("cgroup/sock_create");
                p.load().unwrap_or_else(|e| panic!("the kernel accepts {prog} through aya: {e:?}"));
                p.info().unwrap()
            }
            "phantom_dev" => {
                let p: &mut aya::programs::CgroupDevice = p.try_into().expect("cgroup/dev");
                p.load().unwrap_or_else(|e| panic!("the kernel accepts {prog} through aya: {e:?}"));
                p.info().unwrap()
            }
            _ => {
                let p: &mut aya::programs::CgroupSockAddr = p.try_into().expect("cgroup sock_addr");
                p.load().unwrap_or_else(|e| panic!("the kernel accepts {prog} through aya: {e:?}"));
                p.info().unwrap()
            }
        };
        assert!(info.btf_id().is_some(), "aya loaded {prog} with its BTF");
        let id = info.id();
        ids.push(u64::from(id));
        let xlated = bpftool(&["prog", "dump", "xlated", "id", &id.to_string(), "linum"]);
        assert!(xlated.contains(proto), "{xlated}");
        assert!(
            xlated.contains(&format!("[file:{WEB_FETCHER} line_num:")),
            "{prog} via aya shows policy lines:\n{xlated}"
        );
    }
    drop(ebpf);
    assert_freed(&ids);
}
