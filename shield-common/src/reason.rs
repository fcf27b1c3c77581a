//! Why a packet got its verdict. The numbering is an ABI: the kernel indexes
//! the counters array with it and dashboards read the names.

/// The reason a packet was passed or dropped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Reason {
    /// No rule matched; the packet went on to the stack.
    Clean = 0,
    /// The source is on the allowlist.
    Allowed = 1,
    /// The source is banned (exact or CIDR ban that has not expired).
    Banned = 2,
    /// The source is listed by a threat feed.
    Feed = 3,
    /// A port ACL does not admit the source.
    Acl = 4,
    /// The per-source packet rate limit was exceeded.
    Ratelimit = 5,
    /// The per-source new-connection (TCP SYN) rate limit was exceeded.
    Synlimit = 6,
    /// Truncated or inconsistent headers.
    Malformed = 7,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): always passed.
    NonIp = 8,
}

/// Number of reasons; the counters array has `VERDICT_COUNT * REASON_COUNT` slots.
pub const REASON_COUNT: u32 = 9;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::Clean,
        Reason::Allowed,
        Reason::Banned,
        Reason::Feed,
        Reason::Acl,
        Reason::Ratelimit,
        Reason::Synlimit,
        Reason::Malformed,
        Reason::NonIp,
    ];

    /// The label used in metrics and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Clean => "clean",
            Reason::Allowed => "allowed",
            Reason::Banned => "banned",
            Reason::Feed => "feed",
            Reason::Acl => "acl",
            Reason::Ratelimit => "ratelimit",
            Reason::Synlimit => "synlimit",
            Reason::Malformed => "malformed",
            Reason::NonIp => "non_ip",
        }
    }

    /// Reasons that are drops by policy. `Malformed` is a drop unless the
    /// operator configured `malformed = "pass"`, which [`crate::decide`] handles.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::Banned
                | Reason::Feed
                | Reason::Acl
                | Reason::Ratelimit
                | Reason::Synlimit
                | Reason::Malformed
        )
    }
}

/// What happened to the packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
    /// Dry run: the packet would have been dropped but was passed.
    WouldDrop = 2,
}

pub const VERDICT_COUNT: u32 = 3;

impl Verdict {
    pub const ALL: [Verdict; VERDICT_COUNT as usize] =
        [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
        }
    }
}

/// Slots in the per-CPU counters array.
pub const COUNTER_SLOTS: u32 = VERDICT_COUNT * REASON_COUNT;

/// Index of the (verdict, reason) counter.
#[inline(always)]
pub const fn counter_index(verdict: Verdict, reason: Reason) -> u32 {
    verdict as u32 * REASON_COUNT + reason as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indexes_are_dense_and_unique() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let i = counter_index(v, r) as usize;
                assert!(i < seen.len());
                assert!(!seen[i], "duplicate slot {i}");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn all_lists_every_reason_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn names_are_unique() {
        for a in Reason::ALL {
            for b in Reason::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
    }
}
