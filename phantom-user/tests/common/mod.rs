//! Helpers shared by the runtime's kernel tests.

#![allow(dead_code)] // Reason: each test binary uses a different subset.

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32),
}

/// Runs `f` in a forked child and returns how it ended; the child's panics
/// and messages go to the test's stderr.
pub fn fork_child(f: impl FnOnce() -> Result<(), String>) -> ChildEnd {
    // SAFETY: the child only runs `f` and exits with _exit; glibc's fork
    // handlers keep malloc usable in the child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                // The harness captures eprintln! in-process, which a forked
                // child's output never reaches: write to fd 2 directly.
                let line = format!("child: {msg}\n");
                // SAFETY: writes a live buffer to stderr.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                1
            }
            Err(_) => 2,
        };
        // SAFETY: terminates the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    }
}

/// Like [`fork_child`], for children that must exit normally.
pub fn in_child(f: impl FnOnce() -> Result<(), String>) -> i32 {
    match fork_child(f) {
        ChildEnd::Exited(c) => c,
        ChildEnd::Signaled(s) => panic!("child killed by signal {s}"),
    }
}

/// Runs `f` in a forked child that first moves itself into `cgroup`.
pub fn in_cgroup(cgroup: &std::path::Path, f: impl FnOnce() -> Result<(), String>) {
    let procs = cgroup.join("cgroup.procs");
    let end = fork_child(move || {
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| format!("joining {}: {e}", procs.display()))
            .and_then(|()| f())
    });
    assert_eq!(end, ChildEnd::Exited(0), "the child in the cgroup failed (its message is above)");
}

/// Cgroup directories and scratch directories of this process's sandboxes
/// of `profile` (named `<profile>-<pid>-<n>`).
pub fn sandbox_residue(profile: &str) -> Vec<String> {
    let tag = format!("{profile}-{}-", std::process::id());
    let mut out = Vec::new();
    let mut scan = |dir: &str| {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.contains(&tag) {
                    out.push(format!("{dir}/{name}"));
                }
            }
        }
    };
    for c in ["unified/phantom", "phantom", "memory/phantom", "pids/phantom", "cpu/phantom"] {
        scan(&format!("/sys/fs/cgroup/{c}"));
    }
    scan(std::env::temp_dir().to_str().expect("utf-8 temp dir"));
    out
}

/// Mounts in this process's mount namespace.
pub fn count_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().count()
}

/// Open descriptors of this process.
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Whether every child of this process has been reaped.
pub fn no_children_left() -> bool {
    // SAFETY: non-blocking wait for any child; ECHILD means none exist.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// A cgroup v2 directory for one test (`phantom-test-<pid>-<name>` under
/// the cgroup2 mount); `remove` removes it and checks it is gone, a failed
/// test's drop removes it best-effort.
pub struct TestCgroup {
    pub path: std::path::PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let root =
            phantom_user::loader::cgroup2_mount().expect("cgroup v2 is not mounted: these tests need it (and root)");
        let path = root.join(format!("phantom-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e} (root needed)", path.display()));
        TestCgroup { path }
    }

    /// rmdir, and the leak check: the directory is gone.
    pub fn remove(self) {
        std::fs::remove_dir(&self.path).unwrap_or_else(|e| panic!("rmdir {}: {e}", self.path.display()));
        assert!(!self.path.exists(), "{} still exists", self.path.display());
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A page shared with forked children (`MAP_SHARED`), read and written
/// through atomics: counters and flags a child and its parent both see.
pub struct Shared(*mut std::sync::atomic::AtomicU64);

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub fn new() -> Shared {
        // SAFETY: a fresh anonymous shared mapping, zero-filled; unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Shared(p.cast())
    }

    /// Slot `i` (0..512).
    pub fn at(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(i < 512);
        // SAFETY: inside the 4096-byte mapping, 8-byte aligned, alive while self is.
        unsafe { &*self.0.add(i) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}
