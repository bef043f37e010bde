//! Helper function ids (`enum bpf_func_id` in include/uapi/linux/bpf.h) for
//! the helpers Phantom's programs call. The numbers are ABI; the unit test
//! below pins them, and they were checked against the uapi header of the
//! build host.

/// Declares the enum, its ids and its names in one table so they cannot
/// drift apart.
macro_rules! helpers {
    ($($variant:ident = $id:literal => $name:literal,)*) => {
        /// A BPF helper, by `enum bpf_func_id`. `Other` carries any id not
        /// listed (so decoding never loses a call).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Helper {
            $($variant,)*
            Other(i32),
        }

        impl Helper {
            /// Every named helper, for tests and tables.
            pub const NAMED: &'static [Helper] = &[$(Helper::$variant,)*];

            /// The `imm` of the call instruction.
            pub fn id(self) -> i32 {
                match self {
                    $(Helper::$variant => $id,)*
                    Helper::Other(id) => id,
                }
            }

            /// The named variant for a known id, `Other` otherwise.
            pub fn from_id(id: i32) -> Helper {
                match id {
                    $($id => Helper::$variant,)*
                    other => Helper::Other(other),
                }
            }

            /// The kernel's name (`bpf_` + the `BPF_FUNC_` suffix), as
            /// `bpftool` and the verifier log print it.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Helper::$variant => Some($name),)*
                    Helper::Other(_) => None,
                }
            }
        }
    };
}

helpers! {
    MapLookupElem = 1 => "bpf_map_lookup_elem",
    MapUpdateElem = 2 => "bpf_map_update_elem",
    MapDeleteElem = 3 => "bpf_map_delete_elem",
    KtimeGetNs = 5 => "bpf_ktime_get_ns",
    TracePrintk = 6 => "bpf_trace_printk",
    GetPrandomU32 = 7 => "bpf_get_prandom_u32",
    GetSmpProcessorId = 8 => "bpf_get_smp_processor_id",
    TailCall = 12 => "bpf_tail_call",
    GetCurrentPidTgid = 14 => "bpf_get_current_pid_tgid",
    GetCurrentUidGid = 15 => "bpf_get_current_uid_gid",
    GetCurrentComm = 16 => "bpf_get_current_comm",
    GetCurrentTask = 35 => "bpf_get_current_task",
    GetCurrentCgroupId = 80 => "bpf_get_current_cgroup_id",
    SendSignal = 109 => "bpf_send_signal",
    ProbeReadUser = 112 => "bpf_probe_read_user",
    ProbeReadKernel = 113 => "bpf_probe_read_kernel",
    ProbeReadUserStr = 114 => "bpf_probe_read_user_str",
    ProbeReadKernelStr = 115 => "bpf_probe_read_kernel_str",
    SendSignalThread = 117 => "bpf_send_signal_thread",
    RingbufOutput = 130 => "bpf_ringbuf_output",
    RingbufReserve = 131 => "bpf_ringbuf_reserve",
    RingbufSubmit = 132 => "bpf_ringbuf_submit",
    RingbufDiscard = 133 => "bpf_ringbuf_discard",
    DPath = 147 => "bpf_d_path",
    GetCurrentTaskBtf = 158 => "bpf_get_current_task_btf",
}

#[cfg(test)]
mod tests {
    use super::Helper;

    #[test]
    fn ids_match_uapi_bpf_func_id() {
        // Values of `enum bpf_func_id` (include/uapi/linux/bpf.h).
        let expected = [
            (Helper::MapLookupElem, 1),
            (Helper::MapUpdateElem, 2),
            (Helper::MapDeleteElem, 3),
            (Helper::KtimeGetNs, 5),
            (Helper::TracePrintk, 6),
            (Helper::GetCurrentPidTgid, 14),
            (Helper::GetCurrentUidGid, 15),
            (Helper::GetCurrentComm, 16),
            (Helper::GetCurrentCgroupId, 80),
            (Helper::SendSignal, 109),
            (Helper::ProbeReadKernel, 113),
            (Helper::RingbufOutput, 130),
            (Helper::RingbufReserve, 131),
            (Helper::RingbufSubmit, 132),
            (Helper::RingbufDiscard, 133),
            (Helper::DPath, 147),
        ];
        for (h, id) in expected {
            assert_eq!(h.id(), id, "{h:?}");
        }
    }

    #[test]
    fn from_id_inverts_id() {
        for &h in Helper::NAMED {
            assert_eq!(Helper::from_id(h.id()), h);
        }
        assert_eq!(Helper::from_id(9999), Helper::Other(9999));
    }

    #[test]
    fn names_follow_the_kernel_convention() {
        for &h in Helper::NAMED {
            assert!(h.name().unwrap().starts_with("bpf_"), "{h:?}");
        }
    }
}
