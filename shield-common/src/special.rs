//! Special-purpose addresses: which addresses are globally reachable, after
//! IANA's IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
//! its updates). A feed's redirect to anything else (loopback, a private
//! network, link-local cloud metadata) is refused unless the configured URL
//! is itself non-global (docs/SECURITY.md, "Feeds").
//!
//! `std`'s `IpAddr::is_global` would do, but it is unstable; the table is
//! short enough to keep here, where the XDP program can use it too.

use crate::addr::{apply_mask, v4_mask, v6_mask};

/// IPv4 ranges that are not globally reachable (or not unicast at all).
const V4_LOCAL: [([u8; 4], u32); 17] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private use
    ([100, 64, 0, 0], 10),   // shared address space (carrier NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link local (cloud metadata lives here)
    ([172, 16, 0, 0], 12),   // private use
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (but see V4_GLOBAL)
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 31, 196, 0], 24), // AS112-v4 (locally served)
    ([192, 52, 193, 0], 24), // AMT: a relay anycast, never a feed
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private use
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the limited broadcast
];

/// Exceptions inside [`V4_LOCAL`] that the registry marks reachable.
const V4_GLOBAL: [([u8; 4], u32); 2] = [
    ([192, 0, 0, 9], 32),  // Port Control Protocol anycast
    ([192, 0, 0, 10], 32), // Traversal Using Relays around NAT anycast
];

const fn v6(head: [u16; 3]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 3 {
        a[2 * i] = (head[i] >> 8) as u8;
        a[2 * i + 1] = head[i] as u8;
        i += 1;
    }
    a
}

/// IPv6 ranges that are not globally reachable (or not unicast at all).
/// `::ffff:0:0/96`, `64:ff9b::/96` and `2002::/16` carry an IPv4 address
/// and are judged by it (see [`is_global_v6`]).
const V6_LOCAL: [([u8; 16], u32); 12] = [
    (v6([0x0064, 0xff9b, 0x0001]), 48), // local-use IPv4/IPv6 translation
    (v6([0x0100, 0, 0]), 64),           // discard only
    (v6([0x2001, 0, 0]), 23),           // IETF protocol assignments (but see V6_GLOBAL)
    (v6([0x2001, 0x0db8, 0]), 32),      // documentation
    (v6([0x3fff, 0, 0]), 20),           // documentation (RFC 9637)
    (v6([0x5f00, 0, 0]), 16),           // segment routing SIDs
    (v6([0xfc00, 0, 0]), 7),            // unique local
    (v6([0xfe80, 0, 0]), 10),           // link local
    (v6([0xfec0, 0, 0]), 10),           // deprecated site local
    (v6([0xff00, 0, 0]), 8),            // multicast
    (v6([0, 0, 0]), 128),               // unspecified
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
];

/// Exceptions inside `2001::/23` that the registry marks reachable.
const V6_GLOBAL: [([u8; 16], u32); 6] = [
    (
        [0x20, 0x01, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
        128,
    ), // Port Control Protocol anycast
    (
        [0x20, 0x01, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02],
        128,
    ), // TURN anycast
    (v6([0x2001, 0x0003, 0]), 32),      // AMT
    (v6([0x2001, 0x0004, 0x0112]), 48), // AS112-v6
    (v6([0x2001, 0x0020, 0]), 28),      // ORCHIDv2
    (v6([0x2001, 0x0030, 0]), 28),      // drone remote ID
];

const fn in_v4(a: [u8; 4], net: &([u8; 4], u32)) -> bool {
    let m = apply_mask(a, &v4_mask(net.1));
    u32::from_be_bytes(m) == u32::from_be_bytes(net.0)
}

const fn in_v6(a: [u8; 16], net: &([u8; 16], u32)) -> bool {
    u128::from_be_bytes(apply_mask(a, &v6_mask(net.1))) == u128::from_be_bytes(net.0)
}

/// True when `a` is a globally reachable IPv4 unicast address.
pub const fn is_global_v4(a: [u8; 4]) -> bool {
    let mut i = 0;
    while i < V4_GLOBAL.len() {
        if in_v4(a, &V4_GLOBAL[i]) {
            return true;
        }
        i += 1;
    }
    let mut i = 0;
    while i < V4_LOCAL.len() {
        if in_v4(a, &V4_LOCAL[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// True when `a` is a globally reachable IPv6 unicast address. An address
/// that embeds an IPv4 one (IPv4-mapped, the NAT64 well-known prefix,
/// 6to4) reaches that IPv4 address, so it is judged by it: `64:ff9b::a00:1`
/// is `10.0.0.1` behind a translator.
pub const fn is_global_v6(a: [u8; 16]) -> bool {
    const MAPPED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    let embedded = if in_v6(a, &(MAPPED, 96)) {
        // ::ffff:a.b.c.d
        Some([a[12], a[13], a[14], a[15]])
    } else if in_v6(a, &(v6([0x0064, 0xff9b, 0]), 96)) {
        Some([a[12], a[13], a[14], a[15]])
    } else if in_v6(a, &(v6([0x2002, 0, 0]), 16)) {
        Some([a[2], a[3], a[4], a[5]])
    } else {
        None
    };
    if let Some(v4) = embedded {
        return is_global_v4(v4);
    }
    let mut i = 0;
    while i < V6_GLOBAL.len() {
        if in_v6(a, &V6_GLOBAL[i]) {
            return true;
        }
        i += 1;
    }
    let mut i = 0;
    while i < V6_LOCAL.len() {
        if in_v6(a, &V6_LOCAL[i]) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> [u8; 4] {
        s.parse::<core::net::Ipv4Addr>().unwrap().octets()
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<core::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn special_ipv4_ranges_are_local_and_the_rest_global() {
        for local in [
            "0.1.2.3",
            "10.9.8.7",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global_v4(v4(local)), "{local} counted as global");
        }
        for global in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.3.0",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(is_global_v4(v4(global)), "{global} counted as local");
        }
    }

    #[test]
    fn special_ipv6_ranges_are_local_and_embedded_ipv4_is_judged_by_itself() {
        for local in [
            "::",
            "::1",
            "0:0:0:0:0:ffff:7f00:1",    // ::ffff:127.0.0.1
            "0:0:0:0:0:ffff:a9fe:a9fe", // ::ffff:169.254.169.254
            "64:ff9b:0:0:0:0:a00:1",    // NAT64 of 10.0.0.1
            "64:ff9b:1:0:0:0:0:1",
            "100:0:0:0:0:0:0:1",
            "2001:0:0:0:0:0:0:1",
            "2001:2:0:0:0:0:0:1",
            "2001:db8:0:0:0:0:0:1",
            "2002:c0a8:101:0:0:0:0:1", // 6to4 of 192.168.1.1
            "3fff:0:0:0:0:0:0:1",
            "5f00:0:0:0:0:0:0:1",
            "fc00:0:0:0:0:0:0:1",
            "fdff:ffff:0:0:0:0:0:1",
            "fe80:0:0:0:0:0:0:1",
            "fec0:0:0:0:0:0:0:1",
            "ff02:0:0:0:0:0:0:1",
        ] {
            assert!(!is_global_v6(v6(local)), "{local} counted as global");
        }
        for global in [
            "2001:4860:4860:0:0:0:0:8888",
            "2606:4700:0:0:0:0:0:1111",
            "0:0:0:0:0:ffff:808:808", // ::ffff:8.8.8.8
            "64:ff9b:0:0:0:0:808:808",
            "2002:808:808:0:0:0:0:1",
            "2001:1:0:0:0:0:0:1",
            "2001:3:0:0:0:0:0:1",
            "2001:20:0:0:0:0:0:1",
            "2001:200:0:0:0:0:0:1",
            "2400:cb00:0:0:0:0:0:1",
        ] {
            assert!(is_global_v6(v6(global)), "{global} counted as local");
        }
    }
}
