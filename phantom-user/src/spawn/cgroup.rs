//! Per-sandbox cgroups on cgroup v2, v1, or the hybrid layout (v1
//! controllers plus cgroup2 at /sys/fs/cgroup/unified, as on this project's
//! CI hosts). The v2 directory is where BPF programs attach and where the
//! child is cloned into (CLONE_INTO_CGROUP); limits go to whichever
//! hierarchy has the controller. The first stage of a spawn is moved into
//! every group before it forks the command, which inherits them.

use phantom_dsl::ir::Resources;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    /// cgroup2 mounted at /sys/fs/cgroup.
    V2,
    /// cgroup v1 controllers, cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    V1,
}

pub fn layout() -> Layout {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Layout::V2
    } else if Path::new(ROOT).join("unified/cgroup.controllers").exists() {
        Layout::Hybrid
    } else {
        Layout::V1
    }
}

/// The cgroup2 mount point, if any.
pub fn v2_root() -> Option<PathBuf> {
    match layout() {
        Layout::V2 => Some(PathBuf::from(ROOT)),
        Layout::Hybrid => Some(PathBuf::from(ROOT).join("unified")),
        Layout::V1 => None,
    }
}

/// Which mechanism carries each limit, for the enforcement report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LimitsReport {
    pub memory: Option<&'static str>,
    pub pids: Option<&'static str>,
    pub cpu: Option<&'static str>,
}

/// The cgroup directories of one sandbox; removed on drop.
#[derive(Debug)]
pub struct SandboxCgroup {
    /// cgroup v2 directory (BPF attach point, CLONE_INTO_CGROUP target).
    pub v2: Option<PathBuf>,
    /// v1 controller directories, as (controller, path).
    pub v1: Vec<(&'static str, PathBuf)>,
    pub limits: LimitsReport,
    /// The v2 directory's inode number: the cgroup id BPF programs see.
    pub v2_id: Option<u64>,
    /// Whether the v2 directory has the memory controller (its
    /// `memory.peak` and `memory.events` exist).
    v2_memory: bool,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn v2_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl SandboxCgroup {
    /// Creates `phantom/<name>` in every hierarchy that has something to do.
    pub fn create(name: &str, res: &Resources) -> io::Result<SandboxCgroup> {
        let mut cg =
            SandboxCgroup { v2: None, v1: Vec::new(), limits: LimitsReport::default(), v2_id: None, v2_memory: false };
        if let Some(root) = v2_root() {
            let parent = root.join("phantom");
            fs::create_dir_all(&parent)?;
            let avail = v2_controllers(&root);
            let wanted: Vec<&str> =
                ["memory", "pids", "cpu"].into_iter().filter(|c| avail.iter().any(|a| a == c)).collect();
            if !wanted.is_empty() {
                let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
                // Enabling may fail on a busy root; limits then fall back below.
                let _ = write(&root.join("cgroup.subtree_control"), &enable.join(" "));
                let _ = write(&parent.join("cgroup.subtree_control"), &enable.join(" "));
            }
            let dir = parent.join(name);
            fs::create_dir(&dir)?;
            let have = v2_controllers(&dir);
            let has = |c: &str| have.iter().any(|a| a == c);
            cg.v2_memory = has("memory");
            cg.v2_id = Some(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&dir)?));
            if let Some(m) = res.memory.filter(|_| has("memory")) {
                write(&dir.join("memory.max"), &m.0.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
                cg.limits.memory = Some("cgroup v2 memory.max");
            }
            if let Some(p) = res.pids.filter(|_| has("pids")) {
                write(&dir.join("pids.max"), &p.to_string())?;
                cg.limits.pids = Some("cgroup v2 pids.max");
            }
            if let Some(c) = res.cpu.filter(|_| has("cpu")) {
                write(&dir.join("cpu.max"), &format!("{} 100000", u64::from(c.0) * 100))?;
                cg.limits.cpu = Some("cgroup v2 cpu.max");
            }
            cg.v2 = Some(dir);
        }
        if layout() != Layout::V2 {
            let mut v1 = |ctrl: &'static str, files: &[(&str, String)]| -> io::Result<bool> {
                let base = Path::new(ROOT).join(ctrl);
                if !base.join("cgroup.procs").exists() {
                    return Ok(false);
                }
                let dir = base.join("phantom").join(name);
                fs::create_dir_all(&dir)?;
                cg.v1.push((ctrl, dir.clone()));
                for (f, v) in files {
                    write(&dir.join(f), v)?;
                }
                Ok(true)
            };
            if let Some(m) = res.memory.filter(|_| cg.limits.memory.is_none()) {
                if v1("memory", &[("memory.limit_in_bytes", m.0.to_string())])? {
                    cg.limits.memory = Some("cgroup v1 memory.limit_in_bytes");
                }
            }
            if let Some(p) = res.pids.filter(|_| cg.limits.pids.is_none()) {
                if v1("pids", &[("pids.max", p.to_string())])? {
                    cg.limits.pids = Some("cgroup v1 pids.max");
                }
            }
            if let Some(c) = res.cpu.filter(|_| cg.limits.cpu.is_none()) {
                let quota = (u64::from(c.0) * 100).to_string();
                if v1("cpu", &[("cpu.cfs_period_us", "100000".into()), ("cpu.cfs_quota_us", quota)])? {
                    cg.limits.cpu = Some("cgroup v1 cpu.cfs_quota_us");
                }
            }
        }
        Ok(cg)
    }

    /// Moves `pid` into every group of the sandbox; its children inherit.
    pub fn add(&self, pid: libc::pid_t) -> io::Result<()> {
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Peak memory of the group, where the kernel reports it.
    pub fn memory_peak(&self) -> Option<u64> {
        let read = |p: PathBuf| fs::read_to_string(p).ok()?.trim().parse().ok();
        self.v2.as_ref().filter(|_| self.v2_memory).and_then(|d| read(d.join("memory.peak"))).or_else(|| {
            self.v1.iter().find(|(c, _)| *c == "memory").and_then(|(_, d)| read(d.join("memory.max_usage_in_bytes")))
        })
    }

    /// Whether the memory limit killed something.
    pub fn oom_killed(&self) -> bool {
        let v2 = self
            .v2
            .as_ref()
            .filter(|_| self.v2_memory)
            .and_then(|d| fs::read_to_string(d.join("memory.events")).ok())
            .is_some_and(|s| s.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0")));
        let v1 = self
            .v1
            .iter()
            .find(|(c, _)| *c == "memory")
            .and_then(|(_, d)| fs::read_to_string(d.join("memory.oom_control")).ok())
            .is_some_and(|s| s.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0")));
        v2 || v1
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.v2.iter().chain(self.v1.iter().map(|(_, d)| d))
    }

    /// Removes the directories; waits (bounded) for the last processes to go.
    pub fn remove(&mut self) -> io::Result<()> {
        let mut last = Ok(());
        for dir in self.dirs().cloned().collect::<Vec<_>>() {
            let mut ok = false;
            // Busy while the last task's exit is still being accounted:
            // retry soon first (about 1 s in all).
            let mut pause = std::time::Duration::from_micros(50);
            for _ in 0..220 {
                match fs::remove_dir(&dir) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        ok = true;
                        break;
                    }
                    Err(_) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_millis(5));
                    }
                }
            }
            if !ok {
                last = Err(io::Error::other(format!("cgroup {} still busy", dir.display())));
            }
        }
        self.v2 = None;
        self.v1.clear();
        last
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
