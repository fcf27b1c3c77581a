//! Ctrl-C, SIGTERM and SIGHUP end the demo early but never skip the cleanup:
//! the handler only raises a flag that every wait loop checks.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn raise(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an
        // atomic is async-signal-safe; the pointers passed are valid.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = raise as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            anyhow::bail!(
                "installing the handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// True once the user asked the demo to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps `d` in short steps; false when interrupted.
pub fn sleep(d: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if stopped() {
            return false;
        }
        std::thread::sleep(
            std::time::Duration::from_millis(50).min(end - std::time::Instant::now()),
        );
    }
    !stopped()
}
