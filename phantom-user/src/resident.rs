//! Keeping resident memory small. The zygote, once ready, drops its page
//! mappings of files it maps read-only. A sandbox prepared ahead of its
//! request is a fork of the supervisor: its `execve` later tears down what
//! it inherited, on the request's path, so it unmaps the supervisor's BPF
//! map mappings (never touched again) while it waits, and makes private
//! the heap and stack pages its second half will write (each first write
//! to a page shared with the supervisor is a copy-on-write fault).
//! Measured with two zygotes in turns, 150 runs each: handover to execve
//! -13 µs (twice). Dropping its file pages was a wash (the second half
//! faults back in what the exec saved: handover to execve +35 µs, execve
//! -26 µs); mapping its whole code ahead (MADV_POPULATE_READ) cost execve
//! 100 µs more than it saved.

/// Drops the page table entries of every read-only file mapping of this
/// process that holds no private (written) pages. What is read again
/// faults back in from the page cache, so nothing changes but residency.
/// Allocates (reads `/proc/self/smaps`).
pub(crate) fn drop_file_page_mappings() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut mapping: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let (perms, path) = (f.next().unwrap_or(""), f.nth(3).unwrap_or(""));
            let read_only = perms.starts_with('r') && !perms.contains('w');
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

/// In a prepared sandbox (a fork of the supervisor): unmaps the
/// supervisor's mappings of BPF maps (the audit ring buffers, half a MiB
/// resident each); the sandbox never reads them. Allocates (reads
/// `/proc/self/maps`).
pub(crate) fn unmap_bpf_maps() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines().filter(|l| l.ends_with(" anon_inode:bpf-map")) {
        let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
        let parsed = range.map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)));
        if let Some((Ok(a), Ok(b))) = parsed {
            // SAFETY: in a forked sandbox, which never touches the
            // supervisor's BPF map mappings; nothing refers to them.
            unsafe { libc::munmap(a as *mut libc::c_void, b - a) };
        }
    }
}

/// In a prepared sandbox, while it waits: writes heap and stack pages so
/// that the second half's allocations and frames land on pages of its own,
/// not on pages still shared with the supervisor (copy-on-write faults on
/// the request's path). The heap part stays under glibc's trim and mmap
/// thresholds (128 KiB), so the freed chunks stay in the heap for reuse.
pub(crate) fn prefault_private_pages() {
    let chunks: Vec<Vec<u8>> = (0..12).map(|_| vec![1u8; 8 * 1024]).collect();
    std::hint::black_box(&chunks);
    drop(chunks);
    #[inline(never)]
    fn stack() {
        let mut frame = [0u8; 32 * 1024];
        std::hint::black_box(&mut frame);
    }
    stack();
}
