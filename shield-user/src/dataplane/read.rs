//! Reading back what the maps hold: what an adopting agent diffs against,
//! so a restart writes only what differs and resets nothing.

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{Array, HashMap, LpmTrie, MapData};
use shield_common::maps::*;

use super::{Dataplane, Result, map_err};
use crate::net::Cidr;

impl Dataplane {
    /// What each CPU's `SOURCE_CACHE` remembers about `addr` (memos of
    /// other sources in its slot left out).
    pub fn source_memos(&self, addr: std::net::Ipv4Addr) -> Result<Vec<SourceMemo>> {
        let a: aya::maps::PerCpuArray<&MapData, SourceMemo> =
            aya::maps::PerCpuArray::try_from(self.map(MAP_SOURCE_CACHE)?)
                .map_err(map_err(MAP_SOURCE_CACHE))?;
        let per_cpu = a
            .get(&source_cache_slot(addr.octets()), 0)
            .map_err(map_err(MAP_SOURCE_CACHE))?;
        Ok(per_cpu
            .iter()
            .filter(|m| m.addr == addr.octets())
            .copied()
            .collect())
    }

    /// Every entry of `SRC_V4` and `SRC_V6`.
    pub fn source_entries(&self) -> Result<BTreeMap<Cidr, SourceClass>> {
        let mut out = self.trie_entries::<4, SourceClass>(MAP_SRC_V4)?;
        out.extend(self.trie_entries::<16, SourceClass>(MAP_SRC_V6)?);
        Ok(out)
    }

    /// Every non-zero `PORTS` slot, keyed by (proto, port).
    pub fn port_rules(&self) -> Result<BTreeMap<(u8, u16), PortRule>> {
        let a: Array<&MapData, PortRule> =
            Array::try_from(self.map(MAP_PORTS)?).map_err(map_err(MAP_PORTS))?;
        let mut out = BTreeMap::new();
        for (slot, v) in a.iter().enumerate() {
            let v = v.map_err(map_err(MAP_PORTS))?;
            if v != PortRule::default() {
                let (proto, port) = if slot < 65_536 {
                    (PROTO_TCP, slot as u16)
                } else {
                    (PROTO_UDP, (slot - 65_536) as u16)
                };
                out.insert((proto, port), v);
            }
        }
        Ok(out)
    }

    /// Every non-zero `LIMITS` slot, keyed by (tier, class).
    pub fn limits_entries(&self) -> Result<BTreeMap<(u16, u16), Limits>> {
        let a: Array<&MapData, Limits> =
            Array::try_from(self.map(MAP_LIMITS)?).map_err(map_err(MAP_LIMITS))?;
        let mut out = BTreeMap::new();
        for (slot, v) in a.iter().enumerate() {
            let v = v.map_err(map_err(MAP_LIMITS))?;
            if v != Limits::default() {
                let slot = slot as u32;
                out.insert(
                    ((slot / MAX_CLASSES) as u16, (slot % MAX_CLASSES) as u16),
                    v,
                );
            }
        }
        Ok(out)
    }

    /// Every ban in the exact maps and the tries. Exact v6 keys come back as
    /// networks at the configured prefix, which is what they stand for.
    pub fn ban_entries(&self) -> Result<Vec<(Cidr, Ban)>> {
        let prefix = self.config()?.ipv6_prefix as u8;
        let mut out = Vec::new();
        let v4: HashMap<&MapData, [u8; 4], Ban> =
            HashMap::try_from(self.map(MAP_BAN_V4)?).map_err(map_err(MAP_BAN_V4))?;
        for kv in v4.iter() {
            let (k, v) = kv.map_err(map_err(MAP_BAN_V4))?;
            out.push((Cidr::host(IpAddr::from(k)), v));
        }
        let v6: HashMap<&MapData, [u8; 16], Ban> =
            HashMap::try_from(self.map(MAP_BAN_V6)?).map_err(map_err(MAP_BAN_V6))?;
        for kv in v6.iter() {
            let (k, v) = kv.map_err(map_err(MAP_BAN_V6))?;
            out.push((Cidr::truncating(IpAddr::from(k), prefix), v));
        }
        out.extend(self.trie_entries::<4, Ban>(MAP_BAN_NET_V4)?);
        out.extend(self.trie_entries::<16, Ban>(MAP_BAN_NET_V6)?);
        Ok(out)
    }

    /// Every feed entry in the exact maps and the tries, with the feed id
    /// the kernel counts its hits against.
    pub fn feed_entries(&self) -> Result<Vec<(Cidr, FeedEntry)>> {
        let mut out = Vec::new();
        let v4: HashMap<&MapData, [u8; 4], FeedEntry> =
            HashMap::try_from(self.map(MAP_FEED_V4)?).map_err(map_err(MAP_FEED_V4))?;
        for kv in v4.iter() {
            let (k, v) = kv.map_err(map_err(MAP_FEED_V4))?;
            out.push((Cidr::host(IpAddr::from(k)), v));
        }
        let v6: HashMap<&MapData, [u8; 16], FeedEntry> =
            HashMap::try_from(self.map(MAP_FEED_V6)?).map_err(map_err(MAP_FEED_V6))?;
        for kv in v6.iter() {
            let (k, v) = kv.map_err(map_err(MAP_FEED_V6))?;
            out.push((Cidr::host(IpAddr::from(k)), v));
        }
        out.extend(self.trie_entries::<4, FeedEntry>(MAP_FEED_NET_V4)?);
        out.extend(self.trie_entries::<16, FeedEntry>(MAP_FEED_NET_V6)?);
        Ok(out)
    }

    fn trie_entries<const N: usize, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<BTreeMap<Cidr, V>>
    where
        [u8; N]: Into<IpAddr>,
    {
        let t: LpmTrie<&MapData, [u8; N], V> =
            LpmTrie::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut out = BTreeMap::new();
        for kv in t.iter() {
            let (k, v) = kv.map_err(map_err(name))?;
            let len = k.prefix_len().min(128) as u8;
            out.insert(Cidr::truncating(k.data().into(), len), v);
        }
        Ok(out)
    }
}
