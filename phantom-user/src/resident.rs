//! Keeping resident memory small: a process drops its page mappings of
//! files it maps read-only. Used by the zygote once it is ready, and by a
//! sandbox prepared ahead of its request: a prepared sandbox is a fork of
//! the supervisor and maps what the supervisor had resident; its `execve`
//! later tears all of that down on the request's path (about 0.1 ms for
//! a 2 MiB supervisor here), so it is dropped while the sandbox waits.

/// Drops the page table entries of every read-only file mapping of this
/// process that holds no private (written) pages. What is read again
/// faults back in from the page cache, so nothing changes but residency.
/// Allocates (reads `/proc/self/smaps`).
pub(crate) fn drop_file_page_mappings() {
    shed(false)
}

/// In a prepared sandbox (a fork of the supervisor): the above, and the
/// supervisor's mappings of BPF maps (the audit ring buffers, half a MiB
/// each) go: the sandbox never reads them.
pub(crate) fn shed_before_exec() {
    shed(true)
}

fn shed(unmap_bpf_maps: bool) {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut mapping: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let (perms, path) = (f.next().unwrap_or(""), f.nth(3).unwrap_or(""));
            let read_only = perms.starts_with('r') && !perms.contains('w');
            if unmap_bpf_maps && path == "anon_inode:bpf-map" {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    // SAFETY: in a forked sandbox, which never touches the
                    // supervisor's BPF map mappings; nothing refers to them.
                    unsafe { libc::munmap(a as *mut libc::c_void, b - a) };
                }
            }
            mapping = match (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                (Ok(a), Ok(b)) if read_only && path.starts_with('/') => Some((a, b)),
                _ => None,
            };
            continue;
        }
        // Pages written since mapping (relocated data made read-only
        // afterwards) are anonymous: such a mapping is left alone, as
        // dropping them would lose the writes.
        if first == "Anonymous:" {
            if let (Some((a, b)), Some("0")) = (mapping.take(), f.next()) {
                // SAFETY: a read-only file mapping (from /proc/self/smaps)
                // with no private pages: dropping its page table entries
                // changes nothing it reads, which faults back in from the
                // file.
                unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
            }
        }
    }
}
