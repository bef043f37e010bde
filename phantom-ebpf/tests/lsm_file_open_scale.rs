//! How file_open scales with the number of deny rules, counted by the
//! interpreter (instructions executed per open) on the shape `cargo xtask
//! bench lsm` measures in the VM (N rules on sibling directories, an open
//! of a file none of them covers) and on rules spread over many
//! directories. Prints the program sizes and step counts
//! (`--nocapture`); the targets: the steps of an open do not grow with N.

mod lsm_common;

use lsm_common::*;
use phantom_dsl::ir::{Access, Policy};

const ROOT: &str = "/run/phantom-bench-lsm-4242";
const ALL: [Access; 4] = [Access::Read, Access::Write, Access::Exec, Access::Create];

fn bench_policy(n: usize) -> Policy {
    let mut p = empty_policy();
    p.filesystem.rules = (0..n).map(|i| deny(&format!("{ROOT}/rules/r{i:04}"), &ALL, 4 + i as u32)).collect();
    p
}

/// Rules over a tree of directories, with globs and an exec list.
fn spread_policy(n: usize) -> Policy {
    let mut rng = Rng(n as u64 + 1);
    let mut p = empty_policy();
    let dirs = ["usr", "etc", "var/lib", "home/agent", "opt", "srv/data", "workspace"];
    for i in 0..n {
        let d = rng.pick(&dirs);
        let glob = if rng.chance(20) { "*" } else { "" };
        p.filesystem.rules.push(deny(&format!("/{d}/n{}/f{i}{glob}", rng.below(50)), &ALL[..1 + i % 4], 4 + i as u32));
    }
    p.exec = Some(exec_list(&[("/usr/bin", 9000), ("/opt/tool*", 9001)]));
    p
}

/// Instructions executed for one open of `path` with `mode`.
fn steps(prog: &[u8], policy: &Policy, mode: (u32, u32), path: &str) -> usize {
    let mut buf = scratch();
    check(prog, &mut buf, policy, &[], mode, path.as_bytes()).unwrap();
    let mut run = file_open_env::Run {
        layout: LAYOUT,
        f_mode: mode.0,
        f_flags: mode.1,
        path: path.as_bytes(),
        scratch: &mut buf,
    };
    file_open_env::run(prog, &mut run).unwrap().steps
}

#[test]
fn the_cost_of_an_open_does_not_grow_with_the_rules() {
    let read = MODES[0];
    let miss = format!("{ROOT}/work/a/b/target");
    let mut rows = Vec::new();
    for n in [10, 100, 1000] {
        let p = bench_policy(n);
        let (prog, insns) = program(&p, &[]);
        let last = format!("{ROOT}/rules/r{:04}/x", n - 1);
        rows.push((n, insns, steps(&prog, &p, read, &miss), steps(&prog, &p, read, &last)));
    }
    for (n, insns, miss, hit) in &rows {
        println!("bench shape, {n} rules: {insns} instructions; an open executes {miss} (no rule) / {hit} (last rule)");
    }
    let (first, last) = (rows[0], rows[2]);
    assert!(last.2 <= first.2 + 4, "an uncovered open costs {} steps at 10 rules, {} at 1,000", first.2, last.2);
    assert!(last.3 <= first.3 + 30, "the last rule's open costs {} steps at 10 rules, {} at 1,000", first.3, last.3);
    assert!(last.1 < 15 * 1000, "{} instructions for 1,000 rules", last.1);
}

#[test]
fn spread_rules_cost_what_the_path_walks_through() {
    let mut worst = Vec::new();
    for n in [10, 100, 1000] {
        let p = spread_policy(n);
        let (prog, insns) = program(&p, &[]);
        let paths: Vec<String> = p
            .filesystem
            .rules
            .iter()
            .map(|r| r.path.path.clone())
            .chain(["/usr/bin/env".into(), "/home/agent/notes".into(), "/tmp/x".into()])
            .collect();
        let mut most = 0;
        for path in &paths {
            for mode in MODES {
                most = most.max(steps(&prog, &p, mode, path));
            }
        }
        println!("spread, {n} rules: {insns} instructions; the costliest open executes {most}");
        worst.push(most);
    }
    assert!(worst[2] <= worst[0] * 3, "worst open: {worst:?} steps at 10/100/1,000 rules");
}
