//! Typed access to the maps by name, for the writes in dataplane/mod.rs:
//! single inserts and removals through aya's `HashMap` and `LpmTrie`, and
//! many at once through the batch layer (dataplane/batch.rs), falling back
//! to one syscall per element where the kernel has no batch operation.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key};
use shield_common::maps::{FeedEntry, MAP_FEED_NET_V4};

use super::{Dataplane, DataplaneError, Result, batch, map_err};
use crate::net::Cidr;

impl Dataplane {
    pub(super) fn hash_insert<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        key: K,
        value: &V,
    ) -> Result<()> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.insert(key, value, 0).map_err(map_err(name))
    }

    pub(super) fn hash_remove<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        key: K,
    ) -> Result<()> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        ignore_missing(m.remove(&key)).map_err(map_err(name))
    }

    /// The fd of hash map `name`, after checking its key and value sizes.
    pub(super) fn hash_fd<K: aya::Pod, V: aya::Pod>(&self, name: &'static str) -> Result<RawFd> {
        let map = self.map(name)?;
        let _: HashMap<&MapData, K, V> = HashMap::try_from(map).map_err(map_err(name))?;
        match map {
            Map::HashMap(d) => Ok(d.fd().as_fd().as_raw_fd()),
            _ => Err(DataplaneError::MissingMap(name)),
        }
    }

    /// Sets every key in `keys` to `value`, [`batch::BATCH`] keys per syscall.
    pub(super) fn hash_update_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
        value: &V,
    ) -> Result<()> {
        let fd = self.hash_fd::<K, V>(name)?;
        if let Some(from) = batch::update_batches(name, fd, keys, value)? {
            for k in &keys[from..] {
                self.hash_insert(name, *k, value)?;
            }
        }
        Ok(())
    }

    /// Sets `keys[i]` to `values[i]`, [`batch::BATCH`] pairs per syscall.
    pub(super) fn hash_update_pairs<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        debug_assert_eq!(keys.len(), values.len());
        let n = keys.len().min(values.len());
        if n == 0 {
            return Ok(());
        }
        let fd = self.hash_fd::<K, V>(name)?;
        if let Some(from) = batch::update_pair_batches(name, fd, keys, values)? {
            for i in from..n {
                self.hash_insert(name, keys[i], &values[i])?;
            }
        }
        Ok(())
    }

    /// Deletes every key in `keys`, [`batch::BATCH`] per syscall; absent keys are
    /// skipped.
    pub(super) fn hash_delete_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
    ) -> Result<()> {
        let fd = self.hash_fd::<K, V>(name)?;
        if let Some(from) = batch::delete_batches(name, fd, keys)? {
            for k in &keys[from..] {
                self.hash_remove::<K, V>(name, *k)?;
            }
        }
        Ok(())
    }

    /// The fd of LPM trie `name`, after checking its key and value sizes.
    pub(super) fn trie_fd<K: aya::Pod, V: aya::Pod>(&self, name: &'static str) -> Result<RawFd> {
        let map = self.map(name)?;
        let _: LpmTrie<&MapData, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
        match map {
            Map::LpmTrie(d) => Ok(d.fd().as_fd().as_raw_fd()),
            _ => Err(DataplaneError::MissingMap(name)),
        }
    }

    /// Whether this kernel has batch updates for LPM tries (without them,
    /// every feed prefix costs a syscall of its own).
    pub fn lpm_batches_supported(&self) -> Result<bool> {
        let fd = self.trie_fd::<[u8; 4], FeedEntry>(MAP_FEED_NET_V4)?;
        batch::updates_supported::<Key<[u8; 4]>, FeedEntry>(
            MAP_FEED_NET_V4,
            fd,
            &FeedEntry::default(),
        )
    }

    /// Sets every prefix in `keys` to `value` in trie `name`, batched like
    /// the hash maps: the kernel has batch operations for LPM tries too (a
    /// generic loop over its single-element ones, which saves a syscall per
    /// prefix). Kernels without them get one syscall each.
    pub(super) fn trie_update_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
        value: &V,
    ) -> Result<()> {
        let fd = self.trie_fd::<K, V>(name)?;
        if let Some(from) = batch::update_batches(name, fd, keys, value)? {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for k in &keys[from..] {
                t.insert(k, value, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Deletes every prefix in `keys` from trie `name`, batched; absent
    /// prefixes are skipped.
    pub(super) fn trie_delete_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
    ) -> Result<()> {
        let fd = self.trie_fd::<K, V>(name)?;
        if let Some(from) = batch::delete_batches(name, fd, keys)? {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for k in &keys[from..] {
                ignore_missing(t.remove(k)).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    pub(super) fn trie_insert<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
        value: &V,
    ) -> Result<()> {
        self.trie_op(v4, v6, net, TrieOp::Insert(value))
    }

    pub(super) fn trie_remove<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
    ) -> Result<()> {
        self.trie_op::<V>(v4, v6, net, TrieOp::Remove)
    }

    /// Picks the v4 or v6 trie by `net`'s family and applies `op` to it.
    pub(super) fn trie_op<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
        op: TrieOp<'_, V>,
    ) -> Result<()> {
        fn apply<K: aya::Pod, V: aya::Pod>(
            map: &mut Map,
            name: &'static str,
            key: Key<K>,
            op: TrieOp<'_, V>,
        ) -> Result<()> {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(map).map_err(map_err(name))?;
            match op {
                TrieOp::Insert(v) => t.insert(&key, v, 0),
                TrieOp::Remove => ignore_missing(t.remove(&key)),
            }
            .map_err(map_err(name))
        }
        let len = u32::from(net.prefix_len());
        match (net.v4_octets(), net.v6_octets()) {
            (Some(a), _) => apply(self.map_mut(v4)?, v4, Key::new(len, a), op),
            (_, Some(a)) => apply(self.map_mut(v6)?, v6, Key::new(len, a), op),
            _ => unreachable!("a Cidr is v4 or v6"),
        }
    }
}

/// The trie keys of `nets`, v4 and v6 apart. A host has no place in a
/// trie here (feeds keep them in the exact maps): refused.
#[allow(clippy::type_complexity)]
pub(super) fn trie_keys(nets: &[Cidr]) -> Result<(Vec<Key<[u8; 4]>>, Vec<Key<[u8; 16]>>)> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for net in nets {
        if net.is_host() {
            return Err(DataplaneError::OutOfRange(format!(
                "{net} is a host; feed hosts go to the exact maps"
            )));
        }
        let len = u32::from(net.prefix_len());
        match (net.v4_octets(), net.v6_octets()) {
            (Some(a), _) => v4.push(Key::new(len, a)),
            (_, Some(a)) => v6.push(Key::new(len, a)),
            _ => unreachable!("a Cidr is v4 or v6"),
        }
    }
    Ok((v4, v6))
}

pub(super) enum TrieOp<'a, V> {
    Insert(&'a V),
    Remove,
}

/// Removing what is not there is success: the goal state holds.
pub(super) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
