//! Feed plans applied to the real kernel maps (private, unpinned), read
//! back through the kernel, and judged by the real XDP program under
//! BPF_PROG_TEST_RUN. Needs root (CAP_BPF).

use std::{collections::BTreeMap, net::IpAddr};

use shield_common::{
    maps::FeedEntry,
    reason::{Reason, Verdict},
};
use shield_tests::{harness::*, packet::*};
use shield_user::{
    dataplane::{Dataplane, LoadOptions},
    feeds::{FeedIndex, FeedSet, Plan, Step, apply_plan, apply_step},
    net::Cidr,
};

fn cs(v: &[&str]) -> Vec<Cidr> {
    v.iter().map(|s| cidr(s)).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Plans `new` for `feed_id`, applies it and commits it.
fn refresh(dp: &mut Dataplane, ix: &mut FeedIndex, feed_id: u32, new: &[Cidr]) -> Plan {
    let plan = ix.plan(feed_id, new);
    apply_plan(dp, &plan).expect("apply");
    ix.commit(plan.clone()).expect("commit");
    plan
}

/// What the kernel's four feed maps hold, read back entry by entry.
fn kernel(dp: &Dataplane) -> BTreeMap<Cidr, u32> {
    dp.feed_entries()
        .unwrap()
        .into_iter()
        .map(|(c, e)| (c, e.feed_id))
        .collect()
}

/// The kernel as the index describes it: every entry with its label.
fn expected(ix: &FeedIndex) -> BTreeMap<Cidr, u32> {
    let mut out = BTreeMap::new();
    for id in ix.feed_ids() {
        for c in ix.entries(id).unwrap().iter() {
            out.insert(c, ix.label(&c).unwrap());
        }
    }
    out
}

const A: &[&str] = &[
    "198.51.100.7",
    "198.51.100.8",
    "203.0.113.0/24",
    "2001:db8:1::7",
    "2001:db8:aa00::/40",
];
const B: &[&str] = &[
    "198.51.100.7",
    "2001:db8:1::7",
    "203.0.113.0/24",
    "192.0.2.9",
];

#[test]
fn overlapping_feeds_keep_a_shared_entry_enforced_when_one_drops_it() {
    let mut h = Harness::new();
    let mut ix = FeedIndex::new();
    refresh(&mut h.dp, &mut ix, 1, &cs(A));
    let p = refresh(&mut h.dp, &mut ix, 2, &cs(B));
    // Only what no feed had is written; shared entries keep feed 1's id.
    assert_eq!(p.add.iter().collect::<Vec<_>>(), cs(&["192.0.2.9"]));
    assert_eq!(kernel(&h.dp), expected(&ix));
    assert_eq!(
        h.dp.feed_match(ip("198.51.100.7")).unwrap(),
        Some(FeedEntry { feed_id: 1 })
    );

    // Feed 1 drops three entries feed 2 also lists, and one only it had.
    let p = refresh(
        &mut h.dp,
        &mut ix,
        1,
        &cs(&["198.51.100.8", "2001:db8:aa00::/40"]),
    );
    let mut relabelled: Vec<Cidr> = p.relabel.iter().map(|(c, _)| *c).collect();
    relabelled.sort();
    assert_eq!(
        relabelled,
        cs(&["198.51.100.7", "203.0.113.0/24", "2001:db8:1::7"])
    );
    assert!(p.relabel.iter().all(|(_, to)| *to == 2));
    assert!(p.remove.is_empty());
    assert_eq!(kernel(&h.dp), expected(&ix));

    // Still enforced, now counted against feed 2, by the real program.
    for src in ["198.51.100.7", "2001:db8:1::7", "203.0.113.77"] {
        assert_eq!(
            h.dp.feed_match(ip(src)).unwrap(),
            Some(FeedEntry { feed_id: 2 }),
            "{src}"
        );
        assert_eq!(
            h.judge(&Pkt::syn(src, 443).build()),
            (XDP_DROP, Verdict::Drop, Reason::Feed),
            "{src}"
        );
    }
    assert_eq!(h.dp.feed_hits(2).unwrap(), 3);
    assert_eq!(h.dp.feed_hits(1).unwrap(), 0);
    assert_eq!(
        h.judge(&Pkt::syn("198.51.100.8", 443).build()).2,
        Reason::Feed
    );
    assert_eq!(h.dp.feed_hits(1).unwrap(), 1);

    // Feed 2 goes entirely: what only it listed is deleted and passes.
    let p = ix.remove_feed(2);
    apply_plan(&mut h.dp, &p).unwrap();
    ix.commit(p).unwrap();
    assert_eq!(kernel(&h.dp), expected(&ix));
    assert_eq!(ix.feed_ids().collect::<Vec<_>>(), vec![1]);
    for src in ["198.51.100.7", "2001:db8:1::7", "203.0.113.77", "192.0.2.9"] {
        assert_eq!(h.dp.feed_match(ip(src)).unwrap(), None, "{src}");
        assert_eq!(
            h.judge(&Pkt::syn(src, 443).build()),
            (XDP_PASS, Verdict::Pass, Reason::Clean),
            "{src}"
        );
    }
}

#[test]
fn a_refresh_adds_and_removes_and_the_kernel_matches_the_index() {
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let mut ix = FeedIndex::new();
    let v1: Vec<Cidr> =
        (0..3000u32)
            .map(|i| Cidr::host(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
            .chain((0..200u32).map(|i| {
                Cidr::new(IpAddr::from((0x2c00_0000 + (i << 8)).to_be_bytes()), 24).unwrap()
            }))
            .chain(
                (0..300u128)
                    .map(|i| Cidr::host(IpAddr::from(((0x2001_0db8u128 << 96) | i).to_be_bytes()))),
            )
            .collect();
    refresh(&mut dp, &mut ix, 7, &v1);
    assert_eq!(kernel(&dp).len(), 3500);
    assert_eq!(kernel(&dp), expected(&ix));

    // Drop every third entry, add 500 new ones (more than one batch's
    // worth of neither, so the batch paths are exercised with gaps).
    let v2: Vec<Cidr> = v1
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, c)| *c)
        .chain((0..500u32).map(|i| Cidr::host(IpAddr::from((0x0b00_0000 + i).to_be_bytes()))))
        .collect();
    let p = refresh(&mut dp, &mut ix, 7, &v2);
    assert_eq!((p.add.len(), p.remove.len()), (500, 1167));
    assert_eq!(kernel(&dp), expected(&ix));
    assert_eq!(ix.len(7), v2.len());
    assert_eq!(dp.feed_match(ip("10.0.0.0")).unwrap(), None);
    assert_eq!(
        dp.feed_match(ip("10.0.0.1")).unwrap(),
        Some(FeedEntry { feed_id: 7 })
    );
}

/// The agent writes a plan in steps, one hold of its lock each
/// (agent/feeds.rs `write_steps`): after every step, every entry either
/// version lists with this feed or another is in the kernel with a label
/// one of the versions gives it, and after the last the kernel is the
/// index.
#[test]
fn a_plan_written_in_steps_never_drops_an_entry_a_feed_keeps() {
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let mut ix = FeedIndex::new();
    // Feed 1 first: the entries both list carry its label, and dropping
    // one of them relabels it to feed 2.
    refresh(&mut dp, &mut ix, 1, &cs(A));
    refresh(&mut dp, &mut ix, 2, &cs(B));
    let before = expected(&ix);
    let next = cs(&[
        "198.51.100.8",
        "198.51.100.9",
        "203.0.113.0/24",
        "2001:db8:1::8",
        "2001:db8:bb00::/40",
        "10.9.0.0/16",
    ]);
    let plan = ix.plan(1, &next);
    let mut after_plan = ix.clone();
    after_plan.commit(plan.clone()).unwrap();
    let after = expected(&after_plan);
    let steps = plan.steps(1);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Relabel(_))) && steps.len() == 7,
        "{steps:?}"
    );
    for (i, step) in steps.iter().enumerate() {
        apply_step(&mut dp, plan.feed_id, step).unwrap();
        let k = kernel(&dp);
        for (net, label) in after.iter().filter(|(n, _)| before.contains_key(n)) {
            let got = k.get(net);
            assert!(
                got == Some(label) || got == before.get(net),
                "after step {i} ({step:?}): {net} kept by both versions is {got:?}"
            );
        }
    }
    ix.commit(plan).unwrap();
    assert_eq!(kernel(&dp), expected(&ix));
    assert_eq!(kernel(&dp), after);
}

#[test]
fn batched_host_writes_skip_absent_keys_on_delete() {
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let e = FeedEntry { feed_id: 4 };
    let v4: Vec<[u8; 4]> = (0..20_000u32)
        .map(|i| (0x6440_0000 + i).to_be_bytes())
        .collect();
    let v6: Vec<[u8; 16]> = (0..50u128)
        .map(|i| ((0x2001_0db8u128 << 96) | i).to_be_bytes())
        .collect();
    dp.set_feed_hosts(&v4, &e).unwrap();
    dp.set_feed_hosts(&v6, &e).unwrap();
    assert_eq!(kernel(&dp).len(), 20_050);
    // Every other key deleted already; the batch delete must carry on
    // past each absent key rather than stop at the first.
    let odd: Vec<[u8; 4]> = v4.iter().skip(1).step_by(2).copied().collect();
    dp.remove_feed_hosts(&odd).unwrap();
    assert_eq!(kernel(&dp).len(), 10_050);
    dp.remove_feed_hosts(&v4).unwrap();
    dp.remove_feed_hosts(&v6).unwrap();
    assert!(kernel(&dp).is_empty());
    // Deleting from an empty map is still success.
    dp.remove_feed_hosts(&v6).unwrap();
}

#[test]
fn batched_prefix_writes_keep_lengths_apart_and_skip_absent_keys_on_delete() {
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let e = FeedEntry { feed_id: 5 };
    // More than one batch of /24s, and the /16 over each first 256 of
    // them: the same address at two lengths must be two entries.
    let v4: Vec<Cidr> =
        (0..10_000u32)
            .map(|i| Cidr::new(IpAddr::from((0x6400_0000 + (i << 8)).to_be_bytes()), 24).unwrap())
            .chain((0..40u32).map(|i| {
                Cidr::new(IpAddr::from((0x6400_0000 + (i << 16)).to_be_bytes()), 16).unwrap()
            }))
            .collect();
    let v6: Vec<Cidr> = (0..300u128)
        .map(|i| {
            Cidr::new(
                IpAddr::from(((0x2001_0db8u128 << 96) | (i << 64)).to_be_bytes()),
                64,
            )
            .unwrap()
        })
        .collect();
    dp.set_feed_nets(&v4, &e).unwrap();
    dp.set_feed_nets(&v6, &e).unwrap();
    let got = kernel(&dp);
    assert_eq!(got.len(), 10_340);
    assert!(v4.iter().chain(&v6).all(|c| got.get(c) == Some(&5)));
    // The /24 goes, the /16 over it still matches.
    dp.remove_feed_nets(&v4[..1]).unwrap();
    assert_eq!(
        dp.feed_match(ip("100.0.0.1")).unwrap(),
        Some(FeedEntry { feed_id: 5 })
    );
    assert_eq!(kernel(&dp).get(&cidr("100.0.0.0/16")), Some(&5));
    assert_eq!(kernel(&dp).get(&cidr("100.0.0.0/24")), None);
    // Every other prefix deleted already; the batch delete must carry on
    // past each absent key rather than stop at the first.
    let odd: Vec<Cidr> = v4.iter().skip(1).step_by(2).copied().collect();
    dp.remove_feed_nets(&odd).unwrap();
    assert_eq!(kernel(&dp).len(), 10_340 - 1 - odd.len());
    dp.remove_feed_nets(&v4).unwrap();
    dp.remove_feed_nets(&v6).unwrap();
    assert!(kernel(&dp).is_empty());
    dp.remove_feed_nets(&v6).unwrap();
    // A host has no place in the tries.
    let err = dp.set_feed_nets(&cs(&["192.0.2.1"]), &e).unwrap_err();
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
    assert!(kernel(&dp).is_empty());
}

#[test]
fn a_failed_prefix_batch_is_rolled_back_to_what_the_index_says() {
    // A v4 trie of 8 entries: the second version's prefixes cannot fit,
    // and the kernel refuses part way through the batch.
    let mut dp = Dataplane::load(&LoadOptions {
        capacities: vec![("FEED_NET_V4", 8)],
        ..Default::default()
    })
    .unwrap();
    let mut ix = FeedIndex::new();
    let net = |i: u32| Cidr::new(IpAddr::from((0xc633_0000 + (i << 8)).to_be_bytes()), 24).unwrap();
    let v1: Vec<Cidr> = (0..6).map(net).chain(cs(&["192.0.2.1"])).collect();
    refresh(&mut dp, &mut ix, 1, &v1);
    let before = kernel(&dp);
    assert_eq!(before.len(), 7);

    let v2: Vec<Cidr> = (3..20).map(net).collect();
    let plan = ix.plan(1, &v2);
    let err = apply_plan(&mut dp, &plan).unwrap_err();
    assert!(err.to_string().contains("FEED_NET_V4"), "{err}");
    assert!(
        kernel(&dp).len() > before.len(),
        "part of the batch went in"
    );
    apply_plan(&mut dp, &plan.rollback()).unwrap();
    assert_eq!(kernel(&dp), before);
    assert_eq!(kernel(&dp), expected(&ix));
}

#[test]
fn a_failed_apply_is_rolled_back_to_what_the_index_says() {
    // A FEED_V4 map of 16 entries: the second feed version cannot fit, and
    // the kernel refuses part way through the batch.
    let mut dp = Dataplane::load(&LoadOptions {
        capacities: vec![("FEED_V4", 16)],
        ..Default::default()
    })
    .unwrap();
    let mut ix = FeedIndex::new();
    let host = |i: u32| Cidr::host(IpAddr::from((0xc633_6400 + i).to_be_bytes()));
    let v1: Vec<Cidr> = (0..10).map(host).chain(cs(&["203.0.113.0/24"])).collect();
    refresh(&mut dp, &mut ix, 1, &v1);
    let before = kernel(&dp);
    assert_eq!(before.len(), 11);

    // Keep 5, add 20 hosts and a prefix, drop the /24.
    let v2: Vec<Cidr> = (5..30).map(host).chain(cs(&["192.0.2.0/24"])).collect();
    let plan = ix.plan(1, &v2);
    let err = apply_plan(&mut dp, &plan).unwrap_err();
    assert!(err.to_string().contains("FEED_V4"), "{err}");
    // Some of the new hosts went in before the map filled up.
    assert!(kernel(&dp).len() > before.len());

    apply_plan(&mut dp, &plan.rollback()).unwrap();
    assert_eq!(kernel(&dp), before);
    assert_eq!(kernel(&dp), expected(&ix));
    assert!(ix.commit(plan.rollback()).is_err());

    // A version that fits applies cleanly from the restored state.
    let v3: Vec<Cidr> = (3..15).map(host).collect();
    refresh(&mut dp, &mut ix, 1, &v3);
    assert_eq!(kernel(&dp), expected(&ix));
    assert_eq!(kernel(&dp).len(), 12);
}

#[test]
fn feed_set_from_a_parsed_feed_round_trips_through_the_kernel() {
    let body = b"# test feed\n192.0.2.1\n192.0.2.1\n198.51.100.0/24 ; SBL1\n2001:db8::1\n2001:db8:5::/48\n";
    let parsed = shield_user::feeds::parse_feed(&body[..], &Default::default()).expect("parse");
    let set = FeedSet::from_cidrs(&parsed.entries);
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let mut ix = FeedIndex::new();
    let plan = ix.plan_set(9, set.clone());
    apply_plan(&mut dp, &plan).unwrap();
    ix.commit(plan).unwrap();
    let got: Vec<Cidr> = kernel(&dp).into_keys().collect();
    let mut want: Vec<Cidr> = set.iter().collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.len(), 4);
}
