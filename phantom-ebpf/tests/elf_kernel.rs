//! Objects written by `elf::ObjectBuilder` against the two loaders the
//! project promises: libbpf (Debian's bpftool, a test oracle only) and
//! aya 0.14 (what phantom-user loads with). Needs root and bpftool; a
//! missing tool or a failed load fails the test, it never skips.
//!
//! The object holds an XDP program that looks up an array map and returns
//! XDP_PASS, and a cgroup/sock_create program returning 1, both annotated
//! with lines of a small policy file; `bpftool prog dump xlated linum`
//! must show those lines.
mod bpftool;
use bpftool::bpftool;

use phantom_ebpf::bpf::{encode, Helper, Insn, Reg::*, SourceLoc};
use phantom_ebpf::elf::{MapDef, ObjectBuilder, Program, BPF_MAP_TYPE_ARRAY};
use std::path::{Path, PathBuf};

const POLICY_PATH: &str = "policies/elf-test.yaml";
const POLICY: &str = "\
version: 1
network:
  xdp: count-and-pass
sockets:
  create: allow
  connect: allow
devices: allow
";

fn object() -> Vec<u8> {
    let loc = |line, col| SourceLoc::new(POLICY_PATH, line, col);
    let xdp = encode(&[
        Insn::st_w(R10, -4, 0).at(loc(3, 3)),
        Insn::mov64_reg(R2, R10),
        Insn::add64_imm(R2, -4),
        Insn::ld_map(R1, "packets"),
        Insn::call(Helper::MapLookupElem),
        Insn::jeq_imm(R0, 0, "out"),
        Insn::mov64_imm(R1, 1).at(loc(3, 8)),
        Insn::atomic_add_dw(R0, 0, R1),
        Insn::mov64_imm(R0, 2).label("out").at(loc(2, 1)), // XDP_PASS
        Insn::exit(),
    ])
    .expect("xdp program encodes");
    let allow = |line| encode(&[Insn::mov64_imm(R0, 1).at(loc(line, 3)), Insn::exit()]).expect("allow-all encodes");
    ObjectBuilder::new("GPL")
        .map(MapDef::new("packets", BPF_MAP_TYPE_ARRAY, 4, 8, 1))
        .program(Program::new("xdp", "count_pass", xdp))
        .program(Program::new("cgroup/sock_create", "sock_allow", allow(5)))
        .program(Program::new("cgroup/connect4", "connect_allow", allow(6)))
        // A second program in the same section (libbpf's multi-program sections).
        .program(Program::new("cgroup/sock_create", "sock_allow_too", allow(5)))
        .program(Program::new("cgroup/dev", "dev_allow", allow(7)))
        .source(POLICY_PATH, POLICY)
        .build()
        .expect("object builds")
}

/// Removes the pin directory even when an assertion fails midway.
struct PinDir(PathBuf);

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

/// The object in a temporary file, removed on drop.
struct TempObject(PathBuf);

impl TempObject {
    fn new() -> TempObject {
        let path = std::env::temp_dir().join(format!("phantom-elf-{}.o", std::process::id()));
        std::fs::write(&path, object()).expect("write object");
        TempObject(path)
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn bpftool_loads_the_object_and_shows_policy_lines() {
    let obj = TempObject::new();
    let pin = PinDir(PathBuf::from(format!("/sys/fs/bpf/phantom-test-{}", std::process::id())));
    let pin_str = pin.0.to_str().unwrap().to_string();
    bpftool(&["prog", "loadall", obj.0.to_str().unwrap(), &pin_str]);
    drop(obj);

    for prog in ["count_pass", "sock_allow", "sock_allow_too", "connect_allow", "dev_allow"] {
        assert!(pin.0.join(prog).exists(), "{prog} is pinned under {pin_str}");
    }
    let show = bpftool(&["prog", "show", "pinned", &format!("{pin_str}/count_pass")]);
    assert!(show.contains("xdp") && show.contains("count_pass"), "{show}");
    assert!(show.contains("btf_id"), "the program was loaded with BTF:\n{show}");
    let show = bpftool(&["prog", "show", "pinned", &format!("{pin_str}/sock_allow")]);
    assert!(show.contains("cgroup_sock") && show.contains("sock_allow"), "{show}");

    let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &format!("{pin_str}/count_pass"), "linum"]);
    eprintln!("{xlated}");
    assert!(xlated.contains("int count_pass(struct xdp_md * ctx):"), "func_info names the program:\n{xlated}");
    for needle in [
        format!("xdp: count-and-pass [file:{POLICY_PATH} line_num:3 line_col:3]"),
        format!("xdp: count-and-pass [file:{POLICY_PATH} line_num:3 line_col:8]"),
        format!("network: [file:{POLICY_PATH} line_num:2 line_col:1]"),
    ] {
        assert!(xlated.contains(&needle), "missing `{needle}` in:\n{xlated}");
    }
    assert!(xlated.contains("map[id:"), "the map load was relocated:\n{xlated}");

    let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &format!("{pin_str}/sock_allow"), "linum"]);
    assert!(xlated.contains("int sock_allow(struct bpf_sock * ctx):"), "{xlated}");
    assert!(xlated.contains(&format!("create: allow [file:{POLICY_PATH} line_num:5 line_col:3]")), "{xlated}");

    for (prog, proto, line) in [
        ("connect_allow", "int connect_allow(struct bpf_sock_addr * ctx):", "connect: allow"),
        ("dev_allow", "int dev_allow(struct bpf_cgroup_dev_ctx * ctx):", "devices: allow"),
        ("sock_allow_too", "int sock_allow_too(struct bpf_sock * ctx):", "create: allow"),
    ] {
        let xlated = bpftool(&["prog", "dump", "xlated", "pinned", &format!("{pin_str}/{prog}"), "linum"]);
        assert!(xlated.contains(proto) && xlated.contains(line), "{xlated}");
    }

    drop(pin);
    let gone = Path::new(&pin_str);
    assert!(!gone.exists(), "pin directory {pin_str} is removed");
}

#[test]
fn aya_loads_the_object() {
    let bytes = object();
    let mut ebpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya parses and creates maps: {e:?}"));
    {
        let map = ebpf.map("packets").expect("aya finds map `packets`");
        let array = aya::maps::Array::<_, u64>::try_from(map).expect("`packets` is an array of u64");
        assert_eq!(array.len(), 1);
        assert_eq!(array.get(&0, 0).expect("read slot 0"), 0);
    }
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for prog in ["count_pass", "sock_allow", "sock_allow_too", "connect_allow", "dev_allow"] {
        assert!(names.iter().any(|n| n == prog), "aya lists {prog}: {names:?}");
    }

    let xdp: &mut aya::programs::Xdp =
        ebpf.program_mut("count_pass").expect("count_pass").try_into().expect("count_pass is XDP");
    xdp.load().unwrap_or_else(|e| panic!("the kernel accepts count_pass through aya: {e:?}"));
    let info = xdp.info().expect("program info");
    assert!(info.btf_id().is_some(), "aya loaded count_pass with its BTF");
    // aya passes line_info too: the kernel's copy shows the policy lines.
    let xlated = bpftool(&["prog", "dump", "xlated", "id", &info.id().to_string(), "linum"]);
    assert!(xlated.contains(&format!("xdp: count-and-pass [file:{POLICY_PATH} line_num:3 line_col:3]")), "{xlated}");

    let sock: &mut aya::programs::CgroupSock =
        ebpf.program_mut("sock_allow").expect("sock_allow").try_into().expect("sock_allow is cgroup/sock");
    sock.load().unwrap_or_else(|e| panic!("the kernel accepts sock_allow through aya: {e:?}"));
    // The second program of a section: aya rebases its func_info and line_info.
    let sock: &mut aya::programs::CgroupSock =
        ebpf.program_mut("sock_allow_too").expect("sock_allow_too").try_into().expect("sock_allow_too is cgroup/sock");
    sock.load().unwrap_or_else(|e| panic!("the kernel accepts sock_allow_too through aya: {e:?}"));
    let id = sock.info().expect("program info").id().to_string();
    let xlated = bpftool(&["prog", "dump", "xlated", "id", &id, "linum"]);
    assert!(xlated.contains("int sock_allow_too(struct bpf_sock * ctx):"), "{xlated}");
    assert!(xlated.contains(&format!("create: allow [file:{POLICY_PATH} line_num:5 line_col:3]")), "{xlated}");
    let connect: &mut aya::programs::CgroupSockAddr =
        ebpf.program_mut("connect_allow").expect("connect_allow").try_into().expect("connect_allow is sock_addr");
    connect.load().unwrap_or_else(|e| panic!("the kernel accepts connect_allow through aya: {e:?}"));
    let dev: &mut aya::programs::CgroupDevice =
        ebpf.program_mut("dev_allow").expect("dev_allow").try_into().expect("dev_allow is cgroup/dev");
    dev.load().unwrap_or_else(|e| panic!("the kernel accepts dev_allow through aya: {e:?}"));
}
