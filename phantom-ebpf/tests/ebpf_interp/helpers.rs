//! Helpers every program under test may call with the same answers: the
//! audit records' task helpers and `bpf_ringbuf_output`.

use super::{map_fd, Env, Mem};

/// Helper ids (include/uapi/linux/bpf.h).
pub const MAP_LOOKUP_ELEM: i32 = 1;
pub const KTIME_GET_NS: i32 = 5;
pub const GET_CURRENT_PID_TGID: i32 = 14;
pub const GET_CURRENT_COMM: i32 = 16;
pub const GET_CURRENT_CGROUP_ID: i32 = 80;
pub const RINGBUF_OUTPUT: i32 = 130;
pub const D_PATH: i32 = 147;

/// What the task helpers answer: the acting task.
pub struct Task;

impl Task {
    pub const CGROUP: u64 = 0x1234_5678;
    pub const TIME: u64 = 42;
    pub const TGID: u32 = 4242;
    pub const PID: u32 = 4243;
    pub const COMM: &'static [u8; 16] = b"interp-task\0\0\0\0\0";
}

/// The task helpers ([`Task`]); any other id is unsupported.
pub fn task<E: Env>(mem: &mut Mem<E>, id: i32, [buf, size, ..]: [u64; 5]) -> Result<u64, String> {
    Ok(match id {
        KTIME_GET_NS => Task::TIME,
        GET_CURRENT_PID_TGID => u64::from(Task::TGID) << 32 | u64::from(Task::PID),
        GET_CURRENT_CGROUP_ID => Task::CGROUP,
        GET_CURRENT_COMM => {
            if size != 16 {
                return Err(format!("comm buffer of {size} bytes"));
            }
            mem.bytes(buf, 16)?.copy_from_slice(Task::COMM);
            0
        }
        _ => return Err(format!("unsupported helper {id}")),
    })
}

/// `bpf_ringbuf_output` to the ring buffer bound to `ringbuf_fd`: keeps
/// the record in [`Mem::records`].
pub fn ringbuf_output<E: Env>(
    mem: &mut Mem<E>,
    ringbuf_fd: i32,
    [map, data, size, flags, _]: [u64; 5],
) -> Result<u64, String> {
    if map_fd(map) != Some(ringbuf_fd) || flags != 0 {
        return Err(format!("ringbuf_output: map {map:#x} is not the ring buffer, or flags {flags:#x}"));
    }
    let record = mem.bytes(data, size as usize)?.to_vec();
    mem.records.push(record);
    Ok(0)
}
