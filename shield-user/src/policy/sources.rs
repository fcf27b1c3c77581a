//! Allowlist, tier and ACL membership compiled into one LPM trie per family.
//!
//! The kernel does a single longest-prefix lookup on the source and needs
//! all three answers from it, so each trie entry must already carry what
//! every *covering* prefix says: allowed if any allow prefix covers it, the
//! tier of the longest covering tier prefix, and the union of the ACLs whose
//! `allow_from` covers it. For any address, the longest matching entry is
//! covered by exactly the prefixes that also cover the address, which is
//! why this is correct. Addresses no entry matches are tier 0, no ACL, not
//! allowed: the kernel's miss path.

use std::collections::{BTreeMap, BTreeSet};

use shield_common::maps::{SRC_ALLOWED, SourceClass};

use crate::net::Cidr;

/// `tiers`: (tier id, its prefixes); `acls[i]`: the `allow_from` of ACL `i + 1`.
pub fn compile_sources(
    allow: &[Cidr],
    tiers: &[(u16, &[Cidr])],
    acls: &[&[Cidr]],
) -> BTreeMap<Cidr, SourceClass> {
    let mut prefixes: BTreeSet<Cidr> = allow.iter().copied().collect();
    prefixes.extend(tiers.iter().flat_map(|(_, c)| c.iter().copied()));
    prefixes.extend(acls.iter().flat_map(|c| c.iter().copied()));

    prefixes
        .into_iter()
        .map(|p| {
            let allowed = allow.iter().any(|a| a.contains(&p));
            let tier = tiers
                .iter()
                .flat_map(|(id, cs)| cs.iter().map(move |c| (c, *id)))
                .filter(|(c, _)| c.contains(&p))
                .max_by_key(|(c, _)| c.prefix_len())
                .map_or(0, |(_, id)| id);
            let acl_mask = acls
                .iter()
                .enumerate()
                .filter(|(_, cs)| cs.iter().any(|c| c.contains(&p)))
                .fold(0u64, |m, (i, _)| m | 1 << i);
            let class = SourceClass {
                acl_mask,
                tier,
                flags: if allowed { SRC_ALLOWED } else { 0 },
                _pad: 0,
            };
            (p, class)
        })
        .collect()
}
