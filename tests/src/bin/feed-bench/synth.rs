//! The synthetic feed: shaped like real ones (~85 % v4 hosts, ~10 % v4
//! prefixes /16–/31, ~5 % v6 hosts and /48–/64 prefixes), in the plain
//! format, and deterministic, so every run and every peer sees the same
//! entries.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

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

/// Line `i` of the feed: a pure function of (seed, i), so the refreshed
/// version can keep most lines and replace a chosen few.
fn line(seed: u64, i: u64, out: &mut impl Write) -> io::Result<()> {
    let mut r = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    r.next();
    let kind = r.next() % 100;
    let x = r.next();
    match kind {
        0..85 => {
            // Anywhere except 0/8 and 127/8, which feeds do not list.
            let a = (x as u32 % 0xdf00_0000) + 0x0100_0000;
            writeln!(out, "{}", Ipv4Addr::from(a))
        }
        85..95 => {
            let len = 16 + (x >> 40) as u32 % 16;
            let a = (x as u32 % 0xdf00_0000) + 0x0100_0000;
            let net = a & (u32::MAX << (32 - len));
            writeln!(out, "{}/{len}", Ipv4Addr::from(net))
        }
        _ => {
            let hi = 0x2001_0db8_0000_0000u128 << 64;
            let a = hi | (u128::from(x) << 32) | u128::from(r.next() as u32);
            if kind.is_multiple_of(2) {
                writeln!(out, "{}", Ipv6Addr::from(a))
            } else {
                let len = 48 + (x >> 50) as u32 % 17;
                let net = a & (u128::MAX << (128 - len));
                writeln!(out, "{}/{len}", Ipv6Addr::from(net))
            }
        }
    }
}

/// Writes `n` lines to `path`; with `alt = Some((stride, seed))`, every
/// line whose index is a multiple of `stride` comes from `seed` instead,
/// which is how the refresh changes a fixed share of the feed.
pub fn write_feed(path: &Path, n: u64, alt: Option<(u64, u64)>) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for i in 0..n {
        let seed = match alt {
            Some((stride, alt_seed)) if i % stride == 0 => alt_seed,
            _ => 1,
        };
        line(seed, i, &mut w)?;
    }
    w.flush()
}
