//! A symbolic cBPF program: instructions whose jumps name labels, resolved
//! to 8-bit `jt`/`jf` offsets when the program is assembled.
//!
//! cBPF conditional jumps only reach 255 instructions forward. A jump whose
//! target is farther gets a trampoline: an unconditional `JA` (32-bit
//! offset) placed right after the jump, which the jump targets instead.
//! Only the far path pays the extra instruction. Inserting trampolines moves
//! later code, so resolution repeats until no new trampoline is needed (a
//! jump never loses its trampoline, so this terminates).

use super::insn::Insn;
use super::SeccompError;

/// A jump target; bound to the position of the next emitted instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Any non-jump instruction.
    Plain(Insn),
    /// Conditional jump `code` against `k`.
    Jump { code: u16, k: u32, jt: Label, jf: Label },
}

/// The program under construction.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    ops: Vec<(Op, Option<u32>)>,
    /// Op index each label is bound to.
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub(crate) fn new() -> Asm {
        Asm::default()
    }

    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction emitted.
    pub(crate) fn bind(&mut self, l: Label) {
        debug_assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.ops.len());
    }

    pub(crate) fn emit(&mut self, insn: Insn, line: Option<u32>) {
        self.ops.push((Op::Plain(insn), line));
    }

    pub(crate) fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label, line: Option<u32>) {
        self.ops.push((Op::Jump { code, k, jt, jf }, line));
    }

    /// Resolves labels and inserts trampolines.
    pub(crate) fn assemble(self) -> Result<(Vec<Insn>, Vec<Option<u32>>), SeccompError> {
        let n = self.ops.len();
        let target = |l: Label, from: usize| -> Result<usize, SeccompError> {
            let at = self.labels[l.0].ok_or_else(|| SeccompError::Internal(format!("label {} is never bound", l.0)))?;
            if at <= from || at >= n {
                return Err(SeccompError::Internal(format!(
                    "jump from op {from} to op {at} is not forward inside the program ({n} ops)"
                )));
            }
            Ok(at)
        };
        // Per op: whether jt / jf go through a trampoline.
        let mut tramp = vec![(false, false); n];
        let mut pos = vec![0usize; n];
        loop {
            let mut p = 0;
            for (i, t) in tramp.iter().enumerate() {
                pos[i] = p;
                p += 1 + usize::from(t.0) + usize::from(t.1);
            }
            let mut changed = false;
            for (i, (op, _)) in self.ops.iter().enumerate() {
                if let Op::Jump { jt, jf, .. } = *op {
                    let next = pos[i] + 1;
                    if !tramp[i].0 && pos[target(jt, i)?] - next > usize::from(u8::MAX) {
                        tramp[i].0 = true;
                        changed = true;
                    }
                    if !tramp[i].1 && pos[target(jf, i)?] - next > usize::from(u8::MAX) {
                        tramp[i].1 = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut insns = Vec::with_capacity(n);
        let mut lines = Vec::with_capacity(n);
        for (i, &(op, line)) in self.ops.iter().enumerate() {
            let next = pos[i] + 1;
            match op {
                Op::Plain(insn) => insns.push(insn),
                Op::Jump { code, k, jt, jf } => {
                    let (tt, tf) = tramp[i];
                    let dt = if tt { 0 } else { pos[target(jt, i)?] - next };
                    let df = if tf { usize::from(tt) } else { pos[target(jf, i)?] - next };
                    let (dt, df) = (u8::try_from(dt), u8::try_from(df));
                    let (Ok(dt), Ok(df)) = (dt, df) else {
                        return Err(SeccompError::Internal(format!("jump at op {i} out of range")));
                    };
                    insns.push(Insn::jump(code, k, dt, df));
                    lines.push(line);
                    // Trampolines sit right after the jump, jt's first.
                    for (has, l) in [(tt, jt), (tf, jf)] {
                        if has {
                            let here = insns.len() + 1;
                            let off = pos[target(l, i)?] - here;
                            let off = u32::try_from(off).map_err(|_| SeccompError::TooLarge { len: off })?;
                            insns.push(Insn::ja(off));
                            lines.push(line);
                        }
                    }
                    continue;
                }
            }
            lines.push(line);
        }
        Ok((insns, lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::insn::{JEQ_K, JGE_K};

    #[test]
    fn near_jumps_use_offsets() {
        let mut a = Asm::new();
        let (t, f) = (a.label(), a.label());
        a.jump(JEQ_K, 7, t, f, Some(1));
        a.bind(t);
        a.emit(Insn::ret(1), None);
        a.bind(f);
        a.emit(Insn::ret(2), None);
        let (insns, lines) = a.assemble().unwrap();
        assert_eq!(insns[0], Insn::jump(JEQ_K, 7, 0, 1));
        assert_eq!(lines, vec![Some(1), None, None]);
    }

    #[test]
    fn far_jumps_get_trampolines() {
        let mut a = Asm::new();
        let (near, far) = (a.label(), a.label());
        a.jump(JGE_K, 7, far, near, None);
        a.bind(near);
        for _ in 0..300 {
            a.emit(Insn::ret(1), None);
        }
        a.bind(far);
        a.emit(Insn::ret(2), None);
        let (insns, _) = a.assemble().unwrap();
        assert_eq!(insns.len(), 303);
        assert_eq!(insns[0], Insn::jump(JGE_K, 7, 0, 1));
        assert_eq!(insns[1], Insn::ja(300));
        assert_eq!(insns[302], Insn::ret(2));
    }

    #[test]
    fn unbound_label_is_an_error() {
        let mut a = Asm::new();
        let (l, m) = (a.label(), a.label());
        a.jump(JEQ_K, 0, l, m, None);
        a.bind(m);
        a.emit(Insn::ret(0), None);
        assert!(matches!(a.assemble(), Err(SeccompError::Internal(_))));
    }
}
