//! Header parsing: Ethernet (+ up to two VLAN tags), IPv4, IPv6 with a bounded
//! extension-header walk, and the first bytes of TCP/UDP/ICMP.
//!
//! Every read is bounds-checked against `data_end`; anything that does not fit
//! or does not add up is `Malformed`, never an abort.

use aya_ebpf::programs::XdpContext;
use shield_common::maps::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HLEN: usize = 40;
/// Extension headers walked before giving up; a longer chain is malformed.
pub const MAX_EXT_HEADERS: usize = 6;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Bounds every offset so the verifier can reason about packet pointers.
const MAX_L4_OFFSET: usize = 1024;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What the pipeline needs to know about an IP packet.
pub struct Packet {
    pub v6: bool,
    pub src4: [u8; 4],
    pub src6: [u8; 16],
    pub proto: u8,
    pub dport: u16,
    /// A TCP SYN without ACK: a new connection attempt.
    pub syn: bool,
    /// The L4 header was present and parsed. False for non-first fragments,
    /// which carry no ports, so port rules cannot apply to them.
    pub has_l4: bool,
}

pub enum Parsed {
    NonIp,
    Malformed,
    Ip(Packet),
}

#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N > end {
        return None;
    }
    // SAFETY: the range [start + off, start + off + N) is inside the packet.
    Some(unsafe { *((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// A big-endian 16-bit length field, as a length the verifier can bound.
///
/// Linux 6.1's verifier (Debian 12's; docs/OPERATIONS.md, "Kernels tested")
/// forgets every bound of a byte swap's result, and of an OR of two
/// registers, and then refuses to add the length to a packet pointer
/// ("math between pkt pointer and register with unbounded min value").
/// A mask with a constant gives the bound back, but LLVM knows the value
/// is below 2^16 and drops a plain mask as a no-op; read back through a
/// volatile load, the value is opaque to LLVM and the mask stays.
#[inline(always)]
fn len16(b: [u8; 2]) -> usize {
    let len = u64::from(be16(b));
    // SAFETY: a read of a local that is initialised and aligned.
    let opaque = unsafe { core::ptr::read_volatile(&len) };
    (opaque & 0xffff) as usize
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = bytes_at::<ETH_HLEN>(ctx, 0) else {
        return Parsed::Malformed;
    };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = bytes_at::<VLAN_HLEN>(ctx, off) else {
            return Parsed::Malformed;
        };
        ethertype = be16([tag[2], tag[3]]);
        off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        // A third tag, ARP, LLDP...: not ours to judge.
        _ => Parsed::NonIp,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Parsed {
    let Some(ip) = bytes_at::<20>(ctx, off) else {
        return Parsed::Malformed;
    };
    if ip[0] >> 4 != 4 {
        return Parsed::Malformed;
    }
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total = len16([ip[2], ip[3]]);
    if hlen < 20 || total < hlen {
        return Parsed::Malformed;
    }
    // The frame must hold the whole datagram (trailing padding is fine).
    if ctx.data() + off + total > ctx.data_end() {
        return Parsed::Malformed;
    }
    let frag = be16([ip[6], ip[7]]);
    let first_fragment = frag & 0x1fff == 0;
    let mut p = Packet {
        v6: false,
        src4: [ip[12], ip[13], ip[14], ip[15]],
        src6: [0; 16],
        proto: ip[9],
        dport: 0,
        syn: false,
        has_l4: false,
    };
    if !first_fragment {
        return Parsed::Ip(p);
    }
    match parse_l4(ctx, off + hlen, off + total, &mut p) {
        true => Parsed::Ip(p),
        false => Parsed::Malformed,
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Parsed {
    let Some(ip) = bytes_at::<IPV6_HLEN>(ctx, off) else {
        return Parsed::Malformed;
    };
    if ip[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let payload = len16([ip[4], ip[5]]);
    let end = off + IPV6_HLEN + payload;
    if ctx.data() + end > ctx.data_end() {
        return Parsed::Malformed;
    }
    let mut src6 = [0u8; 16];
    src6.copy_from_slice(&ip[8..24]);
    let mut p = Packet {
        v6: true,
        src4: [0; 4],
        src6,
        proto: ip[6],
        dport: 0,
        syn: false,
        has_l4: false,
    };
    let mut next = ip[6];
    let mut cur = off + IPV6_HLEN;
    let mut found = false;
    // One more turn than the bound: the last can only find the L4 header.
    for walked in 0..=MAX_EXT_HEADERS {
        if cur > MAX_L4_OFFSET {
            return Parsed::Malformed;
        }
        if !is_ext(next) {
            found = true;
            break;
        }
        if walked == MAX_EXT_HEADERS {
            // Not even a fragment header past the bound is walked: it
            // would otherwise end the walk as a valid non-first fragment.
            break;
        }
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some(h) = bytes_at::<2>(ctx, cur) else {
                    return Parsed::Malformed;
                };
                next = h[0];
                cur += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let Some(h) = bytes_at::<2>(ctx, cur) else {
                    return Parsed::Malformed;
                };
                next = h[0];
                cur += (h[1] as usize + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let Some(h) = bytes_at::<8>(ctx, cur) else {
                    return Parsed::Malformed;
                };
                next = h[0];
                cur += 8;
                if cur > end {
                    // Read from the frame's trailing bytes, not from the
                    // packet: no header at all.
                    return Parsed::Malformed;
                }
                if be16([h[2], h[3]]) & 0xfff8 != 0 {
                    // Non-first fragment: source checks only.
                    p.proto = next;
                    return Parsed::Ip(p);
                }
            }
            _ => {}
        }
    }
    if !found || cur > end {
        // A chain longer than we walk hides the L4 header: treat it as an
        // evasion attempt rather than guess.
        return Parsed::Malformed;
    }
    p.proto = next;
    match parse_l4(ctx, cur, end, &mut p) {
        true => Parsed::Ip(p),
        false => Parsed::Malformed,
    }
}

#[inline(always)]
fn is_ext(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
    )
}

/// Fills ports and flags; false when the L4 header is cut short or bogus.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, ip_end: usize, p: &mut Packet) -> bool {
    if off > MAX_L4_OFFSET {
        return false;
    }
    let need = match p.proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        PROTO_ICMP | PROTO_ICMPV6 => 4,
        // Other protocols: no header we need; source checks still apply.
        _ => {
            p.has_l4 = true;
            return true;
        }
    };
    if off + need > ip_end {
        return false;
    }
    match p.proto {
        PROTO_TCP => {
            let Some(t) = bytes_at::<20>(ctx, off) else {
                return false;
            };
            if (t[12] >> 4) < 5 {
                return false;
            }
            p.dport = be16([t[2], t[3]]);
            p.syn = t[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
        }
        PROTO_UDP => {
            let Some(u) = bytes_at::<8>(ctx, off) else {
                return false;
            };
            p.dport = be16([u[2], u[3]]);
        }
        _ => {
            if bytes_at::<4>(ctx, off).is_none() {
                return false;
            }
        }
    }
    p.has_l4 = true;
    true
}
