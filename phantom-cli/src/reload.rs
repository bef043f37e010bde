//! `phantom reload`: the text report of a policy update.

use phantom_user::reload::ZygoteUpdate;
use phantom_user::zygote::ReloadOutcome;
use std::fmt::Write;

/// What stays as it was in a sandbox that is already running.
pub const UNCHANGED: &str = "seccomp, Landlock, mounts, namespaces and resource limits stay as they were \
in sandboxes already running (the kernel lets a process only add restrictions to itself); new runs get every \
layer of the updated policy";

/// One paragraph per zygote.
pub fn render(policy: &str, updates: &[ZygoteUpdate]) -> String {
    let mut out = String::new();
    if updates.is_empty() {
        let _ = writeln!(
            out,
            "phantom: no resident zygote serves {policy}: nothing running to update (new runs use the policy as it is now)"
        );
        return out;
    }
    for u in updates {
        match &u.result {
            Ok(ReloadOutcome::Updated { profile, running, socket }) => {
                let [r, a, d] = running.cgroup_bpf;
                let [lr, la, ld] = running.bpf_lsm;
                let xdp = running.xdp;
                let _ = writeln!(
                    out,
                    "phantom: {profile} ({}): updated; {} sandbox(es) (running, or prepared and waiting) moved \
                     without a gap: cgroup-BPF {r} replaced, {a} added, {d} removed; BPF-LSM {lr} replaced, {la} \
                     added, {ld} removed; XDP swapped on {xdp} veth pair(s)",
                    socket.display(),
                    running.sandboxes,
                );
                for e in &running.errors {
                    let _ = writeln!(out, "phantom:   not moved: {e}");
                }
            }
            Ok(ReloadOutcome::NotMine) => {}
            Err(e) => {
                let _ = writeln!(out, "phantom: {}: kept the previous policy: {e}", u.socket.display());
            }
        }
    }
    let _ = writeln!(out, "phantom: {UNCHANGED}");
    out
}
