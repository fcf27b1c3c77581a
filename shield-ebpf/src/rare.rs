//! The kernel's rare paths, logged at debug level through aya-log's ring
//! buffer for the agent to forward into its own log under the target
//! `shield::kernel` (docs/OPERATIONS.md, "Kernel log").
//!
//! Off unless the agent is started with `shield::kernel=debug` in its log
//! filter: the agent then sets aya-log's `AYA_LOG_LEVEL` before the
//! program is loaded. That global lives in read-only data, so the verifier
//! knows its value, and a program loaded with logging off has every
//! logging branch removed as dead code: nothing runs per packet
//! (`a_program_loaded_with_its_log_off_carries_no_logging_code` in
//! tests/tests/kernel_log.rs measures it).

/// `aya_log_ebpf::debug!` with no context: aya-log-ebpf 0.2 ignores the
/// context argument, and the rare paths sit in helpers that have none.
macro_rules! rare {
    ($($arg:tt)+) => {
        aya_log_ebpf::debug!(&(), $($arg)+)
    };
}

pub(crate) use rare;
