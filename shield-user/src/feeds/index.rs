//! Which entries each feed has in the kernel, and the plan that replaces
//! one feed's set with another.
//!
//! The kernel holds the union of all feeds, each entry labelled with one
//! feed id (the one its hits are counted against). Replacing a feed must
//! never leave a gap: entries are added before stale ones are removed, and
//! an entry that another feed still lists is relabelled to that feed
//! instead of being deleted.
//!
//! Memory is the constraint that shapes this module: the agent must stay
//! under 64 MiB with a million entries loaded, so there is no map keyed by
//! network. Each feed keeps four sorted vectors of compact keys (v4 hosts,
//! v4 prefixes, v6 hosts, v6 prefixes: 4, 5, 16 and 17 bytes an entry) plus
//! one bit per entry saying whether that feed is the one the kernel's label
//! names. Every diff is a sorted merge, and "does another feed list this?"
//! is a galloping search that only moves forward.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::net::Cidr;

/// The entries of one feed, split by where they live in the kernel (hosts
/// in the exact hash maps, prefixes in the tries), each part sorted and
/// free of duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedSet {
    v4_hosts: Vec<[u8; 4]>,
    v4_nets: Vec<([u8; 4], u8)>,
    v6_hosts: Vec<[u8; 16]>,
    v6_nets: Vec<([u8; 16], u8)>,
}

impl FeedSet {
    /// The set of `cidrs`, in any order, duplicates allowed.
    pub fn from_cidrs(cidrs: &[Cidr]) -> FeedSet {
        // Count first so every vector is allocated once at its exact size:
        // with a million entries, doubling growth would waste megabytes.
        let mut n = [0usize; 4];
        for c in cidrs {
            n[kind_of(c)] += 1;
        }
        let mut s = FeedSet {
            v4_hosts: Vec::with_capacity(n[0]),
            v4_nets: Vec::with_capacity(n[1]),
            v6_hosts: Vec::with_capacity(n[2]),
            v6_nets: Vec::with_capacity(n[3]),
        };
        for c in cidrs {
            s.push(c);
        }
        s.normalize();
        s
    }

    /// One set from parts that are each sorted and free of duplicates
    /// (what [`FeedSet::from_cidrs`] and [`FeedSet::normalize`] leave),
    /// in any order: the parallel parse's pieces.
    pub(crate) fn merge(parts: Vec<FeedSet>) -> FeedSet {
        fn join<K: Copy + PartialEq, I: Ord>(runs: Vec<&[K]>, key: impl Fn(&K) -> I) -> Vec<K> {
            let mut v = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
            for r in &runs {
                v.extend_from_slice(r);
            }
            // The stable sort finds the sorted runs and merges them in
            // linear passes; pieces do not overlap much, so this is cheap.
            if runs.len() > 1 {
                v.sort_by_key(key);
                v.dedup();
                v.shrink_to_fit();
            }
            v
        }
        FeedSet {
            v4_hosts: join(parts.iter().map(|p| &p.v4_hosts[..]).collect(), v4_key),
            v4_nets: join(parts.iter().map(|p| &p.v4_nets[..]).collect(), v4_net_key),
            v6_hosts: join(parts.iter().map(|p| &p.v6_hosts[..]).collect(), v6_key),
            v6_nets: join(parts.iter().map(|p| &p.v6_nets[..]).collect(), v6_net_key),
        }
    }

    /// Adds `c` (any order, duplicates allowed); [`FeedSet::normalize`]
    /// must follow before the set is used.
    pub(crate) fn push(&mut self, c: &Cidr) {
        let len = c.prefix_len();
        match c.addr() {
            IpAddr::V4(a) if len == 32 => self.v4_hosts.push(a.octets()),
            IpAddr::V4(a) => self.v4_nets.push((a.octets(), len)),
            IpAddr::V6(a) if len == 128 => self.v6_hosts.push(a.octets()),
            IpAddr::V6(a) => self.v6_nets.push((a.octets(), len)),
        }
    }

    /// Sorts and deduplicates every part. The keys sort as integers, which
    /// orders them exactly as the byte arrays' own `Ord` does (big-endian)
    /// but compares in one instruction instead of a `memcmp` call: for a
    /// million entries that is most of the sort's time.
    pub(crate) fn normalize(&mut self) {
        fn norm<K: PartialEq, I: Ord>(v: &mut Vec<K>, key: impl Fn(&K) -> I) {
            // Already sorted input (a sorted feed) is detected in one
            // linear pass.
            v.sort_unstable_by_key(key);
            v.dedup();
            v.shrink_to_fit();
        }
        norm(&mut self.v4_hosts, v4_key);
        norm(&mut self.v4_nets, v4_net_key);
        norm(&mut self.v6_hosts, v6_key);
        norm(&mut self.v6_nets, v6_net_key);
    }

    pub fn len(&self) -> usize {
        self.v4_hosts.len() + self.v4_nets.len() + self.v6_hosts.len() + self.v6_nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, c: &Cidr) -> bool {
        self.position(c).is_some()
    }

    /// Index of `c` within its kind's vector.
    fn position(&self, c: &Cidr) -> Option<(usize, usize)> {
        let len = c.prefix_len();
        let k = kind_of(c);
        let found = match c.addr() {
            IpAddr::V4(a) if len == 32 => self.v4_hosts.binary_search(&a.octets()),
            IpAddr::V4(a) => self.v4_nets.binary_search(&(a.octets(), len)),
            IpAddr::V6(a) if len == 128 => self.v6_hosts.binary_search(&a.octets()),
            IpAddr::V6(a) => self.v6_nets.binary_search(&(a.octets(), len)),
        };
        found.ok().map(|i| (k, i))
    }

    /// Every entry: v4 hosts, v4 prefixes, v6 hosts, v6 prefixes, each part
    /// in address order.
    pub fn iter(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.v4_hosts
            .iter()
            .map(|a| v4_host(*a))
            .chain(self.v4_nets.iter().map(|(a, l)| v4_net(*a, *l)))
            .chain(self.v6_hosts.iter().map(|a| v6_host(*a)))
            .chain(self.v6_nets.iter().map(|(a, l)| v6_net(*a, *l)))
    }

    /// The /32 entries, as the exact map's keys (network byte order).
    pub fn v4_hosts(&self) -> &[[u8; 4]] {
        &self.v4_hosts
    }

    /// The /128 entries, as the exact map's keys.
    pub fn v6_hosts(&self) -> &[[u8; 16]] {
        &self.v6_hosts
    }

    /// The IPv4 prefixes shorter than a host, as (address, length), in
    /// address order.
    pub fn v4_net_keys(&self) -> &[([u8; 4], u8)] {
        &self.v4_nets
    }

    /// The IPv6 prefixes shorter than a host, as (address, length).
    pub fn v6_net_keys(&self) -> &[([u8; 16], u8)] {
        &self.v6_nets
    }

    /// The entries that go to the tries (everything shorter than a host).
    pub fn nets(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.v4_nets
            .iter()
            .map(|(a, l)| v4_net(*a, *l))
            .chain(self.v6_nets.iter().map(|(a, l)| v6_net(*a, *l)))
    }

    /// Heap memory held, for metrics and the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.v4_hosts.capacity() * 4
            + self.v4_nets.capacity() * 5
            + self.v6_hosts.capacity() * 16
            + self.v6_nets.capacity() * 17
    }
}

/// How much address space a set of entries covers, overlaps counted once:
/// IPv4 in addresses, IPv6 in /64 networks (an entry longer than /64, a
/// host included, counts as the /64 it lies in). The unit for IPv6 is the
/// /64 because that is what one subscriber gets, and what shield bans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub v4_addresses: u64,
    pub v6_nets64: u128,
}

impl FeedSet {
    /// The address space the set covers (see [`Coverage`]). Linear in the
    /// set's size, with no allocation: each part is already sorted by start.
    pub fn coverage(&self) -> Coverage {
        let v4_points = self.v4_hosts.iter().map(|a| {
            let x = u128::from(u32::from_be_bytes(*a));
            (x, x)
        });
        let v4_nets = self.v4_nets.iter().map(|(a, len)| {
            let x = u128::from(u32::from_be_bytes(*a));
            (x, x + (1u128 << (32 - u32::from(*len))) - 1)
        });
        let v6_units = |a: &[u8; 16], len: u8| {
            let x = u128::from_be_bytes(*a) >> 64;
            let span = if len >= 64 {
                1
            } else {
                1u128 << (64 - u32::from(len))
            };
            (x, x + span - 1)
        };
        let v6_points = self.v6_hosts.iter().map(|a| v6_units(a, 128));
        let v6_nets = self.v6_nets.iter().map(|(a, len)| v6_units(a, *len));
        Coverage {
            v4_addresses: union_len(v4_points, v4_nets) as u64,
            v6_nets64: union_len(v6_points, v6_nets),
        }
    }
}

/// Size of the union of two runs of inclusive intervals, each sorted by
/// start: merged as they go, so nested and overlapping entries count once.
fn union_len(a: impl Iterator<Item = (u128, u128)>, b: impl Iterator<Item = (u128, u128)>) -> u128 {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut total = 0u128;
    let mut run: Option<(u128, u128)> = None;
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        let Some((s, e)) = next else { break };
        run = match run {
            Some((rs, re)) if s <= re.saturating_add(1) => Some((rs, re.max(e))),
            Some((rs, re)) => {
                total = total.saturating_add(re - rs + 1);
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((rs, re)) = run {
        total = total.saturating_add(re - rs + 1);
    }
    total
}

impl FromIterator<Cidr> for FeedSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let mut s = FeedSet::default();
        for c in iter {
            s.push(&c);
        }
        s.normalize();
        s
    }
}

fn v4_key(a: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*a)
}

fn v4_net_key((a, len): &([u8; 4], u8)) -> u64 {
    u64::from(u32::from_be_bytes(*a)) << 8 | u64::from(*len)
}

fn v6_key(a: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*a)
}

fn v6_net_key((a, len): &([u8; 16], u8)) -> (u128, u8) {
    (u128::from_be_bytes(*a), *len)
}

/// 0: v4 host, 1: v4 prefix, 2: v6 host, 3: v6 prefix.
fn kind_of(c: &Cidr) -> usize {
    match (c.is_v4(), c.is_host()) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    }
}

fn v4_host(a: [u8; 4]) -> Cidr {
    Cidr::host(IpAddr::V4(Ipv4Addr::from(a)))
}

fn v4_net(a: [u8; 4], len: u8) -> Cidr {
    // Keys only ever come from valid networks, so truncating changes nothing.
    Cidr::truncating(IpAddr::V4(Ipv4Addr::from(a)), len)
}

fn v6_host(a: [u8; 16]) -> Cidr {
    Cidr::host(IpAddr::V6(Ipv6Addr::from(a)))
}

fn v6_net(a: [u8; 16], len: u8) -> Cidr {
    Cidr::truncating(IpAddr::V6(Ipv6Addr::from(a)), len)
}

/// One bit per entry of a sorted vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn zeroed(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.0.capacity() * 8
    }
}

/// What one feed lists, and which of those entries carry its id in the
/// kernel (`owned`, one [`Bits`] per kind).
#[derive(Clone, Debug, Default)]
struct FeedState {
    set: FeedSet,
    owned: [Bits; 4],
}

/// The feeds' entries as they are in the kernel.
///
/// Invariant: the kernel's feed maps hold exactly the union of all feeds'
/// sets, and every entry of that union is owned (labelled) by exactly one
/// feed that lists it.
#[derive(Clone, Debug, Default)]
pub struct FeedIndex {
    feeds: BTreeMap<u32, FeedState>,
    /// Bumped by every commit, so a plan made against an older state is
    /// refused rather than corrupting the ownership bits.
    generation: u64,
}

/// The kernel writes that replace one feed's set, in the order they must
/// be applied: `add`, then `relabel`, then `remove`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The feed being replaced.
    pub feed_id: u32,
    /// Entries no feed has yet: written with `feed_id`. (Every added entry
    /// carries the planning feed's id, so the set is stored without it.)
    pub add: FeedSet,
    /// Entries labelled with `feed_id` that it no longer lists but another
    /// feed does: rewritten with that other feed's id.
    pub relabel: Vec<(Cidr, u32)>,
    /// Entries no feed lists any more: deleted.
    pub remove: FeedSet,
    /// What the feed lists once the plan is committed.
    next: FeedSet,
    /// The index generation the plan was made against; `None` for a
    /// rollback, which only undoes kernel writes and is never committed.
    generation: Option<u64>,
}

impl Plan {
    /// True when applying the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.relabel.is_empty() && self.remove.is_empty()
    }

    /// How many entries the feed will list after the plan.
    pub fn next_len(&self) -> usize {
        self.next.len()
    }

    /// What the feed lists once the plan is committed, to plan again from
    /// when the index moved on under this plan.
    pub fn into_next(self) -> FeedSet {
        self.next
    }

    /// Every entry the plan writes or deletes.
    pub fn touched(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.add
            .iter()
            .chain(self.relabel.iter().map(|(c, _)| *c))
            .chain(self.remove.iter())
    }

    /// The writes that put the kernel back to the state the plan was made
    /// against, from any point of a partial application of it: re-add what
    /// it removed, label back what it relabelled, delete what it added.
    /// Every step is idempotent, so applying the rollback after a failed
    /// `apply_plan` restores exactly what the (uncommitted) index describes.
    /// The rollback itself cannot be committed.
    pub fn rollback(&self) -> Plan {
        Plan {
            feed_id: self.feed_id,
            add: self.remove.clone(),
            relabel: self
                .relabel
                .iter()
                .map(|(c, _)| (*c, self.feed_id))
                .collect(),
            remove: self.add.clone(),
            next: FeedSet::default(),
            generation: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the plan for feed {feed_id} was made before another change to the feed index; plan again"
    )]
    Stale { feed_id: u32 },
    #[error(
        "a rollback of feed {feed_id}'s plan only undoes kernel writes and cannot be committed"
    )]
    Rollback { feed_id: u32 },
}

/// True when a refresh would drop more than half of a feed's entries: such
/// a refresh is held back and reported instead of applied, because a feed
/// that suddenly shrinks is far more often a truncated or broken download
/// than a real change.
pub fn shrink_held(old_len: usize, new_len: usize) -> bool {
    old_len.saturating_sub(new_len) > old_len / 2
}

impl FeedIndex {
    pub fn new() -> FeedIndex {
        FeedIndex::default()
    }

    /// The plan that makes `new` the entries of `feed_id`. Nothing changes
    /// until [`FeedIndex::commit`].
    pub fn plan(&self, feed_id: u32, new: &[Cidr]) -> Plan {
        self.plan_set(feed_id, FeedSet::from_cidrs(new))
    }

    /// As [`FeedIndex::plan`], from a set already built (saves a copy of a
    /// large feed).
    pub fn plan_set(&self, feed_id: u32, new: FeedSet) -> Plan {
        let empty = FeedState::default();
        let old = self.feeds.get(&feed_id).unwrap_or(&empty);
        let others: Vec<(u32, &FeedSet)> = self
            .feeds
            .iter()
            .filter(|(id, _)| **id != feed_id)
            .map(|(id, s)| (*id, &s.set))
            .collect();
        let mut add = FeedSet::default();
        let mut remove = FeedSet::default();
        let mut relabel = Vec::new();

        macro_rules! kind {
            ($field:ident, $k:expr, $to_cidr:expr) => {{
                let o: Vec<(u32, &[_])> = others
                    .iter()
                    .map(|(id, s)| (*id, s.$field.as_slice()))
                    .collect();
                let p = plan_kind(&old.set.$field, &old.owned[$k], &new.$field, &o);
                add.$field = p.add;
                remove.$field = p.remove;
                relabel.extend(p.relabel.into_iter().map(|(k, id)| ($to_cidr(k), id)));
            }};
        }
        kind!(v4_hosts, 0, v4_host);
        kind!(v4_nets, 1, |(a, l)| v4_net(a, l));
        kind!(v6_hosts, 2, v6_host);
        kind!(v6_nets, 3, |(a, l)| v6_net(a, l));

        Plan {
            feed_id,
            add,
            relabel,
            remove,
            next: new,
            generation: Some(self.generation),
        }
    }

    /// The plan that takes `feed_id` out entirely (its entries removed, or
    /// relabelled where another feed lists them). Commit it like any plan.
    pub fn remove_feed(&self, feed_id: u32) -> Plan {
        self.plan_set(feed_id, FeedSet::default())
    }

    /// Whether `plan` was made against the index as it is now, so that
    /// [`FeedIndex::commit`] would take it.
    pub fn is_current(&self, plan: &Plan) -> bool {
        plan.generation == Some(self.generation)
    }

    /// Records that `plan` has been applied to the kernel.
    pub fn commit(&mut self, plan: Plan) -> Result<(), IndexError> {
        match plan.generation {
            None => {
                return Err(IndexError::Rollback {
                    feed_id: plan.feed_id,
                });
            }
            Some(g) if g != self.generation => {
                return Err(IndexError::Stale {
                    feed_id: plan.feed_id,
                });
            }
            Some(_) => {}
        }
        let old = self.feeds.remove(&plan.feed_id).unwrap_or_default();
        let next = plan.next;
        let owned = [
            owned_after(
                &old.set.v4_hosts,
                &old.owned[0],
                &next.v4_hosts,
                &plan.add.v4_hosts,
            ),
            owned_after(
                &old.set.v4_nets,
                &old.owned[1],
                &next.v4_nets,
                &plan.add.v4_nets,
            ),
            owned_after(
                &old.set.v6_hosts,
                &old.owned[2],
                &next.v6_hosts,
                &plan.add.v6_hosts,
            ),
            owned_after(
                &old.set.v6_nets,
                &old.owned[3],
                &next.v6_nets,
                &plan.add.v6_nets,
            ),
        ];
        drop(old);
        for (c, to) in &plan.relabel {
            if let Some(f) = self.feeds.get_mut(to)
                && let Some((k, i)) = f.set.position(c)
            {
                f.owned[k].set(i);
            }
        }
        if !next.is_empty() {
            self.feeds
                .insert(plan.feed_id, FeedState { set: next, owned });
        }
        self.generation += 1;
        Ok(())
    }

    /// Entries `feed_id` lists (0 for an unknown feed).
    pub fn len(&self, feed_id: u32) -> usize {
        self.feeds.get(&feed_id).map_or(0, |f| f.set.len())
    }

    /// True when no feed has any entry.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The ids of the feeds with entries, ascending.
    pub fn feed_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.feeds.keys().copied()
    }

    /// One feed's entries.
    pub fn entries(&self, feed_id: u32) -> Option<&FeedSet> {
        self.feeds.get(&feed_id).map(|f| &f.set)
    }

    /// Distinct entries in the kernel: the size of the union of all feeds.
    pub fn enforced_len(&self) -> usize {
        self.feeds
            .values()
            .flat_map(|f| f.owned.iter())
            .map(Bits::count)
            .sum()
    }

    /// Distinct entries in the kernel by map: IPv4 hosts (`FEED_V4`), IPv4
    /// prefixes (`FEED_NET_V4`), IPv6 hosts (`FEED_V6`), IPv6 prefixes
    /// (`FEED_NET_V6`). A popcount, cheap enough for every scrape.
    pub fn enforced_by_map(&self) -> [usize; 4] {
        let mut n = [0; 4];
        for f in self.feeds.values() {
            for (k, bits) in f.owned.iter().enumerate() {
                n[k] += bits.count();
            }
        }
        n
    }

    /// The feeds that list exactly `net`, ascending.
    pub fn feeds_listing(&self, net: &Cidr) -> Vec<u32> {
        self.feeds
            .iter()
            .filter(|(_, f)| f.set.contains(net))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The feed whose id the kernel holds for `net`, if any feed lists it.
    pub fn label(&self, net: &Cidr) -> Option<u32> {
        self.feeds.iter().find_map(|(id, f)| {
            let (k, i) = f.set.position(net)?;
            f.owned[k].get(i).then_some(*id)
        })
    }

    /// Every (feed, entry) whose entry contains `addr`, for `shieldctl
    /// check`: the host entry and every prefix covering it.
    pub fn feeds_containing(&self, addr: IpAddr) -> Vec<(u32, Cidr)> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let mut out = Vec::new();
        for (id, f) in &self.feeds {
            for len in (0..=max).rev() {
                let c = Cidr::truncating(addr, len);
                if f.set.contains(&c) {
                    out.push((*id, c));
                }
            }
        }
        out
    }

    /// Heap memory held, for metrics and the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.feeds
            .values()
            .map(|f| f.set.heap_bytes() + f.owned.iter().map(Bits::heap_bytes).sum::<usize>())
            .sum()
    }
}

/// One kind's part of a plan.
struct KindPlan<K> {
    add: Vec<K>,
    relabel: Vec<(K, u32)>,
    remove: Vec<K>,
}

/// Merges a feed's old and new sorted keys:
/// - only in new: added, unless another feed already has it in the kernel
///   (then its label stays as it is);
/// - only in old and labelled with this feed: relabelled to the first other
///   feed listing it, or removed when none does; entries labelled with
///   another feed need nothing;
/// - in both: nothing, so an entry that stays is never touched.
fn plan_kind<K: Copy + Ord>(
    old: &[K],
    owned: &Bits,
    new: &[K],
    others: &[(u32, &[K])],
) -> KindPlan<K> {
    let mut p = KindPlan {
        add: Vec::new(),
        relabel: Vec::new(),
        remove: Vec::new(),
    };
    // Keys are visited in ascending order, so each other feed is searched
    // with a cursor that only moves forward.
    let mut cursors = vec![0usize; others.len()];
    let mut listed_elsewhere = |key: &K| -> Option<u32> {
        for ((id, keys), at) in others.iter().zip(cursors.iter_mut()) {
            *at = seek(keys, *at, key);
            if keys.get(*at) == Some(key) {
                return Some(*id);
            }
        }
        None
    };
    let (mut i, mut j) = (0, 0);
    loop {
        let take_old = match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
                continue;
            }
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_old {
            let key = old[i];
            if owned.get(i) {
                match listed_elsewhere(&key) {
                    Some(to) => p.relabel.push((key, to)),
                    None => p.remove.push(key),
                }
            }
            i += 1;
        } else {
            let key = new[j];
            if listed_elsewhere(&key).is_none() {
                p.add.push(key);
            }
            j += 1;
        }
    }
    p
}

/// The first index at or after `from` whose key is not below `key`:
/// exponential probing, then a binary search within the bracket found, so a
/// sweep of m keys through n costs O(m log(n/m)) rather than O(m log n).
fn seek<K: Ord>(keys: &[K], from: usize, key: &K) -> usize {
    match keys.get(from) {
        None => return keys.len(),
        Some(k) if k >= key => return from,
        Some(_) => {}
    }
    // keys[lo] < key throughout.
    let mut lo = from;
    let mut step = 1usize;
    let hi = loop {
        let probe = lo.saturating_add(step);
        match keys.get(probe) {
            Some(k) if k < key => {
                lo = probe;
                step = step.saturating_mul(2);
            }
            Some(_) => break probe,
            None => break keys.len(),
        }
    };
    lo + 1 + keys[lo + 1..hi].partition_point(|k| k < key)
}

/// Which of the new keys the planning feed owns after its plan: the ones
/// it adds, and the ones it kept that it owned before.
fn owned_after<K: Ord>(old: &[K], old_owned: &Bits, new: &[K], added: &[K]) -> Bits {
    let mut bits = Bits::zeroed(new.len());
    let (mut i, mut a) = (0, 0);
    for (j, key) in new.iter().enumerate() {
        i = seek(old, i, key);
        a = seek(added, a, key);
        let owned = added.get(a) == Some(key) || (old.get(i) == Some(key) && old_owned.get(i));
        if owned {
            bits.set(j);
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn cs(v: &[&str]) -> Vec<Cidr> {
        v.iter().map(|s| c(s)).collect()
    }

    fn sorted(mut v: Vec<Cidr>) -> Vec<Cidr> {
        v.sort();
        v
    }

    fn set_of(s: &FeedSet) -> Vec<Cidr> {
        sorted(s.iter().collect())
    }

    #[test]
    fn feed_set_splits_sorts_and_dedups() {
        let s = FeedSet::from_cidrs(&cs(&[
            "2001:db8::/48",
            "10.0.0.1",
            "10.0.0.0/24",
            "2001:db8::1",
            "10.0.0.1",
            "9.9.9.9",
        ]));
        assert_eq!(s.len(), 5);
        assert_eq!(s.v4_hosts(), &[[9, 9, 9, 9], [10, 0, 0, 1]]);
        assert_eq!(s.v6_hosts().len(), 1);
        assert_eq!(
            s.nets().collect::<Vec<_>>(),
            cs(&["10.0.0.0/24", "2001:db8::/48"])
        );
        assert!(s.contains(&c("10.0.0.0/24")));
        assert!(!s.contains(&c("10.0.0.0/25")));
        assert_eq!(s, s.iter().collect::<FeedSet>());
        assert_eq!(s.heap_bytes(), 2 * 4 + 5 + 16 + 17);
    }

    #[test]
    fn first_load_adds_everything_and_labels_it() {
        let mut ix = FeedIndex::new();
        let p = ix.plan(1, &cs(&["192.0.2.1", "192.0.2.0/24", "2001:db8::/64"]));
        assert_eq!(p.add.len(), 3);
        assert!(p.relabel.is_empty() && p.remove.is_empty());
        ix.commit(p).unwrap();
        assert_eq!(ix.len(1), 3);
        assert_eq!(ix.label(&c("192.0.2.0/24")), Some(1));
        assert_eq!(ix.enforced_len(), 3);
    }

    #[test]
    fn refresh_adds_new_removes_stale_and_leaves_the_rest() {
        let mut ix = FeedIndex::new();
        ix.commit(ix.plan(1, &cs(&["192.0.2.1", "192.0.2.2", "192.0.2.3"])))
            .unwrap();
        let p = ix.plan(1, &cs(&["192.0.2.2", "192.0.2.3", "192.0.2.4"]));
        assert_eq!(set_of(&p.add), cs(&["192.0.2.4"]));
        assert_eq!(set_of(&p.remove), cs(&["192.0.2.1"]));
        assert!(p.relabel.is_empty());
        ix.commit(p).unwrap();
        assert!(
            ix.plan(1, &cs(&["192.0.2.2", "192.0.2.3", "192.0.2.4"]))
                .is_empty()
        );
    }

    #[test]
    fn shared_entry_is_relabelled_not_removed() {
        let mut ix = FeedIndex::new();
        ix.commit(ix.plan(1, &cs(&["198.51.100.7", "198.51.100.8"])))
            .unwrap();
        // Feed 2 lists one of feed 1's entries: nothing to write for it, and
        // the kernel keeps feed 1's label.
        let p = ix.plan(2, &cs(&["198.51.100.7", "203.0.113.0/24"]));
        assert_eq!(set_of(&p.add), cs(&["203.0.113.0/24"]));
        ix.commit(p).unwrap();
        assert_eq!(ix.label(&c("198.51.100.7")), Some(1));
        assert_eq!(ix.feeds_listing(&c("198.51.100.7")), vec![1, 2]);

        // Feed 1 drops it: relabel to feed 2, never delete.
        let p = ix.plan(1, &cs(&["198.51.100.8"]));
        assert_eq!(p.relabel, vec![(c("198.51.100.7"), 2)]);
        assert!(p.remove.is_empty() && p.add.is_empty());
        ix.commit(p).unwrap();
        assert_eq!(ix.label(&c("198.51.100.7")), Some(2));

        // Feed 2 drops it too: now it goes.
        let p = ix.plan(2, &cs(&["203.0.113.0/24"]));
        assert_eq!(set_of(&p.remove), cs(&["198.51.100.7"]));
        ix.commit(p).unwrap();
        assert_eq!(ix.label(&c("198.51.100.7")), None);
        assert_eq!(ix.enforced_len(), 2);
    }

    #[test]
    fn dropping_an_entry_labelled_elsewhere_writes_nothing() {
        let mut ix = FeedIndex::new();
        ix.commit(ix.plan(1, &cs(&["192.0.2.1"]))).unwrap();
        ix.commit(ix.plan(2, &cs(&["192.0.2.1", "192.0.2.2"])))
            .unwrap();
        let p = ix.plan(2, &cs(&["192.0.2.2"]));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn remove_feed_relabels_and_removes() {
        let mut ix = FeedIndex::new();
        ix.commit(ix.plan(3, &cs(&["192.0.2.1", "2001:db8::1"])))
            .unwrap();
        ix.commit(ix.plan(5, &cs(&["2001:db8::1"]))).unwrap();
        let p = ix.remove_feed(3);
        assert_eq!(set_of(&p.remove), cs(&["192.0.2.1"]));
        assert_eq!(p.relabel, vec![(c("2001:db8::1"), 5)]);
        ix.commit(p).unwrap();
        assert_eq!(ix.feed_ids().collect::<Vec<_>>(), vec![5]);
        assert_eq!(ix.len(3), 0);
        assert_eq!(ix.label(&c("2001:db8::1")), Some(5));
    }

    #[test]
    fn relabel_goes_to_the_lowest_remaining_feed() {
        let mut ix = FeedIndex::new();
        for id in [7, 4, 9] {
            ix.commit(ix.plan(id, &cs(&["192.0.2.1"]))).unwrap();
        }
        assert_eq!(ix.label(&c("192.0.2.1")), Some(7));
        let p = ix.remove_feed(7);
        assert_eq!(p.relabel, vec![(c("192.0.2.1"), 4)]);
    }

    #[test]
    fn stale_and_rollback_plans_are_refused() {
        let mut ix = FeedIndex::new();
        let a = ix.plan(1, &cs(&["192.0.2.1"]));
        let b = ix.plan(2, &cs(&["192.0.2.1"]));
        let r = a.rollback();
        ix.commit(a).unwrap();
        assert_eq!(ix.commit(b), Err(IndexError::Stale { feed_id: 2 }));
        assert_eq!(ix.commit(r), Err(IndexError::Rollback { feed_id: 1 }));
        assert_eq!(ix.label(&c("192.0.2.1")), Some(1));
    }

    #[test]
    fn feeds_containing_finds_hosts_and_covering_prefixes() {
        let mut ix = FeedIndex::new();
        ix.commit(ix.plan(1, &cs(&["10.1.2.3", "10.0.0.0/8", "10.1.0.0/16"])))
            .unwrap();
        ix.commit(ix.plan(2, &cs(&["10.1.2.0/24", "2001:db8::/32"])))
            .unwrap();
        let got = ix.feeds_containing("10.1.2.3".parse().unwrap());
        assert_eq!(
            got,
            vec![
                (1, c("10.1.2.3")),
                (1, c("10.1.0.0/16")),
                (1, c("10.0.0.0/8")),
                (2, c("10.1.2.0/24"))
            ]
        );
        assert_eq!(
            ix.feeds_containing("2001:db8::5".parse().unwrap()),
            vec![(2, c("2001:db8::/32"))]
        );
        assert!(ix.feeds_containing("11.0.0.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn shrink_guard_holds_more_than_half() {
        assert!(!shrink_held(0, 0));
        assert!(!shrink_held(100, 100));
        assert!(!shrink_held(100, 500));
        assert!(!shrink_held(100, 50));
        assert!(shrink_held(100, 49));
        assert!(shrink_held(100, 0));
        assert!(!shrink_held(3, 2));
        assert!(shrink_held(3, 1));
        assert!(shrink_held(1, 0));
        assert!(shrink_held(usize::MAX, 0));
        assert!(!shrink_held(usize::MAX, usize::MAX / 2 + 1));
    }

    #[test]
    fn coverage_counts_overlaps_once_and_v6_in_64s() {
        let cov = |v: &[&str]| FeedSet::from_cidrs(&cs(v)).coverage();
        assert_eq!(cov(&[]), Coverage::default());
        assert_eq!(cov(&["10.0.0.0/8"]).v4_addresses, 1 << 24);
        // Nested, overlapping and adjacent entries: the union.
        assert_eq!(
            cov(&[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.1.2.3",
                "11.0.0.0/8",
                "12.0.0.1"
            ])
            .v4_addresses,
            (2 << 24) + 1
        );
        assert_eq!(
            cov(&["192.0.2.1", "192.0.2.1/32", "192.0.2.2"]).v4_addresses,
            2
        );
        assert_eq!(cov(&["0.0.0.0/0"]).v4_addresses, 1 << 32);
        // IPv6: /64 units; longer entries count as their /64, once.
        let c = cov(&[
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8::/80",
            "2001:db8:1::/48",
        ]);
        assert_eq!(c.v6_nets64, 1 + (1 << 16));
        assert_eq!(c.v4_addresses, 0);
        assert_eq!(cov(&["2001::/16"]).v6_nets64, 1 << 48);
        assert_eq!(cov(&["::/0"]).v6_nets64, 1 << 64);
    }

    #[test]
    fn seek_finds_the_lower_bound_from_any_cursor() {
        let keys: Vec<u32> = (0..100).map(|i| i * 3).collect();
        for from in 0..=100 {
            for key in 0..310 {
                let want = from.max(keys.partition_point(|k| *k < key));
                assert_eq!(seek(&keys, from, &key), want, "from {from} key {key}");
            }
        }
        assert_eq!(seek::<u32>(&[], 0, &5), 0);
    }

    // ---- property: plans applied to a model of the kernel ----

    /// A small universe so feeds overlap often, with every kind.
    fn universe() -> Vec<Cidr> {
        cs(&[
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "198.51.100.9",
            "192.0.2.0/24",
            "192.0.2.0/25",
            "10.0.0.0/8",
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8::/64",
            "2001:db8:1::/48",
            "2001:db8::/127",
        ])
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(u32, Vec<bool>),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u32..5, proptest::collection::vec(any::<bool>(), 12))
                .prop_map(|(id, pick)| Op::Set(id, pick)),
            1 => (1u32..5).prop_map(Op::Remove),
        ]
    }

    /// One kernel write, for replaying a plan step by step.
    enum Write {
        Put(Cidr, u32),
        Relabel(Cidr, u32),
        Del(Cidr),
    }

    fn writes(p: &Plan) -> Vec<Write> {
        let mut w: Vec<Write> = p.add.iter().map(|c| Write::Put(c, p.feed_id)).collect();
        w.extend(p.relabel.iter().map(|(c, id)| Write::Relabel(*c, *id)));
        w.extend(p.remove.iter().map(Write::Del));
        w
    }

    fn apply_write(kernel: &mut BTreeMap<Cidr, u32>, w: &Write) {
        match w {
            Write::Put(c, id) | Write::Relabel(c, id) => {
                kernel.insert(*c, *id);
            }
            Write::Del(c) => {
                kernel.remove(c);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plans_keep_the_kernel_equal_to_the_union(ops in proptest::collection::vec(op(), 1..25)) {
            let u = universe();
            let mut ix = FeedIndex::new();
            let mut kernel: BTreeMap<Cidr, u32> = BTreeMap::new();
            let mut lists: BTreeMap<u32, BTreeSet<Cidr>> = BTreeMap::new();
            for op in ops {
                let (id, new): (u32, BTreeSet<Cidr>) = match &op {
                    Op::Set(id, pick) => (
                        *id,
                        u.iter().zip(pick).filter(|(_, p)| **p).map(|(c, _)| *c).collect(),
                    ),
                    Op::Remove(id) => (*id, BTreeSet::new()),
                };
                let old = lists.get(&id).cloned().unwrap_or_default();
                let new_vec: Vec<Cidr> = new.iter().copied().collect();
                let p = match op {
                    Op::Remove(id) => ix.remove_feed(id),
                    Op::Set(..) => ix.plan(id, &new_vec),
                };
                // Adds only touch entries nobody has; relabel targets list
                // the entry; removes never touch what the feed keeps.
                for c in p.add.iter() {
                    prop_assert!(!kernel.contains_key(&c), "add of present {c}");
                    prop_assert!(new.contains(&c));
                }
                for (c, to) in &p.relabel {
                    prop_assert!(*to != id && lists.get(to).is_some_and(|l| l.contains(c)));
                }
                for c in p.remove.iter() {
                    prop_assert!(!(old.contains(&c) && new.contains(&c)), "removed kept {c}");
                }
                // Replay write by write: what is in both old and new is
                // enforced at every step, and after the adds all of new is.
                let steps = writes(&p);
                let n_add = p.add.len();
                if n_add == 0 {
                    for c in &new {
                        prop_assert!(kernel.contains_key(c));
                    }
                }
                for (n, w) in steps.iter().enumerate() {
                    apply_write(&mut kernel, w);
                    for c in old.intersection(&new) {
                        prop_assert!(kernel.contains_key(c), "{c} absent mid-refresh");
                    }
                    if n + 1 >= n_add {
                        for c in &new {
                            prop_assert!(kernel.contains_key(c));
                        }
                    }
                }
                ix.commit(p).unwrap();
                if new.is_empty() {
                    lists.remove(&id);
                } else {
                    lists.insert(id, new);
                }
                // The kernel holds the union, each entry labelled with a
                // feed that lists it, and the index knows which.
                let union: BTreeSet<Cidr> = lists.values().flatten().copied().collect();
                prop_assert_eq!(kernel.keys().copied().collect::<BTreeSet<_>>(), union.clone());
                for (c, label) in &kernel {
                    prop_assert!(lists[label].contains(c));
                    prop_assert_eq!(ix.label(c), Some(*label));
                    let listing: Vec<u32> = lists
                        .iter()
                        .filter(|(_, l)| l.contains(c))
                        .map(|(id, _)| *id)
                        .collect();
                    prop_assert_eq!(ix.feeds_listing(c), listing);
                }
                prop_assert_eq!(ix.enforced_len(), union.len());
                let mut by_map = [0; 4];
                for c in &union {
                    by_map[kind_of(c)] += 1;
                }
                prop_assert_eq!(ix.enforced_by_map(), by_map);
                for (id, l) in &lists {
                    prop_assert_eq!(ix.len(*id), l.len());
                }
            }
        }

        #[test]
        fn rollback_restores_the_kernel_after_a_partial_apply(
            before in proptest::collection::vec(op(), 0..8),
            id in 1u32..5,
            pick in proptest::collection::vec(any::<bool>(), 12),
            cut in 0usize..30,
        ) {
            let u = universe();
            let mut ix = FeedIndex::new();
            let mut kernel: BTreeMap<Cidr, u32> = BTreeMap::new();
            for op in before {
                let p = match op {
                    Op::Set(id, pick) => {
                        let v: Vec<Cidr> =
                            u.iter().zip(&pick).filter(|(_, p)| **p).map(|(c, _)| *c).collect();
                        ix.plan(id, &v)
                    }
                    Op::Remove(id) => ix.remove_feed(id),
                };
                for w in writes(&p) {
                    apply_write(&mut kernel, &w);
                }
                ix.commit(p).unwrap();
            }
            let saved = kernel.clone();
            let v: Vec<Cidr> = u.iter().zip(&pick).filter(|(_, p)| **p).map(|(c, _)| *c).collect();
            let p = ix.plan(id, &v);
            for w in writes(&p).iter().take(cut) {
                apply_write(&mut kernel, w);
            }
            for w in writes(&p.rollback()) {
                apply_write(&mut kernel, &w);
            }
            prop_assert_eq!(kernel, saved);
        }
    }
}
