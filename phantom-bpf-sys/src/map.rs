//! Map commands: create, lookup, update, iterate keys.

use crate::{attr, call, object_name, owned_fd, sys_bpf, SysError};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Creates a map; `name` is at most 15 of `[A-Za-z0-9_.]`.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> Result<OwnedFd, SysError> {
    let mut a = attr::MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: object_name(name)?,
        ..Default::default()
    };
    // SAFETY: the attr holds no pointers.
    unsafe { call(attr::BPF_MAP_CREATE, "BPF_MAP_CREATE", &mut a) }.map(owned_fd)
}

fn elem(map: BorrowedFd<'_>, key: u64, value: u64, flags: u64) -> attr::MapElem {
    attr::MapElem { map_fd: map.as_raw_fd() as u32, key, value, flags, ..Default::default() }
}

/// Reads the value at `key` into `value` (both sized as the map says).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<(), SysError> {
    let mut a = elem(map, key.as_ptr() as u64, value.as_mut_ptr() as u64, 0);
    // SAFETY: key and value point to live buffers; the caller sized them
    // as the map's key and value (the kernel copies exactly those sizes).
    unsafe { call(attr::BPF_MAP_LOOKUP_ELEM, "BPF_MAP_LOOKUP_ELEM", &mut a) }.map(drop)
}

/// Whether `key` is in the map (`value` receives its value).
pub fn map_contains(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool, SysError> {
    let mut a = elem(map, key.as_ptr() as u64, value.as_mut_ptr() as u64, 0);
    // SAFETY: key and value point to live buffers sized as the map's key
    // and value.
    match unsafe { sys_bpf(attr::BPF_MAP_LOOKUP_ELEM, &mut a) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(source) => Err(SysError::Syscall { cmd: "BPF_MAP_LOOKUP_ELEM", source }),
    }
}

/// Writes `value` at `key` (both sized as the map says; `flags`:
/// [`crate::BPF_ANY`], ...).
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> Result<(), SysError> {
    let mut a = elem(map, key.as_ptr() as u64, value.as_ptr() as u64, flags);
    // SAFETY: key and value point to live buffers the caller sized as the
    // map's key and value; the kernel only reads them.
    unsafe { call(attr::BPF_MAP_UPDATE_ELEM, "BPF_MAP_UPDATE_ELEM", &mut a) }.map(drop)
}

/// Every key of a hash map (`BPF_MAP_GET_NEXT_KEY` from no key), in the
/// map's order.
pub fn map_keys(map: BorrowedFd<'_>, key_size: usize) -> Result<Vec<Vec<u8>>, SysError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; key_size];
        let mut a = elem(map, keys.last().map_or(0, |k| k.as_ptr() as u64), next.as_mut_ptr() as u64, 0);
        // SAFETY: key is null (first key) or a live key-sized buffer; next
        // is a writable key-sized buffer.
        match unsafe { sys_bpf(attr::BPF_MAP_GET_NEXT_KEY, &mut a) } {
            Ok(_) => keys.push(next),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(source) => return Err(SysError::Syscall { cmd: "BPF_MAP_GET_NEXT_KEY", source }),
        }
    }
}
