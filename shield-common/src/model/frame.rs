//! The reference frame parser: the pipeline's step 1 written from its
//! specification over a byte slice, sharing no code with the kernel's parser
//! (which reads through packet pointers under the verifier's rules). The
//! packet fuzzer feeds both the same frames; any disagreement is a bug in one
//! of them.
//!
//! The specification:
//! - Ethernet (14 bytes), then at most two VLAN tags (TPID 0x8100 or
//!   0x88a8). A third tag, or any ethertype but IPv4/IPv6, is not IP.
//! - IPv4: version 4, IHL ≥ 5, total length ≥ IHL, and the frame holds the
//!   whole datagram. A non-first fragment has no L4 header to read.
//! - IPv6: version 6 and the frame holds the whole payload. At most
//!   [`MAX_EXT_HEADERS`] extension headers (hop-by-hop, routing, fragment,
//!   AH, destination options), each inside the payload and starting within
//!   the first [`MAX_L4_OFFSET`] bytes of the frame, as must the L4 header.
//!   A fragment header with a non-zero offset ends the walk: no L4 header.
//! - L4: TCP needs 20 bytes and a data offset ≥ 5; UDP 8; ICMP and ICMPv6
//!   4 (either family); other protocols nothing. All inside the datagram.
//!
//! Anything that breaks a rule is [`Frame::Malformed`].

/// Frames shorter than an Ethernet header are malformed.
pub const ETH_HLEN: usize = 14;
/// Extension headers an IPv6 packet may carry before its L4 header.
pub const MAX_EXT_HEADERS: usize = 6;
/// Every IPv6 header the walk reads, and the L4 header, starts at or before
/// this frame offset.
pub const MAX_L4_OFFSET: usize = 1024;

/// What the pipeline needs to know about an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The source: four bytes for IPv4 (the rest zero), sixteen for IPv6.
    pub src: [u8; 16],
    pub v6: bool,
    pub proto: u8,
    /// TCP/UDP destination port; 0 otherwise.
    pub dport: u16,
    /// TCP with SYN set and ACK clear.
    pub syn: bool,
    /// The L4 header was read (false for non-first fragments).
    pub has_l4: bool,
}

impl Header {
    pub fn src4(&self) -> [u8; 4] {
        [self.src[0], self.src[1], self.src[2], self.src[3]]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    NonIp,
    Malformed,
    Ip(Header),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn parse(f: &[u8]) -> Frame {
    if f.len() < ETH_HLEN {
        return Frame::Malformed;
    }
    let mut ethertype = be16(f, 12);
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while (ethertype == 0x8100 || ethertype == 0x88a8) && tags < 2 {
        if f.len() < off + 4 {
            return Frame::Malformed;
        }
        ethertype = be16(f, off + 2);
        off += 4;
        tags += 1;
    }
    match ethertype {
        0x0800 => ipv4(f, off),
        0x86dd => ipv6(f, off),
        _ => Frame::NonIp,
    }
}

fn ipv4(f: &[u8], off: usize) -> Frame {
    let ip = &f[off..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Frame::Malformed;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Frame::Malformed;
    }
    let mut h = Header {
        src: [0; 16],
        v6: false,
        proto: ip[9],
        dport: 0,
        syn: false,
        has_l4: false,
    };
    h.src[..4].copy_from_slice(&ip[12..16]);
    let fragment_offset = be16(ip, 6) & 0x1fff;
    if fragment_offset != 0 {
        return Frame::Ip(h);
    }
    l4(&ip[ihl..total], off + ihl, h)
}

fn ipv6(f: &[u8], off: usize) -> Frame {
    let ip = &f[off..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    let payload_len = usize::from(be16(ip, 4));
    if 40 + payload_len > ip.len() {
        return Frame::Malformed;
    }
    let packet = &ip[..40 + payload_len];
    let mut h = Header {
        src: [0; 16],
        v6: true,
        proto: ip[6],
        dport: 0,
        syn: false,
        has_l4: false,
    };
    h.src.copy_from_slice(&ip[8..24]);
    let mut next = ip[6];
    // Offset within `packet`.
    let mut at = 40;
    let mut walked = 0;
    loop {
        if off + at > MAX_L4_OFFSET {
            return Frame::Malformed;
        }
        let ext_len = match next {
            0 | 43 | 60 => packet.get(at + 1).map(|&n| (usize::from(n) + 1) * 8),
            51 => packet.get(at + 1).map(|&n| (usize::from(n) + 2) * 4),
            44 => Some(8),
            _ => break,
        };
        if walked == MAX_EXT_HEADERS {
            return Frame::Malformed;
        }
        walked += 1;
        let Some(ext_len) = ext_len else {
            return Frame::Malformed;
        };
        if at + ext_len > packet.len() {
            return Frame::Malformed;
        }
        let this = next;
        next = packet[at];
        if this == 44 && be16(packet, at + 2) & 0xfff8 != 0 {
            h.proto = next;
            return Frame::Ip(h);
        }
        at += ext_len;
    }
    h.proto = next;
    l4(&packet[at..], off + at, h)
}

/// `l4` is the rest of the datagram from the L4 header on; `frame_off` where
/// it starts in the frame.
fn l4(l4: &[u8], frame_off: usize, mut h: Header) -> Frame {
    if frame_off > MAX_L4_OFFSET {
        return Frame::Malformed;
    }
    let need = match h.proto {
        6 => 20,
        17 => 8,
        1 | 58 => 4,
        _ => 0,
    };
    if l4.len() < need {
        return Frame::Malformed;
    }
    match h.proto {
        6 => {
            if l4[12] >> 4 < 5 {
                return Frame::Malformed;
            }
            h.dport = be16(l4, 2);
            h.syn = l4[13] & 0x12 == 0x02;
        }
        17 => h.dport = be16(l4, 2),
        _ => {}
    }
    h.has_l4 = true;
    Frame::Ip(h)
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = alloc::vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend(ethertype.to_be_bytes());
        f
    }

    fn v4_tcp(flags: u8) -> Vec<u8> {
        let mut f = eth(0x0800);
        let mut ip = alloc::vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[198, 51, 100, 7]);
        f.extend(ip);
        let mut t = alloc::vec![0u8; 20];
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        f.extend(t);
        f
    }

    /// IPv6 with `exts` (next-header numbers, 8 bytes each) before UDP.
    fn v6_udp(exts: &[u8], frag_offset: u16) -> Vec<u8> {
        let mut rest = Vec::new();
        for (i, _) in exts.iter().enumerate() {
            let next = exts.get(i + 1).copied().unwrap_or(17);
            let mut e = alloc::vec![next, 0, 0, 0, 0, 0, 0, 0];
            if exts[i] == 44 {
                e[2..4].copy_from_slice(&(frag_offset << 3).to_be_bytes());
            }
            rest.extend(e);
        }
        rest.extend([0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        let mut f = eth(0x86dd);
        let mut ip = alloc::vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        ip[6] = exts.first().copied().unwrap_or(17);
        ip[8] = 0x20;
        f.extend(ip);
        f.extend(rest);
        f
    }

    #[test]
    fn tcp_syn() {
        let Frame::Ip(h) = parse(&v4_tcp(0x02)) else {
            panic!()
        };
        assert_eq!((h.proto, h.dport, h.syn, h.has_l4), (6, 443, true, true));
        assert_eq!(h.src4(), [198, 51, 100, 7]);
        let Frame::Ip(h) = parse(&v4_tcp(0x12)) else {
            panic!()
        };
        assert!(!h.syn);
    }

    #[test]
    fn every_truncation_is_malformed() {
        let f = v4_tcp(0x02);
        for cut in 0..f.len() {
            assert_eq!(parse(&f[..cut]), Frame::Malformed, "cut at {cut}");
        }
        let f = v6_udp(&[0, 60], 0);
        for cut in 0..f.len() {
            assert_eq!(parse(&f[..cut]), Frame::Malformed, "cut at {cut}");
        }
    }

    #[test]
    fn ext_header_bound() {
        let six = [0, 43, 60, 0, 43, 60];
        assert!(matches!(parse(&v6_udp(&six, 0)), Frame::Ip(h) if h.dport == 53));
        let seven = [0, 43, 60, 0, 43, 60, 60];
        assert_eq!(parse(&v6_udp(&seven, 0)), Frame::Malformed);
        // The seventh header is not walked, even a fragment that would end
        // the walk.
        let seven_frag = [0, 43, 60, 0, 43, 60, 44];
        assert_eq!(parse(&v6_udp(&seven_frag, 5)), Frame::Malformed);
        let Frame::Ip(h) = parse(&v6_udp(&[0, 44], 5)) else {
            panic!()
        };
        assert_eq!((h.proto, h.has_l4), (17, false));
    }

    #[test]
    fn a_fragment_header_past_the_payload_is_malformed() {
        // Payload length 0; the fragment header sits in trailing padding.
        let mut f = v6_udp(&[44], 5);
        f[ETH_HLEN + 4] = 0;
        f[ETH_HLEN + 5] = 0;
        assert_eq!(parse(&f), Frame::Malformed);
    }

    #[test]
    fn vlans() {
        let mut f = eth(0x8100);
        f.extend([0, 1, 0x88, 0xa8, 0, 2, 0x08, 0x06]);
        assert_eq!(parse(&f), Frame::NonIp);
        let mut f = eth(0x8100);
        f.extend([0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00]);
        assert_eq!(parse(&f), Frame::NonIp, "a third tag");
        let mut f = eth(0x8100);
        f.extend([0, 1]);
        assert_eq!(parse(&f), Frame::Malformed);
    }
}
