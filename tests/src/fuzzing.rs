//! Seeded generators for the packet fuzzer: random policies (as the
//! reference model's [`Policy`], which [`load`] writes into the real maps)
//! and random, mutated frames aimed at the parser's edges: VLAN stacks,
//! IPv4 options and fragments, IPv6 extension-header chains, bogus length
//! fields, truncations, flipped bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shield_common::{
    gcra::{Gcra, NANOS_PER_SEC},
    maps::*,
    model::{Net, Policy},
};
use shield_user::net::Cidr;

use crate::harness::Harness;

/// splitmix64: tiny, fast, and the same sequence everywhere for a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn upto(&mut self, n: usize) -> usize {
        self.below(n as u64 + 1) as usize
    }

    /// True `num` times in `den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn fill(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Sources the policies talk about; most frames come from one of them (or
/// a near neighbour), so rules match often enough to be tested.
#[derive(Clone, Debug)]
pub struct Pool {
    pub v4: Vec<[u8; 4]>,
    pub v6: Vec<[u8; 16]>,
}

impl Pool {
    pub fn new(rng: &mut Rng) -> Pool {
        let bases4: [[u8; 3]; 3] = [[198, 51, 100], [203, 0, 113], [10, 20, 30]];
        let v4 = (0..12)
            .map(|i| {
                let b = bases4[i % 3];
                [b[0], b[1], b[2], rng.byte()]
            })
            .collect();
        let v6 = (0..12)
            .map(|i| {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                a[5] = (i % 3) as u8;
                a[7] = (i % 2) as u8;
                // Some share a /64, some differ only below it.
                if rng.chance(1, 2) {
                    a[8..].copy_from_slice(&rng.fill(8));
                } else {
                    a[15] = rng.byte();
                }
                a
            })
            .collect();
        Pool { v4, v6 }
    }

    /// A pool member, sometimes with its low bits changed, sometimes random.
    pub fn source(&self, rng: &mut Rng, v6: bool) -> [u8; 16] {
        let mut a = [0u8; 16];
        if v6 {
            a = self.v6[rng.below(self.v6.len() as u64) as usize];
            match rng.below(10) {
                0 => a = random_v6(rng),
                1 => a[15] ^= rng.byte(),
                _ => {}
            }
        } else {
            let p = self.v4[rng.below(self.v4.len() as u64) as usize];
            a[..4].copy_from_slice(&p);
            match rng.below(10) {
                0 => a[..4].copy_from_slice(&rng.fill(4)),
                1 => a[3] ^= rng.byte(),
                _ => {}
            }
        }
        a
    }

    fn net(&self, rng: &mut Rng, v6: bool, min: u8, host_bias: bool) -> Net {
        let addr = self.source(rng, v6);
        let max = if v6 { 128 } else { 32 };
        let len = if host_bias && rng.chance(1, 2) {
            max
        } else {
            min + rng.below(u64::from(max - min) + 1) as u8
        };
        Net::new(v6, addr, len)
    }
}

fn random_v6(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&rng.fill(16));
    a
}

/// Far longer than any run: a limit of one per hour admits exactly its burst
/// and then drops, whatever the clock reads meanwhile.
pub const HOUR_NS: u64 = 3600 * NANOS_PER_SEC;

/// A random policy over `pool`. Bans are permanent or long expired, limits
/// are per hour: the verdicts do not depend on when a packet runs.
pub fn policy(rng: &mut Rng, pool: &Pool) -> Policy {
    let mut p = Policy {
        ipv6_prefix: rng.pick(&[48, 56, 64, 64, 128]),
        flags: match rng.below(20) {
            0..=11 => 0,
            12..=14 => CFG_DRY_RUN,
            15..=17 => CFG_MALFORMED_PASS,
            _ => CFG_DRY_RUN | CFG_MALFORMED_PASS,
        },
        ..Policy::default()
    };
    for _ in 0..rng.upto(8) {
        let v6 = rng.chance(1, 2);
        let net = pool.net(rng, v6, if v6 { 16 } else { 8 }, false);
        let class = SourceClass {
            acl_mask: rng.below(16),
            tier: rng.below(4) as u16,
            flags: if rng.chance(1, 4) { SRC_ALLOWED } else { 0 },
            _pad: 0,
        };
        p.sources.insert(net, class);
    }
    for _ in 0..rng.upto(6) {
        let v6 = rng.chance(1, 2);
        let net = pool.net(rng, v6, if v6 { 32 } else { 16 }, true);
        let expires = if rng.chance(1, 3) { 1 } else { BAN_FOREVER };
        let key = p.ban_key(net);
        p.bans.insert(key, expires);
    }
    if rng.chance(1, 3) {
        // Nested CIDR bans, the inner ones expired: the trie's longest match
        // has expired, the outer ban has not.
        let v6 = rng.chance(1, 2);
        let (outer, step) = if v6 { (40u8, 8u8) } else { (20, 2) };
        let addr = pool.source(rng, v6);
        let depth = 1 + rng.below(3) as u8;
        p.bans.insert(Net::new(v6, addr, outer), BAN_FOREVER);
        for d in 1..=depth {
            let net = Net::new(v6, addr, outer + d * step);
            let key = p.ban_key(net);
            p.bans.insert(key, 1);
        }
    }
    for _ in 0..rng.upto(6) {
        let v6 = rng.chance(1, 2);
        let net = pool.net(rng, v6, if v6 { 16 } else { 8 }, true);
        p.feeds.insert(net, 1 + rng.below(5) as u32);
    }
    for _ in 0..rng.upto(6) {
        let proto = rng.pick(&[PROTO_TCP, PROTO_UDP]);
        let port = port(rng);
        let rule = PortRule {
            class: rng.below(4) as u16,
            acl: rng.below(4) as u8,
            flags: if rng.chance(1, 4) { PORT_DRY_RUN } else { 0 },
        };
        p.ports.insert((proto, port), rule);
    }
    for tier in 0..4 {
        for class in 0..4 {
            if !rng.chance(1, 3) {
                continue;
            }
            let mut l = Limits::default();
            if rng.chance(2, 3) {
                l.packets = Gcra::new(1, HOUR_NS, 1 + rng.below(4));
            }
            if rng.chance(1, 2) {
                l.syns = Gcra::new(1, HOUR_NS, 1 + rng.below(3));
            }
            if l != Limits::default() {
                p.limits.insert((tier, class), l);
            }
        }
    }
    p
}

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(1, 5) {
        rng.below(65_536) as u16
    } else {
        rng.pick(&[22, 53, 80, 443, 8443, 0, 65_535])
    }
}

/// The model's form of a prefix.
pub fn net(c: &Cidr) -> Net {
    match c.addr() {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            Net::new(false, b, c.prefix_len())
        }
        IpAddr::V6(a) => Net::new(true, a.octets(), c.prefix_len()),
    }
}

pub fn cidr(n: &Net) -> Cidr {
    let ip = if n.v6 {
        IpAddr::V6(Ipv6Addr::from(n.addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(n.addr[0], n.addr[1], n.addr[2], n.addr[3]))
    };
    Cidr::new(ip, n.len).expect("a model network has no host bits")
}

/// Writes `p` into the program's maps: config first (ban placement depends
/// on the v6 prefix), then every list in the model's order.
pub fn load(h: &mut Harness, p: &Policy) {
    h.dp.set_config(&GlobalConfig::new(p.flags, p.ipv6_prefix.into()))
        .unwrap();
    for (net, class) in &p.sources {
        h.dp.set_source_class(cidr(net), class).unwrap();
    }
    for (net, expires) in &p.bans {
        h.dp.set_ban(cidr(net), &Ban::new(*expires, BAN_ORIGIN_MANUAL))
            .unwrap();
    }
    for (net, id) in &p.feeds {
        h.dp.set_feed_entry(cidr(net), &FeedEntry { feed_id: *id })
            .unwrap();
    }
    for ((proto, port), rule) in &p.ports {
        h.dp.set_port_rule(*proto, *port, rule).unwrap();
    }
    for ((tier, class), l) in &p.limits {
        h.dp.set_limits(*tier, *class, l).unwrap();
    }
}

/// BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header; the
/// upper bound keeps frames inside one page with room for the headroom.
pub const MIN_FRAME: usize = 14;
pub const MAX_FRAME: usize = 3000;

/// A well-formed frame (before any mutation) and where its L3 header starts.
pub struct Built {
    pub frame: Vec<u8>,
    pub l3: usize,
    pub v6: bool,
}

/// A frame built field by field, mostly valid, with the optional parts
/// (VLAN tags, IPv4 options and fragments, IPv6 extension headers) chosen at
/// random.
pub fn build(rng: &mut Rng, pool: &Pool) -> Built {
    let v6 = rng.chance(1, 2);
    let src = pool.source(rng, v6);
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let tags = match rng.below(20) {
        0..=13 => 0,
        14..=16 => 1,
        17..=18 => 2,
        _ => 3,
    };
    for _ in 0..tags {
        f.extend(rng.pick(&[0x8100u16, 0x88a8]).to_be_bytes());
        f.extend((rng.below(4096) as u16).to_be_bytes());
    }
    let ethertype: u16 = match rng.below(40) {
        0 => 0x0806,
        1 => rng.next_u64() as u16,
        _ if v6 => 0x86dd,
        _ => 0x0800,
    };
    f.extend(ethertype.to_be_bytes());
    let l3 = f.len();

    let (proto, l4) = l4(rng, v6);
    if v6 {
        let (first, exts) = ext_chain(rng, proto);
        let body_len = exts.len() + l4.len();
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(body_len as u16).to_be_bytes());
        ip[6] = first;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24] = 0x20;
        ip[25] = 0x01;
        ip[39] = 1;
        f.extend(ip);
        f.extend(exts);
    } else {
        let ihl = if rng.chance(1, 10) {
            5 + rng.below(11) as usize
        } else {
            5
        };
        let mut ip = vec![0u8; ihl * 4];
        ip[0] = 0x40 | ihl as u8;
        ip[2..4].copy_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        let frag: u16 = match rng.below(10) {
            0 => 1 + rng.below(0x1fff) as u16,
            1 => 0x2000,
            2 => 0x2000 | (1 + rng.below(0x1fff) as u16),
            _ => 0,
        };
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src[..4]);
        ip[16..20].copy_from_slice(&[192, 0, 2, 100]);
        f.extend(ip);
    }
    f.extend(l4);
    f.truncate(MAX_FRAME);
    Built { frame: f, l3, v6 }
}

/// (protocol, the L4 header and payload).
fn l4(rng: &mut Rng, v6: bool) -> (u8, Vec<u8>) {
    let payload_len = if rng.chance(1, 2) { 0 } else { rng.upto(48) };
    let payload = rng.fill(payload_len);
    let (proto, mut b) = match rng.below(20) {
        0..=7 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&port(rng).to_be_bytes());
            t[12] = if rng.chance(1, 10) {
                rng.byte() & 0xf0
            } else {
                0x50
            };
            let any = rng.byte();
            t[13] = rng.pick(&[0x02, 0x02, 0x12, 0x10, 0x18, 0x01, 0x04, any]);
            (PROTO_TCP, t)
        }
        8..=13 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&40000u16.to_be_bytes());
            u[2..4].copy_from_slice(&port(rng).to_be_bytes());
            u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            (PROTO_UDP, u)
        }
        14..=16 => (
            if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
            vec![8, 0, 0, 0, 0, 1, 0, 1],
        ),
        _ => {
            let any = rng.byte();
            let proto = rng.pick(&[47, 50, 132, PROTO_ICMP, PROTO_ICMPV6, 59, any]);
            let n = rng.upto(16);
            (proto, rng.fill(n))
        }
    };
    b.extend(payload);
    (proto, b)
}

/// An IPv6 extension-header chain ending in `proto`: (first next-header
/// value, the headers' bytes). Chains run past the parser's bound of six on
/// purpose, and some headers are long enough to push the L4 header past
/// the offset bound.
fn ext_chain(rng: &mut Rng, proto: u8) -> (u8, Vec<u8>) {
    if rng.chance(3, 5) {
        return (proto, Vec::new());
    }
    let n = 1 + rng.below(8) as usize;
    let kinds: Vec<u8> = (0..n).map(|_| rng.pick(&[0, 43, 60, 51, 44])).collect();
    let mut out = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(proto);
        match kind {
            44 => {
                let offset: u16 = if rng.chance(1, 2) {
                    0
                } else {
                    1 + rng.below(0x1fff) as u16
                };
                let v = (offset << 3) | u16::from(rng.chance(1, 2));
                out.extend([next, 0]);
                out.extend(v.to_be_bytes());
                out.extend(rng.fill(4));
            }
            51 => {
                // AH: length in 4-byte units, minus 2.
                let any = rng.byte();
                let n = rng.pick(&[1u8, 1, 2, 4, any]);
                let len = (usize::from(n) + 2) * 4;
                out.extend([next, n]);
                out.extend(rng.fill(len - 2));
            }
            _ => {
                let n = if rng.chance(1, 10) {
                    rng.byte()
                } else {
                    rng.below(3) as u8
                };
                let len = (usize::from(n) + 1) * 8;
                out.extend([next, n]);
                out.extend(rng.fill(len - 2));
            }
        }
    }
    (kinds[0], out)
}

/// Damages a built frame: flipped bytes (mostly in the headers), bogus
/// length fields, truncation, garbage appended or inserted.
pub fn mutate(rng: &mut Rng, b: &Built) -> Vec<u8> {
    let mut f = b.frame.clone();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 | 1 => {
                let span = if rng.chance(3, 4) {
                    f.len().min(b.l3 + 80)
                } else {
                    f.len()
                };
                let i = rng.below(span as u64) as usize;
                if rng.chance(1, 2) {
                    f[i] ^= 1 << rng.below(8);
                } else {
                    f[i] = rng.byte();
                }
            }
            2 => {
                // A length field: IPv4 IHL or total length, IPv6 payload
                // length, or an extension header's length byte.
                let at = if b.v6 {
                    b.l3 + rng.pick(&[4usize, 5, 41, 49])
                } else {
                    b.l3 + rng.pick(&[0usize, 2, 3])
                };
                if at < f.len() {
                    f[at] = match rng.below(4) {
                        0 => 0,
                        1 => 0xff,
                        2 => f[at].wrapping_add(1),
                        _ => rng.byte(),
                    };
                }
            }
            3 => {
                let cut = MIN_FRAME + rng.below((f.len() - MIN_FRAME + 1) as u64) as usize;
                f.truncate(cut);
            }
            4 => {
                let n = 1 + rng.upto(63);
                f.extend(rng.fill(n));
            }
            _ => {
                let i = rng.below(f.len() as u64 + 1) as usize;
                f.insert(i, rng.byte());
            }
        }
    }
    f.truncate(MAX_FRAME);
    f
}

/// The next fuzz frame: built, built and mutated, or raw bytes.
pub fn frame(rng: &mut Rng, pool: &Pool) -> Vec<u8> {
    match rng.below(20) {
        0 => {
            let n = MIN_FRAME + rng.upto(120);
            rng.fill(n)
        }
        1..=8 => build(rng, pool).frame,
        _ => {
            let b = build(rng, pool);
            mutate(rng, &b)
        }
    }
}
