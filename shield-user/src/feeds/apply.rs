//! Writing a [`Plan`] into the kernel's feed maps.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use shield_common::maps::FeedEntry;

use super::FeedSet;
use super::index::Plan;
use crate::{
    dataplane::{Dataplane, DataplaneError},
    net::Cidr,
};

/// What one [`apply_plan`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub added: usize,
    pub relabelled: usize,
    pub removed: usize,
    pub elapsed: Duration,
}

/// Applies `plan`: every addition first, then the relabels, then the
/// removals, so that no entry the feed keeps, and no entry another feed
/// still lists, is ever missing from the maps. Hosts and prefixes alike go
/// in batches, thousands per syscall; relabels (rare: an entry another
/// feed lists too) one by one.
///
/// On error the maps hold a prefix of the plan. Either apply the same plan
/// again (every step is idempotent) or apply [`Plan::rollback`]; only then
/// is the index consistent with the kernel again. Commit the plan to the
/// index only after this returns `Ok`.
pub fn apply_plan(dp: &mut Dataplane, plan: &Plan) -> Result<ApplyStats, DataplaneError> {
    let started = Instant::now();
    for step in plan.steps(usize::MAX) {
        apply_step(dp, plan.feed_id, &step)?;
    }
    Ok(ApplyStats {
        added: plan.add.len(),
        relabelled: plan.relabel.len(),
        removed: plan.remove.len(),
        elapsed: started.elapsed(),
    })
}

/// One bounded piece of a [`Plan`]: at most the chunk size of entries of
/// one kind. Applying a plan's [`Plan::steps`] in order is applying the
/// plan, with the same guarantees as [`apply_plan`] between any two steps;
/// the agent takes its lock once per step, so that a million-entry apply
/// never holds the lock (or its one thread) for long (docs/ARCHITECTURE.md,
/// "Tasks and threading").
#[derive(Debug)]
pub enum Step<'a> {
    AddV4(&'a [[u8; 4]]),
    AddV6(&'a [[u8; 16]]),
    AddNets(Nets<'a>),
    Relabel(&'a [(Cidr, u32)]),
    RemoveV4(&'a [[u8; 4]]),
    RemoveV6(&'a [[u8; 16]]),
    RemoveNets(Nets<'a>),
}

/// Prefixes of one family, borrowed from the plan: a step makes its
/// [`Cidr`]s only when it is written, so cutting a million-entry plan into
/// steps copies nothing.
#[derive(Clone, Copy, Debug)]
pub enum Nets<'a> {
    V4(&'a [([u8; 4], u8)]),
    V6(&'a [([u8; 16], u8)]),
}

impl Nets<'_> {
    pub fn len(&self) -> usize {
        match self {
            Nets::V4(n) => n.len(),
            Nets::V6(n) => n.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The prefixes. Keys only ever come from valid networks, so
    /// truncating changes nothing.
    pub fn cidrs(&self) -> Vec<Cidr> {
        match self {
            Nets::V4(n) => n
                .iter()
                .map(|(a, l)| Cidr::truncating(Ipv4Addr::from(*a).into(), *l))
                .collect(),
            Nets::V6(n) => n
                .iter()
                .map(|(a, l)| Cidr::truncating(Ipv6Addr::from(*a).into(), *l))
                .collect(),
        }
    }
}

impl Step<'_> {
    /// Entries the step writes or deletes.
    pub fn len(&self) -> usize {
        match self {
            Step::AddV4(k) | Step::RemoveV4(k) => k.len(),
            Step::AddV6(k) | Step::RemoveV6(k) => k.len(),
            Step::AddNets(n) | Step::RemoveNets(n) => n.len(),
            Step::Relabel(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Plan {
    /// The plan as steps of at most `chunk` entries each (at least one),
    /// in [`apply_plan`]'s order: additions, relabels, removals.
    pub fn steps(&self, chunk: usize) -> Vec<Step<'_>> {
        let chunk = chunk.max(1);
        fn nets(set: &FeedSet, chunk: usize) -> impl Iterator<Item = Nets<'_>> {
            let v4 = set.v4_net_keys().chunks(chunk).map(Nets::V4);
            v4.chain(set.v6_net_keys().chunks(chunk).map(Nets::V6))
        }
        let mut out = Vec::new();
        out.extend(self.add.v4_hosts().chunks(chunk).map(Step::AddV4));
        out.extend(self.add.v6_hosts().chunks(chunk).map(Step::AddV6));
        out.extend(nets(&self.add, chunk).map(Step::AddNets));
        out.extend(self.relabel.chunks(chunk).map(Step::Relabel));
        out.extend(self.remove.v4_hosts().chunks(chunk).map(Step::RemoveV4));
        out.extend(self.remove.v6_hosts().chunks(chunk).map(Step::RemoveV6));
        out.extend(nets(&self.remove, chunk).map(Step::RemoveNets));
        out
    }
}

/// Writes one step of the plan of feed `feed_id`.
pub fn apply_step(dp: &mut Dataplane, feed_id: u32, step: &Step<'_>) -> Result<(), DataplaneError> {
    let entry = FeedEntry { feed_id };
    match step {
        Step::AddV4(k) => dp.set_feed_hosts(k, &entry),
        Step::AddV6(k) => dp.set_feed_hosts(k, &entry),
        Step::AddNets(n) => dp.set_feed_nets(&n.cidrs(), &entry),
        Step::Relabel(r) => r
            .iter()
            .try_for_each(|(net, id)| dp.set_feed_entry(*net, &FeedEntry { feed_id: *id })),
        Step::RemoveV4(k) => dp.remove_feed_hosts(k),
        Step::RemoveV6(k) => dp.remove_feed_hosts(k),
        Step::RemoveNets(n) => dp.remove_feed_nets(&n.cidrs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::FeedIndex;

    fn cidrs(v: &[&str]) -> Vec<Cidr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// A plan cut into steps is the same writes in the same order: every
    /// addition before any relabel, every relabel before any removal, and
    /// no step larger than asked.
    #[test]
    fn steps_cover_the_plan_in_order_and_in_bounds() {
        let mut index = FeedIndex::default();
        let old = cidrs(&[
            "192.0.2.1/32",
            "192.0.2.2/32",
            "192.0.2.3/32",
            "10.0.0.0/8",
            "2001:db8::1/128",
            "2001:db8:1::/48",
            "198.51.100.0/24",
        ]);
        index.commit(index.plan(1, &old)).unwrap();
        // Feed 2 also lists 198.51.100.0/24: feed 1 dropping it relabels it.
        index
            .commit(index.plan(2, &cidrs(&["198.51.100.0/24"])))
            .unwrap();
        let new = cidrs(&[
            "192.0.2.1/32",
            "192.0.2.9/32",
            "192.0.2.10/32",
            "192.0.2.11/32",
            "172.16.0.0/12",
            "172.17.0.0/16",
            "2001:db8::2/128",
            "2001:db8::3/128",
        ]);
        let plan = index.plan(1, &new);
        for chunk in [1, 2, 3, usize::MAX] {
            let steps = plan.steps(chunk);
            assert!(steps.iter().all(|s| !s.is_empty() && s.len() <= chunk));
            let rank = |s: &Step<'_>| match s {
                Step::AddV4(_) | Step::AddV6(_) | Step::AddNets(_) => 0,
                Step::Relabel(_) => 1,
                _ => 2,
            };
            assert!(steps.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
            let (mut added, mut relabelled, mut removed) = (Vec::new(), Vec::new(), Vec::new());
            for s in &steps {
                match s {
                    Step::AddV4(k) => added.extend(k.iter().map(|a| Cidr::host((*a).into()))),
                    Step::AddV6(k) => added.extend(k.iter().map(|a| Cidr::host((*a).into()))),
                    Step::AddNets(n) => added.extend(n.cidrs()),
                    Step::Relabel(r) => relabelled.extend(r.iter().copied()),
                    Step::RemoveV4(k) => removed.extend(k.iter().map(|a| Cidr::host((*a).into()))),
                    Step::RemoveV6(k) => removed.extend(k.iter().map(|a| Cidr::host((*a).into()))),
                    Step::RemoveNets(n) => removed.extend(n.cidrs()),
                }
            }
            let sorted = |mut v: Vec<Cidr>| {
                v.sort();
                v
            };
            assert_eq!(
                sorted(added),
                sorted(plan.add.iter().collect()),
                "chunk {chunk}"
            );
            assert_eq!(relabelled, plan.relabel, "chunk {chunk}");
            assert_eq!(
                sorted(removed),
                sorted(plan.remove.iter().collect()),
                "chunk {chunk}"
            );
        }
        assert_eq!(plan.add.len(), 7);
        assert_eq!(plan.relabel.len(), 1);
        assert_eq!(plan.remove.len(), 5);
        assert_eq!(plan.touched().count(), 13);
    }
}
