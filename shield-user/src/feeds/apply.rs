//! Writing a [`Plan`] into the kernel's feed maps.

use std::time::{Duration, Instant};

use shield_common::maps::FeedEntry;

use super::index::Plan;
use crate::dataplane::{Dataplane, DataplaneError};

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
    let entry = FeedEntry {
        feed_id: plan.feed_id,
    };
    dp.set_feed_hosts(plan.add.v4_hosts(), &entry)?;
    dp.set_feed_hosts(plan.add.v6_hosts(), &entry)?;
    dp.set_feed_nets(&plan.add.nets().collect::<Vec<_>>(), &entry)?;
    for (net, feed_id) in &plan.relabel {
        dp.set_feed_entry(*net, &FeedEntry { feed_id: *feed_id })?;
    }
    dp.remove_feed_hosts(plan.remove.v4_hosts())?;
    dp.remove_feed_hosts(plan.remove.v6_hosts())?;
    dp.remove_feed_nets(&plan.remove.nets().collect::<Vec<_>>())?;
    Ok(ApplyStats {
        added: plan.add.len(),
        relabelled: plan.relabel.len(),
        removed: plan.remove.len(),
        elapsed: started.elapsed(),
    })
}
