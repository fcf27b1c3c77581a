//! The last step of the pipeline: from a reason and the dry-run switches to a
//! verdict. Kept here so the kernel and the host tests share one truth.

use crate::{
    maps::{CFG_DRY_RUN, CFG_MALFORMED_PASS},
    reason::{Reason, Verdict},
};

/// The verdict for `reason` under the global config flags.
///
/// `rule_dry_run` is the per-rule dry-run bit (port rules carry one); either
/// it or the global flag turns a drop into `WouldDrop`.
#[inline(always)]
pub const fn verdict(reason: Reason, cfg_flags: u32, rule_dry_run: bool) -> Verdict {
    let drop = match reason {
        Reason::Malformed => cfg_flags & CFG_MALFORMED_PASS == 0,
        other => other.is_drop(),
    };
    if !drop {
        Verdict::Pass
    } else if rule_dry_run || cfg_flags & CFG_DRY_RUN != 0 {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_reasons_always_pass() {
        for flags in [
            0,
            CFG_DRY_RUN,
            CFG_MALFORMED_PASS,
            CFG_DRY_RUN | CFG_MALFORMED_PASS,
        ] {
            for r in [Reason::Clean, Reason::Allowed, Reason::NonIp] {
                assert_eq!(verdict(r, flags, false), Verdict::Pass);
                assert_eq!(verdict(r, flags, true), Verdict::Pass);
            }
        }
    }

    #[test]
    fn drops_become_would_drop_in_dry_run() {
        for r in [
            Reason::Banned,
            Reason::Feed,
            Reason::Acl,
            Reason::Ratelimit,
            Reason::Synlimit,
        ] {
            assert_eq!(verdict(r, 0, false), Verdict::Drop);
            assert_eq!(verdict(r, CFG_DRY_RUN, false), Verdict::WouldDrop);
            assert_eq!(verdict(r, 0, true), Verdict::WouldDrop);
        }
    }

    #[test]
    fn malformed_follows_its_switch() {
        assert_eq!(verdict(Reason::Malformed, 0, false), Verdict::Drop);
        assert_eq!(
            verdict(Reason::Malformed, CFG_MALFORMED_PASS, false),
            Verdict::Pass
        );
        assert_eq!(
            verdict(Reason::Malformed, CFG_DRY_RUN, false),
            Verdict::WouldDrop
        );
    }
}
