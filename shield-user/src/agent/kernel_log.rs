//! The XDP program's log (its rare paths, shield-ebpf/src/rare.rs),
//! forwarded into the agent's tracing under the target `shield::kernel`.
//!
//! Off by default: the program logs only when the agent's log filter
//! shows `shield::kernel` at debug (`--log-level info,shield::kernel=debug`),
//! read once, before the program is loaded (docs/OPERATIONS.md, "Kernel
//! log"). A later filter change needs a restart.

use aya_log::EbpfLogger;

/// The level to load the program with: the most verbose one the agent's
/// tracing filter shows for `shield::kernel`, or `None` (no log, no
/// reader) unless that reaches debug, the level every rare path logs at
/// (shield-ebpf/src/rare.rs). The default filter, `info`, leaves it off.
pub fn wanted_level() -> Option<aya_log::Level> {
    use tracing::Level as T;
    if tracing::enabled!(target: "shield::kernel", T::TRACE) {
        Some(aya_log::Level::Trace)
    } else if tracing::enabled!(target: "shield::kernel", T::DEBUG) {
        Some(aya_log::Level::Debug)
    } else {
        None
    }
}

/// A `log::Log` that hands each kernel record to tracing, with the line
/// of the program it came from.
#[derive(Clone, Copy, Debug, Default)]
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        // The level was filtered in the kernel; tracing filters again.
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let module = r.module_path().unwrap_or("?");
        let line = r.line().unwrap_or(0);
        let msg = r.args();
        match r.level() {
            log::Level::Error => {
                tracing::error!(target: "shield::kernel", module, line, "{msg}")
            }
            log::Level::Warn => tracing::warn!(target: "shield::kernel", module, line, "{msg}"),
            log::Level::Info => tracing::info!(target: "shield::kernel", module, line, "{msg}"),
            log::Level::Debug => {
                tracing::debug!(target: "shield::kernel", module, line, "{msg}")
            }
            log::Level::Trace => {
                tracing::trace!(target: "shield::kernel", module, line, "{msg}")
            }
        }
    }

    fn flush(&self) {}
}

/// Reads the program's log for as long as the agent runs. Readiness is
/// cleared before the ring is drained: a record written after the drain
/// finds the ring empty, so the kernel wakes the reader for it again.
pub async fn forward<L: log::Log + Send + 'static>(logger: EbpfLogger<L>) {
    // SAFETY: the logger owns its ring buffer's map fd and keeps it open,
    // unchanged, for as long as it lives, which is as long as the AsyncFd
    // that owns it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let e = e.into_parts().1;
            tracing::error!(error = %e, "the XDP program's log cannot be read; it is not forwarded");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.clear_ready();
        guard.get_inner_mut().flush();
    }
}
