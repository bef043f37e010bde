//! Loads a policy's XDP programs ([`phantom_ebpf::xdp`]): creates and
//! fills their maps (the flow map both programs share, LPM tries when the
//! policy asked for them), binds the map fds into the encoded
//! instructions and loads both programs, keeping the whole verifier log of
//! a rejection with its instructions mapped to policy lines.

use super::NetError;
use phantom_bpf_sys as sys;
use phantom_ebpf::xdp::{Direction, XdpProgram, XdpPrograms, BPF_PROG_TYPE_XDP};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Both programs, loaded; their maps live as long as the programs do
/// (the kernel holds them), and the fds here keep them inspectable.
#[derive(Debug)]
pub struct LoadedXdp {
    /// For the host end of the veth.
    pub egress: OwnedFd,
    /// For the sandbox end.
    pub ingress: OwnedFd,
    pub maps: Vec<(String, OwnedFd)>,
}

/// Creates the maps, then loads both programs.
pub fn load(progs: &XdpPrograms) -> Result<LoadedXdp, NetError> {
    let mut maps = Vec::new();
    for spec in &progs.maps {
        let kernel = |what: &str| {
            let what = format!("{what} `{}`", spec.name);
            move |e: sys::SysError| NetError::Kernel { what, source: e.into() }
        };
        let fd =
            sys::map_create(spec.map_type, spec.key_size, spec.value_size, spec.max_entries, spec.flags, &spec.name)
                .map_err(kernel("creating map"))?;
        for (k, v) in &spec.entries {
            sys::map_update(fd.as_fd(), k, v, sys::BPF_ANY).map_err(kernel("filling map"))?;
        }
        maps.push((spec.name.clone(), fd));
    }
    let egress = load_one(progs.get(Direction::Egress), &maps)?;
    let ingress = load_one(progs.get(Direction::Ingress), &maps)?;
    Ok(LoadedXdp { egress, ingress, maps })
}

fn load_one(prog: &XdpProgram, maps: &[(String, OwnedFd)]) -> Result<OwnedFd, NetError> {
    let mut enc = prog.encoded.clone();
    for name in prog.maps() {
        let fd = maps.iter().find(|(n, _)| n == name).map(|(_, fd)| fd.as_raw_fd()).ok_or_else(|| {
            NetError::Compile(format!("{} references map `{name}`, which the program set lacks", prog.direction.name()))
        })?;
        enc.bind_map(name, fd).map_err(|e| NetError::Compile(e.to_string()))?;
    }
    let bytes = enc.to_bytes();
    let load = sys::ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        expected_attach_type: 0,
        insns: &bytes,
        license: c"GPL",
        name: prog.direction.name(),
        attach_btf_id: 0,
    };
    match sys::prog_load(&load, sys::INITIAL_LOG_SIZE) {
        Ok((fd, _)) => Ok(fd),
        Err(sys::SysError::Rejected { source, log }) => {
            let insn = crate::loader::last_insn_index(&log.0);
            let line = insn.and_then(|i| prog.loc_of_slot(i)).map(|l| l.to_string());
            Err(NetError::Rejected { program: prog.direction.name(), source, insn, line, log: log.0 })
        }
        Err(e) => Err(NetError::Kernel { what: format!("loading {}", prog.direction.name()), source: e.into() }),
    }
}
