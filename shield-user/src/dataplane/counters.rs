//! The program's verdict counters, summed over CPUs.

use shield_common::{
    maps::Counter,
    reason::{COUNTER_SLOTS, REASON_COUNT, Reason, Verdict, counter_index},
};

/// Counters per (verdict, reason).
#[derive(Clone, Debug)]
pub struct Counters {
    pub(super) slots: [Counter; COUNTER_SLOTS as usize],
}

impl Counters {
    pub fn get(&self, v: Verdict, r: Reason) -> Counter {
        self.slots[counter_index(v, r) as usize]
    }

    pub fn packets(&self, v: Verdict, r: Reason) -> u64 {
        self.get(v, r).packets
    }

    /// All packets counted, whatever the verdict.
    pub fn total_packets(&self) -> u64 {
        self.slots.iter().map(|c| c.packets).sum()
    }

    /// (verdict, reason, counter) for every slot.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, Reason, Counter)> + '_ {
        Verdict::ALL
            .into_iter()
            .flat_map(move |v| Reason::ALL.into_iter().map(move |r| (v, r, self.get(v, r))))
    }
}

const _: () = assert!(REASON_COUNT as usize == Reason::ALL.len());
