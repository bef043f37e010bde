//! What the file_open program sees in the interpreter: a context holding
//! a fake `struct file *`, that file, and its helpers.
//! `bpf_map_lookup_elem` on the scratch map returns [`Run::scratch`] (kept
//! between runs, so stale bytes of earlier paths stay, as in the per-CPU
//! value); `bpf_d_path` writes [`Run::path`] the way the kernel does (built
//! at the end of the buffer, then moved to its start) or returns
//! `-ENAMETOOLONG`; `bpf_ringbuf_output` collects the record; the task
//! helpers answer [`Task`](super::ebpf_interp::Task).

use super::ebpf_interp::helpers::{self, D_PATH, MAP_LOOKUP_ELEM, RINGBUF_OUTPUT};
use super::ebpf_interp::{self, map_fd, Env, Mem, Outcome, CTX};
use phantom_ebpf::lsm::KernelLayout;

pub const SCRATCH_FD: i32 = 1;
pub const RINGBUF_FD: i32 = 2;
const SCRATCH: u64 = 0x3_0000_0000;
const FILE: u64 = 0x5_0000_0000;
const FILE_SIZE: usize = 256;
const ENAMETOOLONG: i64 = 36;

/// One call of the program.
pub struct Run<'a> {
    pub layout: KernelLayout,
    pub f_mode: u32,
    pub f_flags: u32,
    /// What `bpf_d_path` writes (without its NUL).
    pub path: &'a [u8],
    pub scratch: &'a mut [u8],
}

struct FileOpen<'r, 'a> {
    run: &'r mut Run<'a>,
    ctx: [u8; 8],
    file: [u8; FILE_SIZE],
}

impl Env for FileOpen<'_, '_> {
    fn region(&mut self, addr: u64) -> Option<(&mut [u8], u64)> {
        match addr >> 32 {
            1 => Some((&mut self.ctx, CTX)),
            3 => Some((&mut *self.run.scratch, SCRATCH)),
            5 => Some((&mut self.file, FILE)),
            _ => None,
        }
    }

    fn call(mem: &mut Mem<Self>, id: i32, args: [u64; 5]) -> Result<u64, String> {
        match id {
            MAP_LOOKUP_ELEM => {
                if map_fd(args[0]) != Some(SCRATCH_FD) || mem.load(args[1], 4)? != 0 {
                    return Err("map lookup: not key 0 of the scratch map".into());
                }
                Ok(SCRATCH)
            }
            D_PATH => d_path(mem, args[0], args[1], args[2] as usize),
            RINGBUF_OUTPUT => helpers::ringbuf_output(mem, RINGBUF_FD, args),
            _ => helpers::task(mem, id, args),
        }
    }
}

fn d_path(mem: &mut Mem<FileOpen>, path_ptr: u64, buf: u64, size: usize) -> Result<u64, String> {
    if path_ptr != FILE + u64::from(mem.env.run.layout.file_f_path) {
        return Err(format!("bpf_d_path: {path_ptr:#x} is not &file->f_path"));
    }
    let path = mem.env.run.path.to_vec();
    let len = path.len() + 1;
    if len > size {
        return Ok((-ENAMETOOLONG) as u64);
    }
    let b = mem.bytes(buf, size)?;
    // d_path builds the name backwards from the buffer's end.
    b[size - len..size - 1].copy_from_slice(&path);
    b[size - 1] = 0;
    b.copy_within(size - len..size, 0);
    Ok(len as u64)
}

/// Runs `prog` (encoded, the scratch map bound to [`SCRATCH_FD`] and the
/// ring buffer to [`RINGBUF_FD`]) with r1 = the context `[struct file *]`.
pub fn run(prog: &[u8], run: &mut Run) -> Result<Outcome, String> {
    let mut file = [0u8; FILE_SIZE];
    let l = run.layout;
    file[l.file_f_mode as usize..][..4].copy_from_slice(&run.f_mode.to_le_bytes());
    file[l.file_f_flags as usize..][..4].copy_from_slice(&run.f_flags.to_le_bytes());
    ebpf_interp::run(prog, &mut FileOpen { run, ctx: FILE.to_le_bytes(), file })
}
