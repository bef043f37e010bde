//! The audit record of a cgroup program's denial ([`crate::audit`]'s
//! layout, docs/audit.md): built on the program's stack, sent with
//! `bpf_ringbuf_output` to [`RINGBUF_MAP`], then `return 0`. Allowed
//! actions never reach it, so it costs nothing on the path that passes.
//!
//! | program | object |
//! |---|---|
//! | connect4, sendmsg4, bind4 | `inet4`: the destination (bind: local) address and port |
//! | connect6, sendmsg6, bind6 | `inet6`: the same, IPv6 (IPv4-mapped addresses as given) |
//! | sock_create | `socket`: family, type, protocol |
//! | dev | `device`: access type (access << 16 \| type), major, minor |
//!
//! No single rule denies (a denial is "no rule allowed it"), so `rule` is
//! [`NO_RULE`](crate::audit::NO_RULE) and `line` 0; `hook` is the
//! program's [`ProgKind::audit_id`].

use super::ProgKind;
use crate::audit::{self, Layer, ObjectKind, Site, Source, Verdict, HEADER_LEN, RINGBUF_MAP};
use crate::bpf::{Helper, Insn, Reg, Reg::*};

/// Where the record lives: 128 bytes below the frame pointer (the LPM
/// key of the egress programs sits at fp-24..fp-4, above it).
const REC: i16 = -128;

/// Context offsets the objects are copied from (`struct bpf_sock_addr`,
/// `struct bpf_sock`, `struct bpf_cgroup_dev_ctx`).
const SA_USER_IP4: i16 = 4;
const SA_USER_IP6: i16 = 8;
const SA_USER_PORT: i16 = 24;
const SK_FAMILY: i16 = 4;
const DEV_ACCESS_TYPE: i16 = 0;

/// Copies `words` u32s from the context (`ctx`) to the object area.
fn copy_words(ctx: Reg, from: i16, words: i16) -> Vec<Insn> {
    (0..words)
        .flat_map(|k| [Insn::ldx_w(R0, ctx, from + 4 * k), Insn::stx_w(R9, audit::off::OBJECT + 4 * k, R0)])
        .collect()
}

/// The object of `kind` from the context in `ctx`, and its length.
fn object(kind: ProgKind, ctx: Reg) -> (ObjectKind, u16, Vec<Insn>) {
    let port = |at: i16| {
        vec![Insn::ldx_w(R0, ctx, SA_USER_PORT), Insn::to_be(R0, 16), Insn::stx_h(R9, audit::off::OBJECT + at, R0)]
    };
    match kind {
        ProgKind::Connect4 | ProgKind::Sendmsg4 | ProgKind::Bind4 => {
            let mut p = copy_words(ctx, SA_USER_IP4, 1);
            p.extend(port(4));
            (ObjectKind::Inet4, 6, p)
        }
        ProgKind::Connect6 | ProgKind::Sendmsg6 | ProgKind::Bind6 => {
            let mut p = copy_words(ctx, SA_USER_IP6, 4);
            p.extend(port(16));
            (ObjectKind::Inet6, 18, p)
        }
        ProgKind::SockCreate => (ObjectKind::Socket, 12, copy_words(ctx, SK_FAMILY, 3)),
        ProgKind::Device => (ObjectKind::Device, 12, copy_words(ctx, DEV_ACCESS_TYPE, 3)),
    }
}

/// `deny:` — the record, then `return 0`. The context must be in `ctx` (a
/// callee-saved register); r9 is used for the record.
pub(super) fn deny_tail(kind: ProgKind, ctx: Reg, label: &str) -> Vec<Insn> {
    let (object_kind, len, copy) = object(kind, ctx);
    let mut p = vec![Insn::mov64_reg(R9, R10).label(label), Insn::add64_imm(R9, i32::from(REC))];
    p.extend(copy);
    p.extend(audit::store_object(R9, object_kind, len));
    p.extend(audit::store_site(R9, Site::NONE));
    p.push(Insn::st_w(R9, audit::off::DETAIL, 0));
    p.extend(audit::emit_task_fields(
        R9,
        Source { layer: Layer::CgroupBpf, verdict: Verdict::Deny, hook: kind.audit_id() },
    ));
    p.extend([
        Insn::ld_map(R1, RINGBUF_MAP),
        Insn::mov64_reg(R2, R9),
        Insn::mov64_imm(R3, (HEADER_LEN + usize::from(len)) as i32),
        Insn::mov64_imm(R4, 0),
        Insn::call(Helper::RingbufOutput),
        Insn::mov64_imm(R0, 0),
        Insn::exit(),
    ]);
    p
}
