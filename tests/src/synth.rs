//! The synthetic feed of the benchmarks: shaped like real ones (~85 % v4
//! hosts, ~10 % v4 prefixes /16–/31, ~5 % v6 hosts and /48–/64 prefixes),
//! in the plain format, and deterministic, so every run and every peer sees
//! the same entries.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use shield_user::net::Cidr;

/// xorshift64*: deterministic, dependency-free, good enough for addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Entry `i` of the feed: a pure function of (seed, i), so the refreshed
/// version can keep most entries and replace a chosen few.
fn entry(seed: u64, i: u64) -> Cidr {
    let mut r = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    r.next();
    let kind = r.next() % 100;
    let x = r.next();
    // Anywhere from 1.0.0.0 to 223.255.255.255: unicast, no 0/8.
    let v4 = (x as u32 % 0xdf00_0000) + 0x0100_0000;
    match kind {
        0..85 => Cidr::host(IpAddr::V4(Ipv4Addr::from(v4))),
        85..95 => Cidr::truncating(
            IpAddr::V4(Ipv4Addr::from(v4)),
            16 + ((x >> 40) as u32 % 16) as u8,
        ),
        _ => {
            let hi = 0x2001_0db8_0000_0000u128 << 64;
            let a = IpAddr::V6(Ipv6Addr::from(
                hi | (u128::from(x) << 32) | u128::from(r.next() as u32),
            ));
            if kind.is_multiple_of(2) {
                Cidr::host(a)
            } else {
                Cidr::truncating(a, 48 + ((x >> 50) as u32 % 17) as u8)
            }
        }
    }
}

/// Writes `n` lines to `path`; with `alt = Some((stride, seed))`, every
/// line whose index is a multiple of `stride` comes from `seed` instead,
/// which is how the refresh changes a fixed share of the feed.
pub fn write_feed(path: &Path, n: u64, alt: Option<(u64, u64)>) -> io::Result<()> {
    write_feed_outside(path, n, alt, None)
}

/// As [`write_feed`], leaving out every entry that overlaps `outside`
/// (and going on until `n` lines are written): a benchmark that floods
/// from `outside` needs its sources to reach the rate limiter, which comes
/// after the feeds in the pipeline.
pub fn write_feed_outside(
    path: &Path,
    n: u64,
    alt: Option<(u64, u64)>,
    outside: Option<Cidr>,
) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    let mut written = 0;
    for i in 0.. {
        if written == n {
            break;
        }
        let seed = match alt {
            Some((stride, alt_seed)) if i % stride == 0 => alt_seed,
            _ => 1,
        };
        let e = entry(seed, i);
        if outside.is_some_and(|o| o.contains(&e) || e.contains(&o)) {
            continue;
        }
        // Hosts bare, as feeds list them.
        if e.is_host() {
            writeln!(w, "{}", e.addr())?;
        } else {
            writeln!(w, "{e}")?;
        }
        written += 1;
    }
    w.flush()
}
