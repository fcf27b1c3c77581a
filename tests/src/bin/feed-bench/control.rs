//! The control plane around a loaded agent: sources it tracks, how long a
//! `/metrics` scrape takes, and how long a ban takes from `shieldctl ban
//! add` to the first packet the data plane drops.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use shield_common::maps::{Bucket, BucketKey, MAP_BUCKETS};
use shield_tests::{bpfsys, packet::Pkt};
use shield_user::dataplane::{bucket_key, pinned_link_ids};

use crate::sys::{Ctx, Res};

/// Writes `n` live buckets (sources 10.0.0.0 + i) into the agent's pinned
/// bucket map, as if that many sources had sent traffic.
pub fn track_sources(pin_dir: &Path, n: u32) -> Res<()> {
    let path = pin_dir.join(MAP_BUCKETS);
    let data = MapData::from_pin(&path).ctx(|| format!("opening {}", path.display()))?;
    let mut m: HashMap<MapData, BucketKey, Bucket> =
        HashMap::try_from(Map::LruHashMap(data)).ctx(|| "the bucket map")?;
    let mask = shield_common::addr::v6_mask(64);
    let now = shield_user::clock::monotonic_ns();
    let b = Bucket {
        pkt_tat: now,
        syn_tat: now,
        last_event_ns: 0,
        drops: 0,
    };
    for i in 0..n {
        let key = bucket_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 0, 0, &mask);
        m.insert(key, b, 0).ctx(|| "inserting a bucket")?;
    }
    Ok(())
}

fn in_netns(ns: &str) -> Res<()> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).ctx(|| format!("opening {path}"))?;
    // SAFETY: valid fd; CLONE_NEWNET moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Wall time of `GET /metrics` from inside `ns`, connect to the last byte,
/// `times` times; and the size of the last answer.
pub fn scrape(ns: &str, port: u16, times: usize) -> Res<(Vec<f64>, usize)> {
    let ns = ns.to_string();
    thread::spawn(move || -> Res<(Vec<f64>, usize)> {
        in_netns(&ns)?;
        let mut ms = Vec::new();
        let mut size = 0;
        for _ in 0..times {
            let t = Instant::now();
            let mut s = TcpStream::connect(("127.0.0.1", port)).ctx(|| "connecting to /metrics")?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .ctx(|| "socket")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ctx(|| "sending the request")?;
            let mut body = Vec::new();
            s.read_to_end(&mut body).ctx(|| "reading /metrics")?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if !body.starts_with(b"HTTP/1.1 200") {
                return Err(format!(
                    "/metrics answered {}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                ));
            }
            size = body.len();
        }
        Ok((ms, size))
    })
    .join()
    .map_err(|_| "the scrape thread panicked".to_string())?
}

/// From spawning `shieldctl ban add ADDR` until the agent's own program
/// (found through its pinned link on `iface`) drops a packet from ADDR,
/// polled with single BPF_PROG_TEST_RUNs from another thread. Also returns
/// how long shieldctl itself took.
pub fn ban_latency(
    ctl: &Path,
    socket: &Path,
    pin_dir: &Path,
    iface: &str,
    addr: Ipv4Addr,
) -> Res<(f64, f64)> {
    let (_, prog_id) = pinned_link_ids(pin_dir, iface)
        .ok_or_else(|| format!("no pinned link for {iface} in {}", pin_dir.display()))?;
    let fd = bpfsys::prog_fd_by_id(prog_id).ctx(|| format!("program id {prog_id}"))?;
    let frame = Pkt::udp(&addr.to_string(), 443).build();
    if bpfsys::test_run(&fd, &frame, 1, 0, 0)
        .ctx(|| "test run")?
        .retval
        != bpfsys::XDP_PASS
    {
        return Err(format!("{addr} is dropped before it is banned"));
    }
    let go = Arc::new(AtomicBool::new(false));
    let poller = {
        let go = go.clone();
        thread::spawn(move || -> Res<Instant> {
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let start = Instant::now();
            loop {
                let r = bpfsys::test_run(&fd, &frame, 1, 0, 0).ctx(|| "test run")?;
                if r.retval == bpfsys::XDP_DROP {
                    return Ok(Instant::now());
                }
                if start.elapsed() > Duration::from_secs(10) {
                    return Err("the ban was not enforced within 10 s".into());
                }
            }
        })
    };
    let mut cmd = Command::new(ctl);
    cmd.arg("--socket")
        .arg(socket)
        .args(["ban", "add", &addr.to_string(), "--ttl", "1h"]);
    // Timed from before the spawn on purpose: the latency counts
    // shieldctl's own start-up, as an operator sees it.
    let start_ctl = Instant::now();
    go.store(true, Ordering::Release);
    let out = cmd.output().ctx(|| "running shieldctl ban add")?;
    let ctl_ms = start_ctl.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!(
            "shieldctl ban add {addr}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dropped = poller
        .join()
        .map_err(|_| "the poller panicked".to_string())??;
    Ok((
        dropped.duration_since(start_ctl).as_secs_f64() * 1e3,
        ctl_ms,
    ))
}
