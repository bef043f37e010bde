//! Code generation of the BPF-LSM programs (host side: no kernel). The
//! programs are enforced and witnessed in the VM tier
//! (phantom-user/tests/vm_lsm.rs).

use phantom_dsl::ir::Policy;
use phantom_ebpf::bpf::{disasm, Insn, Op};
use phantom_ebpf::elf::read::read_object;
use phantom_ebpf::lsm::{self, Hook, KernelLayout, LsmPrograms, Options, PATH_MAP};

const PATH: &str = "lsm-test.yaml";

const POLICY: &str = "\
profile: lsm-test
kernel:
  mount: deny
  bpf: allow
  user_namespaces: deny
filesystem:
  rules:
    - deny: /workspace/.git/hooks
      access: [write, create, remove]
    - deny: /etc/shadow
    - deny: /workspace/build*
      access: [write]
    - deny: /workspace/trash
      access: [remove]
";

/// The 6.12 layout (any fixed layout works for the host tests).
const LAYOUT: KernelLayout = KernelLayout { file_f_mode: 4, file_f_path: 64 };

fn policy(text: &str) -> Policy {
    let c = phantom_dsl::compile_str(PATH, text);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    c.policy.unwrap()
}

fn compile(text: &str) -> LsmPrograms {
    lsm::compile(&policy(text), &Options::default().source(PATH, text)).unwrap()
}

fn line_of(needle: &str) -> u32 {
    POLICY.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn the_hooks_follow_the_policy() {
    let p = compile(POLICY);
    let hooks: Vec<Hook> = p.programs.iter().map(|p| p.hook).collect();
    assert_eq!(hooks, [Hook::FileOpen, Hook::SbMount, Hook::MoveMount, Hook::UsernsCreate]);
    assert_eq!(p.maps().len(), 1);
    assert_eq!(p.maps()[0].name, PATH_MAP);

    let none = compile("profile: p\nkernel:\n  mount: allow\n  bpf: allow\n  user_namespaces: allow\n");
    assert!(none.is_empty(), "{none:?}");
    // A remove-only rule needs no file_open program (an open never removes).
    let remove_only = compile(
        "profile: p\nkernel:\n  mount: allow\n  bpf: deny\n  user_namespaces: allow\nfilesystem:\n  rules:\n    - deny: /x\n      access: [remove]\n",
    );
    assert_eq!(remove_only.programs.iter().map(|p| p.hook).collect::<Vec<_>>(), [Hook::Bpf]);
}

#[test]
fn compiling_twice_gives_the_same_bytes() {
    let a = compile(POLICY).object(&LAYOUT).unwrap();
    let b = compile(POLICY).object(&LAYOUT).unwrap();
    assert_eq!(a, b);
    // A different kernel layout changes only the patched offsets.
    let other = compile(POLICY).object(&KernelLayout { file_f_mode: 12, file_f_path: 80 }).unwrap();
    assert_ne!(a, other);
    assert_eq!(a.len(), other.len());
}

#[test]
fn file_open_has_the_expected_size_and_offsets() {
    let p = compile(POLICY);
    let open = p.get(Hook::FileOpen).unwrap();
    // Prologue 15, `/workspace/.git/hooks` (21 bytes: 8+8+4+1) 3+3+3+2+2+3+2 = 18,
    // `/etc/shadow` (11: 8+2+1) 3+3+2+2+3+2 = 15, `/workspace/build*` (16: 8+8)
    // 3+3+3+2 = 11, the epilogue 4. The remove-only rule emits nothing.
    assert_eq!(open.insns.len(), 15 + 18 + 15 + 11 + 4, "{}", listing(&open.insns));
    let insns = open.patched(&LAYOUT).unwrap();
    assert!(matches!(insns[1].op, Op::Load { off: 4, .. }), "f_mode: {:?}", insns[1]);
    assert!(
        insns.iter().any(|i| matches!(i.op, Op::Alu { src: phantom_ebpf::bpf::Source::Imm(64), .. })),
        "&file->f_path"
    );
    let text = listing(&insns);
    assert!(text.contains("call bpf_d_path"), "{text}");
    // The boundary check after `/workspace/.git/hooks`: byte 21 is NUL or '/'.
    assert!(text.contains("*(u8 *)(r9 +21)"), "{text}");
    // The glob has no boundary check.
    assert!(!text.contains("*(u8 *)(r9 +16)"), "{text}");
}

#[test]
fn every_instruction_carries_its_policy_line() {
    let p = compile(POLICY);
    for prog in &p.programs {
        for (i, insn) in prog.insns.iter().enumerate() {
            let loc = insn.meta.loc.as_ref().unwrap_or_else(|| panic!("{:?} insn {i} has no line", prog.hook));
            assert_eq!(&*loc.file, PATH);
        }
    }
    let open = p.get(Hook::FileOpen).unwrap();
    let lines: std::collections::BTreeSet<u32> = open.insns.iter().map(|i| i.meta.loc.as_ref().unwrap().line).collect();
    let expected = [line_of(".git/hooks"), line_of("/etc/shadow"), line_of("build*")];
    assert_eq!(lines.into_iter().collect::<Vec<_>>(), expected);
    let mount = p.get(Hook::SbMount).unwrap();
    assert!(mount.insns.iter().all(|i| i.meta.loc.as_ref().unwrap().line == line_of("mount: deny")));
    let userns = p.get(Hook::UsernsCreate).unwrap();
    assert!(userns.insns.iter().all(|i| i.meta.loc.as_ref().unwrap().line == line_of("user_namespaces")));
}

#[test]
fn the_object_carries_sections_maps_and_policy_lines() {
    let bytes = compile(POLICY).object(&LAYOUT).unwrap();
    let obj = read_object(&bytes).unwrap();
    let text = format!("{obj:?}");
    for section in ["lsm_cgroup/file_open", "lsm_cgroup/sb_mount", "lsm_cgroup/move_mount", "lsm_cgroup/userns_create"]
    {
        assert!(text.contains(section), "{section} missing");
    }
    // line_info strings are the policy lines themselves.
    for needle in ["- deny: /etc/shadow", "mount: deny", "user_namespaces: deny"] {
        assert!(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "line `{needle}` missing");
    }
}

#[test]
fn a_pattern_longer_than_the_buffer_is_an_error() {
    // The front end refuses such paths already; the backend checks anyway.
    let mut p = policy(POLICY);
    p.filesystem.rules[1].path.path = format!("/{}", "a".repeat(5000));
    let err = lsm::compile(&p, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("compares paths of at most"), "{err}");
}

fn listing(insns: &[Insn]) -> String {
    let enc = phantom_ebpf::bpf::encode(insns).unwrap();
    disasm::disassemble(&enc).unwrap()
}
