//! The two pieces of systemd's protocol the agent speaks: readiness and
//! watchdog notifications over `$NOTIFY_SOCKET` (a datagram socket, possibly
//! in the abstract namespace when it starts with `@`).

use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

/// Sends `state` (e.g. `READY=1\nSTATUS=enforcing`) when running under a
/// service manager; does nothing otherwise. Failures are logged, not fatal:
/// enforcement matters more than telling systemd about it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &a)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when the
/// watchdog is on and meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
