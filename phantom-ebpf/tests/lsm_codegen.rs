//! Code generation of the BPF-LSM programs (host side: no kernel). The
//! programs are enforced and witnessed in the VM tier
//! (phantom-user/tests/vm_lsm.rs).

mod golden;
#[path = "lsm_common/layout.rs"]
mod layout;

use layout::LAYOUT;
use phantom_dsl::ir::Policy;
use phantom_ebpf::audit::{self, Verdict};
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
  ptrace: allow
  signals: allow
  raw_sockets: allow
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

fn policy(text: &str) -> Policy {
    let c = phantom_dsl::compile_str(PATH, text);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    c.policy.unwrap()
}

fn compile(text: &str) -> LsmPrograms {
    lsm::compile(&policy(text), &Options::default().source(PATH, text)).unwrap()
}

/// A `kernel:` block with every switch allowed except `deny`.
fn switches(deny: &[&str]) -> String {
    let mut s = String::from("kernel:\n");
    for k in ["ptrace", "mount", "bpf", "user_namespaces", "io_uring", "kernel_modules", "signals", "raw_sockets"] {
        s += &format!("  {k}: {}\n", if deny.contains(&k) { "deny" } else { "allow" });
    }
    s
}

fn line_of(needle: &str) -> u32 {
    POLICY.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn the_hooks_follow_the_policy() {
    let p = compile(POLICY);
    let hooks: Vec<Hook> = p.programs.iter().map(|p| p.hook).collect();
    assert_eq!(hooks, [Hook::FileOpen, Hook::SbMount, Hook::MoveMount, Hook::UsernsCreate]);
    let maps: Vec<String> = p.maps().iter().map(|m| m.name.clone()).collect();
    assert_eq!(maps, [PATH_MAP, audit::RINGBUF_MAP]);

    let none = compile(&format!("profile: p\n{}", switches(&[])));
    assert!(none.is_empty(), "{none:?}");
    assert!(none.maps().is_empty());
    // A remove-only rule needs no file_open program (an open never removes).
    let remove_only = compile(&format!(
        "profile: p\n{}filesystem:\n  rules:\n    - deny: /x\n      access: [remove]\n",
        switches(&["bpf"])
    ));
    assert_eq!(remove_only.programs.iter().map(|p| p.hook).collect::<Vec<_>>(), [Hook::Bpf]);
}

#[test]
fn compiling_twice_gives_the_same_bytes() {
    let a = compile(POLICY).object(&LAYOUT).unwrap();
    let b = compile(POLICY).object(&LAYOUT).unwrap();
    assert_eq!(a, b);
    // A different kernel layout changes only the patched offsets.
    let other = compile(POLICY).object(&KernelLayout { file_f_mode: 12, file_f_path: 80, ..LAYOUT }).unwrap();
    assert_ne!(a, other);
    assert_eq!(a.len(), other.len());
}

#[test]
fn file_open_reads_patched_offsets_and_compares_whole_components() {
    let p = compile(POLICY);
    let open = p.get(Hook::FileOpen).unwrap();
    let insns = open.patched(&LAYOUT).unwrap();
    assert!(matches!(insns[1].op, Op::Load { off: 4, .. }), "f_mode: {:?}", insns[1]);
    assert!(
        insns.iter().any(|i| matches!(i.op, Op::Alu { src: phantom_ebpf::bpf::Source::Imm(64), .. })),
        "&file->f_path"
    );
    let text = listing(&insns);
    assert!(text.contains("call bpf_d_path"), "{text}");
    // The path starts 64 bytes into the record (r9 = r6 + 64).
    assert!(text.contains("r9 += 64"), "{text}");
    // The boundary after `/workspace/.git/hooks`: the path's key has a '/'
    // at its end (over the NUL), so byte 21 must be '/'; it is compared in
    // the last chunk of the edge under `/workspace/` ("s/" at 20).
    assert!(text.contains("*(u16 *)(r9 +20)") && text.contains("if r1 != 0x2f73 goto"), "{text}");
    assert!(text.contains("*(u16 *)(r7 -1) = 47"), "the key's '/' and NUL: {text}");
    // The glob has no boundary check.
    assert!(!text.contains("*(u8 *)(r9 +16)"), "{text}");
    // Every denial is recorded.
    assert!(text.contains("call bpf_ringbuf_output"), "{text}");
    assert!(text.contains("call bpf_get_current_comm"), "{text}");
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

const ALL_HOOKS: &str = "\
profile: lsm-all
audit:
  mode: enforce
kernel:
  ptrace: deny
  mount: deny
  bpf: deny
  user_namespaces: deny
  signals: deny
  raw_sockets: deny
  unix_sockets:
    connect: [/run/agent/tools.sock, \"@agent-broker\"]
filesystem:
  rules:
    - deny: /etc/shadow
    - deny: /workspace/.git/hooks
      access: [write, create]
exec:
  allow: [/usr/bin/python3, /usr/lib/git-core*]
";

#[test]
fn every_hook_of_the_set_is_emitted_within_the_kernel_limit() {
    let p = compile(ALL_HOOKS);
    let hooks: Vec<Hook> = p.programs.iter().map(|p| p.hook).collect();
    assert_eq!(hooks.len(), 9);
    assert_eq!(Hook::ALL.len(), 9, "the kernel allows 10 distinct lsm_cgroup hooks system-wide");
    for h in Hook::ALL {
        assert!(hooks.contains(&h), "{h:?} missing");
        assert_eq!(Hook::from_id(h.id()), Some(h));
        assert!(h.prog_name().len() <= 15, "{}", h.prog_name());
    }
    let ids: std::collections::BTreeSet<u16> = Hook::ALL.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), 9, "hook ids are distinct");
}

#[test]
fn the_exec_allow_list_checks_fmode_exec_and_the_runtime_command() {
    let p = compile(ALL_HOOKS);
    let text = listing(&p.get(Hook::FileOpen).unwrap().patched(&LAYOUT).unwrap());
    assert!(text.contains("&= 32"), "the FMODE_EXEC test: {text}");
    // `/usr/bin/python3`, then the key's boundary byte 16 (the last byte of
    // the edge after the dispatch on byte 5).
    assert!(text.contains("*(u8 *)(r9 +16)"), "{text}");
    let with_cmd =
        lsm::compile(&policy(ALL_HOOKS), &Options::default().source(PATH, ALL_HOOKS).exec_also("/opt/tool/run"))
            .unwrap();
    let a = p.get(Hook::FileOpen).unwrap().insns.len();
    let b = with_cmd.get(Hook::FileOpen).unwrap().insns.len();
    assert!(b > a, "the command adds a compare ({a} -> {b})");
    // Without exec and deny rules there is no file_open program at all.
    let none = compile(&format!("profile: p\n{}", switches(&["bpf"])));
    assert!(none.get(Hook::FileOpen).is_none());
    // An empty allow-list still makes the program (it denies every exec).
    let empty = compile(&format!("profile: p\n{}exec:\n  allow: []\n", switches(&[])));
    assert!(empty.get(Hook::FileOpen).is_some());
}

#[test]
fn unix_entries_compare_the_address_as_written() {
    let p = compile(ALL_HOOKS);
    let text = listing(&p.get(Hook::SocketConnect).unwrap().insns);
    assert!(text.contains("call bpf_probe_read_kernel"), "{text}");
    // The abstract entry needs addrlen == 3 + 12 exactly.
    assert!(text.contains("if w8 != 0xf goto"), "{text}");
    // The path entry (21 bytes) needs addrlen >= 23.
    assert!(text.contains("if w8 < 0x17 goto"), "{text}");
    // The front end refuses such names already; the backend checks anyway.
    let mut long = policy(ALL_HOOKS);
    long.kernel.unix_connect.as_mut().unwrap()[0].0 = format!("/{}", "s".repeat(120));
    let err = lsm::compile(&long, &Options::default()).unwrap_err();
    assert!(err.to_string().contains("sun_path holds at most 107"), "{err}");
}

#[test]
fn task_hooks_compare_cgroup_ids_through_patched_fields() {
    let p = compile(ALL_HOOKS);
    for hook in [Hook::PtraceAccessCheck, Hook::TaskKill] {
        let prog = p.get(hook).unwrap();
        let fields: Vec<_> = prog.field_relocs.iter().map(|r| r.field).collect();
        assert_eq!(
            fields,
            [
                lsm::KernelField::TaskTgid,
                lsm::KernelField::TaskCgroups,
                lsm::KernelField::CssSetDflCgrp,
                lsm::KernelField::CgroupKn,
                lsm::KernelField::KernfsNodeId
            ]
        );
        let text = listing(&prog.patched(&LAYOUT).unwrap());
        assert!(text.contains("*(u64 *)(r8 +2376)"), "task->cgroups: {text}");
        assert!(text.contains("call bpf_get_current_cgroup_id"), "{text}");
    }
}

/// The value every `exit` of a program returns when it is reached from a
/// `r0 = imm` just before it.
fn returns(insns: &[Insn]) -> Vec<i32> {
    insns
        .windows(2)
        .filter_map(|w| match (&w[0].op, &w[1].op) {
            (Op::Alu { src: phantom_ebpf::bpf::Source::Imm(v), dst: phantom_ebpf::bpf::Reg::R0, .. }, Op::Exit) => {
                Some(*v)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn complain_mode_records_and_allows_everywhere() {
    let enforce = compile(ALL_HOOKS);
    let complain_text = ALL_HOOKS.replace("mode: enforce", "mode: complain");
    let complain = compile(&complain_text);
    for (e, c) in enforce.programs.iter().zip(&complain.programs) {
        assert_eq!(e.hook, c.hook);
        assert!(returns(&e.insns).contains(&0), "{:?} denies in enforce mode", e.hook);
        assert!(returns(&c.insns).iter().all(|v| *v == 1), "{:?} never denies in complain mode", c.hook);
        let text = listing(&c.insns);
        assert!(text.contains("call bpf_ringbuf_output"), "{:?} records: {text}", c.hook);
        // The verdict byte of the header: version 1 | layer 5 << 16 | verdict << 24.
        let head = |v: Verdict| 1 | 5 << 16 | u32::from(v.code()) << 24;
        assert!(format!("{:?}", c.insns).contains(&format!("imm: {}", head(Verdict::Complain) as i32)), "{:?}", c.hook);
        assert!(format!("{:?}", e.insns).contains(&format!("imm: {}", head(Verdict::Deny) as i32)), "{:?}", e.hook);
    }
}

/// Golden listing of every hook's program (bless with PHANTOM_BLESS=1).
#[test]
fn every_hook_matches_its_golden_listing() {
    let p = compile(ALL_HOOKS);
    let mut out = String::from("# lsm-all: every BPF-LSM hook, layout of tests/lsm_codegen.rs\n");
    for prog in &p.programs {
        let insns = prog.patched(&LAYOUT).unwrap();
        out += &format!("-- {} {} ({} instructions)\n", prog.hook.section(), prog.hook.prog_name(), insns.len());
        out += &listing(&insns);
    }
    let mut golden = golden::Goldens::new("ebpf-lsm");
    golden.check("lsm-all.txt", &out);
    golden.finish();
}

#[test]
fn the_co_re_object_relocates_every_struct_read() {
    let p = compile(ALL_HOOKS);
    let a = p.object_core().unwrap();
    assert_eq!(a, compile(ALL_HOOKS).object_core().unwrap(), "deterministic");
    assert_ne!(a, p.object(&LAYOUT).unwrap());
    for prog in &p.programs {
        let fields = prog.core_fields();
        assert_eq!(fields.len(), prog.field_relocs.len(), "{:?}", prog.hook);
        // Each relocation names the slot of its instruction, which holds the
        // local offset the loader checks before rewriting it.
        let enc = prog.encode(&KernelLayout::LOCAL).unwrap();
        for f in &fields {
            let raw = &enc.insns[f.slot];
            let class = raw.code & 0x07;
            let value = if class == 0x07 { raw.imm } else { i32::from(raw.off) };
            assert_eq!(value as u32, f.local_offset, "{:?} {}.{}", prog.hook, f.strukt, f.member);
        }
    }
    // The local structs and access strings are in .BTF.
    for needle in [&b"kernfs_node"[..], b"dfl_cgrp", b"f_flags", b"0:2"] {
        assert!(a.windows(needle.len()).any(|w| w == needle), "{}", String::from_utf8_lossy(needle));
    }
    // An object without relocations has no local structs.
    let plain = compile(&format!("profile: p\n{}", switches(&["bpf"]))).object_core().unwrap();
    assert!(!plain.windows(6).any(|w| w == b"f_mode"));
}

/// Switch lines come from the IR's origins: flow-style maps and switches
/// set in an extended file get theirs too (the policy text is not needed).
#[test]
fn switch_programs_carry_the_line_that_set_them_in_any_file_or_style() {
    let dir = std::env::temp_dir().join(format!("phantom-lsm-origins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("base.yaml"),
        "profile: base\nsecurity:\n  level: high\nkernel: {mount: deny, bpf: allow}\n",
    )
    .unwrap();
    std::fs::write(dir.join("child.yaml"), "profile: child\nextends: base.yaml\nkernel:\n  ptrace: deny\n").unwrap();
    let c = phantom_dsl::compile_file(&dir.join("child.yaml")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    let policy = c.policy.unwrap();
    let p = lsm::compile(&policy, &Options::default()).unwrap();
    let lines = |hook: Hook| -> Vec<(String, u32)> {
        let prog = p.get(hook).unwrap_or_else(|| panic!("{hook:?} compiled"));
        let mut v: Vec<(String, u32)> = prog
            .insns
            .iter()
            .map(|i| i.meta.loc.as_ref().map(|l| (l.file.rsplit('/').next().unwrap().to_string(), l.line)))
            .map(|l| l.unwrap_or_else(|| ("<none>".into(), 0)))
            .collect();
        v.dedup();
        v
    };
    // Flow style in the base file: the `mount` key's line there.
    assert_eq!(lines(Hook::SbMount), [("base.yaml".to_string(), 4)]);
    // Set in the child (extends merges maps): the child's line.
    assert_eq!(lines(Hook::PtraceAccessCheck), [("child.yaml".to_string(), 4)]);
    // A default of `level: high` (base line 3).
    assert_eq!(lines(Hook::UsernsCreate), [("base.yaml".to_string(), 3)]);
}
