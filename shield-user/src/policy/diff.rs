//! What reload must write and delete to turn one policy into another.

use std::collections::BTreeMap;

use shield_common::maps::{GlobalConfig, Limits, PortRule, SourceClass};

use super::Policy;
use crate::net::Cidr;

/// Entries to write (new or changed) and keys to delete (gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiff<K, V> {
    pub upsert: Vec<(K, V)>,
    pub remove: Vec<K>,
}

impl<K, V> MapDiff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

fn map_diff<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> MapDiff<K, V> {
    MapDiff {
        upsert: new
            .iter()
            .filter(|(k, v)| old.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        remove: old
            .keys()
            .filter(|k| !new.contains_key(k))
            .copied()
            .collect(),
    }
}

/// The difference between two compiled policies. Array maps (ports,
/// limits) "remove" by writing zeroes, which means class 0 / no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDiff {
    pub global: Option<GlobalConfig>,
    pub sources: MapDiff<Cidr, SourceClass>,
    pub ports: MapDiff<(u8, u16), PortRule>,
    pub limits: MapDiff<(u16, u16), Limits>,
}

impl PolicyDiff {
    /// From `old` (what the maps hold, or `None` for empty maps) to `new`.
    pub fn between(old: Option<&Policy>, new: &Policy) -> PolicyDiff {
        let empty = BTreeMap::new();
        let (g, s, p, l) = match old {
            Some(o) => (Some(o.global), &o.sources, &o.ports, &o.limits),
            None => (None, &BTreeMap::new(), &BTreeMap::new(), &empty),
        };
        PolicyDiff {
            global: (g != Some(new.global)).then_some(new.global),
            sources: map_diff(s, &new.sources),
            ports: map_diff(p, &new.ports),
            limits: map_diff(l, &new.limits),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_none()
            && self.sources.is_empty()
            && self.ports.is_empty()
            && self.limits.is_empty()
    }

    /// Entries written plus entries removed.
    pub fn changes(&self) -> usize {
        usize::from(self.global.is_some())
            + self.sources.upsert.len()
            + self.sources.remove.len()
            + self.ports.upsert.len()
            + self.ports.remove.len()
            + self.limits.upsert.len()
            + self.limits.remove.len()
    }
}
