//! Differential: the emitted file_open program (its encoded bytes, run by
//! the interpreter in ebpf_interp/ with lsm_common/file_open_env.rs, since this host refuses
//! BPF-LSM) against the linear definition (lsm_common/reference.rs): the
//! decision, and the record's rule, line, file and path, for random
//! policies (nested rules with different access sets, prefix globs, `/`,
//! exec entries under deny rules, the runtime's command, hand-made
//! patterns with a trailing `/`) and paths at the patterns' boundaries,
//! long paths around the buffer size, and a scratch buffer that keeps the
//! bytes of earlier, longer paths. The kernel's verifier and real opens
//! are the VM tier's (phantom-user/tests/vm_lsm.rs).

mod lsm_common;

use lsm_common::reference::Expect;
use lsm_common::*;
use phantom_dsl::ir::{Access, AuditMode, PathPattern, Policy};
use phantom_ebpf::lsm::PATH_BUF;

/// Every mode of [`MODES`] on every path, in one scratch buffer; returns
/// how many were denied.
fn check_all(policy: &Policy, extra: &[PathPattern], paths: &[Vec<u8>]) -> usize {
    let (prog, _) = program(policy, extra);
    let mut buf = scratch();
    let mut denied = 0;
    for path in paths {
        for mode in MODES {
            match check(&prog, &mut buf, policy, extra, mode, path) {
                Ok(Expect::Allow) => {}
                Ok(_) => denied += 1,
                Err(e) => panic!(
                    "path {:?}, f_mode/f_flags {mode:x?}: {e}\nrules: {:#?}\nexec: {:?}\nextra: {extra:?}",
                    String::from_utf8_lossy(path),
                    policy.filesystem.rules.iter().map(|r| (r.path.to_string(), &r.access)).collect::<Vec<_>>(),
                    policy.exec.as_ref().map(|e| e.allow.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>()),
                ),
            }
        }
    }
    denied
}

#[test]
fn nested_rules_globs_and_exec_entries_decide_as_the_linear_definition() {
    let mut p = empty_policy();
    p.filesystem.rules = vec![
        deny("/workspace/.git/hooks", &[Access::Write, Access::Create], 10),
        deny("/workspace", &[Access::Exec], 11),
        deny("/workspace/.git", &[Access::Write, Access::Read], 12),
        deny("/etc/shadow", &[Access::Read, Access::Write, Access::Exec, Access::Create, Access::Remove], 13),
        deny("/usr/lib/python3*", &[Access::Write], 14),
        deny("/usr/lib/python3.11/secret", &[Access::Read], 15),
        deny("/tmp", &[Access::Remove], 16),
        deny("/usr/bin/sudo", &[Access::Exec], 17),
    ];
    p.exec = Some(exec_list(&[("/usr/bin", 20), ("/usr/lib/git-core*", 21), ("/workspace/tools/run", 22)]));
    let extra = [pat("/opt/cmd")];
    let patterns: Vec<PathPattern> = p
        .filesystem
        .rules
        .iter()
        .map(|r| r.path.clone())
        .chain(p.exec.as_ref().unwrap().allow.iter().map(|(q, _)| q.clone()))
        .chain(extra.iter().cloned())
        .collect();
    let paths = paths_near(&mut Rng(7), &patterns);
    let denied = check_all(&p, &extra, &paths);
    assert!(denied > paths.len(), "only {denied} denials: the cases miss the rules");
    p.audit = AuditMode::Complain;
    check_all(&p, &extra, &paths);
}

#[test]
fn slash_matches_everything_and_an_empty_exec_list_denies_every_exec() {
    let mut p = empty_policy();
    p.filesystem.rules = vec![deny("/a", &[Access::Read], 3), deny("/", &[Access::Write], 4)];
    p.exec = Some(exec_list(&[]));
    let paths = paths_near(&mut Rng(1), &[pat("/a"), pat("/")]);
    check_all(&p, &[], &paths);
    // `/*` is `/` as well.
    p.filesystem.rules = vec![deny("/*", &[Access::Exec], 5)];
    p.exec = None;
    check_all(&p, &[], &paths);
    // Only the runtime's command may run.
    p.filesystem.rules.clear();
    p.exec = Some(exec_list(&[]));
    check_all(&p, &[pat("/bin/sh")], &paths);
}

#[test]
fn long_paths_around_the_buffer_size() {
    let mut p = empty_policy();
    let deep = format!("/{}", "d".repeat(PATH_BUF as usize - 10));
    let longest = format!("/{}", "e".repeat(PATH_BUF as usize - 3));
    p.filesystem.rules = vec![
        deny("/d", &[Access::Read], 3),
        deny(&deep, &[Access::Write], 4),
        deny(&format!("{longest}*"), &[Access::Read], 5),
    ];
    let mut paths = Vec::new();
    for base in [&deep, &longest] {
        for n in (PATH_BUF as usize - 12)..(PATH_BUF as usize + 3) {
            let mut s = base.clone().into_bytes();
            s.resize(n, b'/');
            paths.push(s.clone());
            s.resize(n, b'e');
            paths.push(s);
        }
    }
    let denied = check_all(&p, &[], &paths);
    assert!(denied > 0);
}

#[test]
fn stale_bytes_of_longer_paths_never_match() {
    let mut p = empty_policy();
    p.filesystem.rules = vec![deny("/tmp/x", &[Access::Read], 3), deny("/ab", &[Access::Read], 4)];
    let (prog, _) = program(&p, &[]);
    let mut buf = scratch();
    let pairs = [("/tmp/x", "/tmp"), ("/tmp/x/y", "/tmp"), ("/tmp/x/y", "/tmp/"), ("/abc", "/a"), ("/ab", "/a")];
    // The earlier path denied (its NUL restored) or allowed (its key left
    // in the buffer).
    for earlier_mode in [MODES[0], MODES[1]] {
        for (earlier, now) in pairs {
            check(&prog, &mut buf, &p, &[], earlier_mode, earlier.as_bytes()).unwrap();
            let second = check(&prog, &mut buf, &p, &[], MODES[0], now.as_bytes()).unwrap();
            assert_eq!(second, Expect::Allow, "{now} after {earlier}");
        }
    }
}

#[test]
fn random_policies_decide_as_the_linear_definition() {
    let mut rng = Rng(0x5eed_f11e);
    let mut cases = 0;
    let mut denied = 0;
    for round in 0..150 {
        let mut p = empty_policy();
        let n = 1 + rng.below(if round % 10 == 0 { 60 } else { 12 }) as usize;
        for i in 0..n {
            let mut r = deny("/", &[], 10 + i as u32);
            r.path = random_pattern(&mut rng);
            r.access = random_access(&mut rng);
            if rng.chance(10) {
                r.effect = phantom_dsl::ir::Effect::Allow;
            }
            if rng.chance(3) {
                r.origin = phantom_dsl::ir::Origin::NONE;
            }
            p.filesystem.rules.push(r);
        }
        if rng.chance(50) {
            let k = rng.below(5) as usize;
            let mut e = exec_list(&[]);
            for j in 0..k {
                e.allow.push((random_pattern(&mut rng), origin(100 + j as u32)));
            }
            p.exec = Some(e);
        }
        let extra: Vec<PathPattern> = (0..rng.below(2)).map(|_| random_pattern(&mut rng)).collect();
        if rng.chance(15) {
            p.audit = AuditMode::Complain;
        }
        let active = p.filesystem.rules.iter().any(|r| {
            r.effect == phantom_dsl::ir::Effect::Deny && phantom_ebpf::lsm::access_mask(r.access.iter().copied()) != 0
        });
        if !active && p.exec.is_none() {
            continue;
        }
        let mut patterns: Vec<PathPattern> = p.filesystem.rules.iter().map(|r| r.path.clone()).collect();
        patterns.extend(p.exec.iter().flat_map(|e| e.allow.iter().map(|(q, _)| q.clone())));
        patterns.extend(extra.iter().cloned());
        let paths = paths_near(&mut rng, &patterns);
        cases += paths.len() * MODES.len();
        denied += check_all(&p, &extra, &paths);
    }
    assert!(cases > 20_000, "{cases} cases");
    assert!(denied > cases / 20 && denied < cases * 19 / 20, "{denied} of {cases} denied");
}
