//! Where a ban, a feed entry or a bucket lives in the kernel's maps: the
//! agent's side of the rules in `shield_common::maps` (`ban_slot`,
//! `BucketKey`), in `Cidr` terms.

use std::net::IpAddr;

use shield_common::{
    addr::apply_mask,
    maps::{BanMap, BanSlot, BucketKey, ban_slot},
};

use crate::net::Cidr;

/// Where a list entry lives in the kernel.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    ExactV4([u8; 4]),
    ExactV6([u8; 16]),
    Trie,
}

/// The kernel entry of a ban on `net` ([`shield_common::maps::ban_slot`]).
pub fn ban_slot_of(net: Cidr, ipv6_prefix: u32) -> BanSlot {
    let prefix = u8::try_from(ipv6_prefix.min(128)).unwrap_or(128);
    ban_slot(!net.is_v4(), net.prefix_len(), prefix)
}

/// Bans, by [`ban_slot_of`]: v4 hosts exact; v6 networks at least
/// `ipv6_prefix` long exact at that prefix (that is what the kernel looks
/// up); the rest in the trie.
pub fn ban_placement(net: Cidr, ipv6_prefix: u32) -> Placement {
    let slot = ban_slot_of(net, ipv6_prefix);
    match (slot.map, net.v4_octets(), net.v6_octets()) {
        (BanMap::ExactV4, Some(a), _) => Placement::ExactV4(a),
        (BanMap::ExactV6, _, Some(a)) => Placement::ExactV6(apply_mask(
            a,
            &shield_common::addr::v6_mask(slot.len.into()),
        )),
        _ => Placement::Trie,
    }
}

/// Feeds: hosts exact, prefixes in the trie.
pub fn feed_placement(net: Cidr) -> Placement {
    match (net.v4_octets(), net.v6_octets()) {
        (Some(a), _) if net.is_host() => Placement::ExactV4(a),
        (_, Some(a)) if net.is_host() => Placement::ExactV6(a),
        _ => Placement::Trie,
    }
}

/// The kernel's bucket key for a source and class.
pub fn bucket_key(src: IpAddr, class: u16, tier: u16, v6_mask: &[u8; 16]) -> BucketKey {
    match src {
        IpAddr::V4(a) => BucketKey::v4(a.octets(), class, tier),
        IpAddr::V6(a) => BucketKey::v6(a.octets(), v6_mask, class, tier),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ban_placement_follows_the_kernel_lookups() {
        assert_eq!(
            ban_placement(c("192.0.2.1"), 64),
            Placement::ExactV4([192, 0, 2, 1])
        );
        assert_eq!(ban_placement(c("192.0.2.0/24"), 64), Placement::Trie);
        let Placement::ExactV6(k) = ban_placement(c("2001:db8::1"), 64) else {
            panic!()
        };
        assert_eq!(k, c("2001:db8::/64").v6_octets().unwrap());
        assert!(matches!(
            ban_placement(c("2001:db8::/64"), 64),
            Placement::ExactV6(_)
        ));
        assert_eq!(ban_placement(c("2001:db8::/48"), 64), Placement::Trie);
    }

    #[test]
    fn feed_placement_keeps_hosts_out_of_tries() {
        assert!(matches!(
            feed_placement(c("198.51.100.9")),
            Placement::ExactV4(_)
        ));
        assert!(matches!(
            feed_placement(c("2001:db8::9")),
            Placement::ExactV6(_)
        ));
        assert_eq!(feed_placement(c("198.51.100.0/31")), Placement::Trie);
        assert_eq!(feed_placement(c("2001:db8::/127")), Placement::Trie);
    }

    #[test]
    fn bucket_keys_separate_families_and_mask_v6() {
        let m = shield_common::addr::v6_mask(64);
        let a = bucket_key("2001:db8::1".parse().unwrap(), 3, 0, &m);
        let b = bucket_key("2001:db8::ffff".parse().unwrap(), 3, 0, &m);
        assert_eq!(a, b);
        let v4 = bucket_key("10.0.0.1".parse().unwrap(), 3, 0, &m);
        assert_eq!(v4.family, 4);
        assert_ne!(v4, a);
        // Each tier has its own bucket; an out-of-range tier is tier 0's.
        let tier1 = bucket_key("10.0.0.1".parse().unwrap(), 3, 1, &m);
        assert_ne!(tier1, v4);
        assert_eq!(bucket_key("10.0.0.1".parse().unwrap(), 3, 999, &m), v4);
    }
}
