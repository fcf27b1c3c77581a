//! The agent's ban book against the real kernel maps (private maps, packets
//! through BPF_PROG_TEST_RUN): what the book says is banned must be what the
//! program drops, whichever way bans share a kernel entry, and however full
//! the maps are. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use shield_common::{
    maps::{MAP_BAN_V4, MAP_BAN_V6},
    reason::Reason,
};
use shield_tests::{harness::*, packet::*};
use shield_user::{
    agent::{
        bans::{BanBook, BanError, BanOrigin, BanRecord},
        persist::StateWrites,
    },
    clock,
    clock::monotonic_ns,
    crowdsec::Desired,
    dataplane::LoadOptions,
    net::Cidr,
};

const HOUR_MS: u64 = 3_600_000;

/// A ban book over a freshly loaded program, journaling in its own
/// directory (removed on drop).
struct Fixture {
    h: Harness,
    book: BanBook,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn state_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shield-ban-book-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_capacities(Vec::new())
    }

    fn with_capacities(capacities: Vec<(&'static str, u32)>) -> Fixture {
        let h = Harness::with_options(&LoadOptions {
            capacities,
            ..LoadOptions::default()
        });
        let dir = state_dir();
        let book = open(&dir);
        Fixture { h, book, dir }
    }

    fn add(&mut self, net: &str, origin: BanOrigin, ttl_ms: Option<u64>) {
        self.book
            .add(&mut self.h.dp, rec(net, origin, ttl_ms))
            .unwrap();
    }

    fn verdict(&mut self, src: &str) -> Reason {
        self.h.judge(&Pkt::udp(src, 9999).build()).2
    }

    /// Sweeps until `net` has left the book (its ttl passed).
    fn sweep_until_gone(&mut self, net: &str) {
        let net = cidr(net);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.book.list().any(|b| b.net == net) {
            assert!(Instant::now() < deadline, "{net} never expired");
            std::thread::sleep(Duration::from_millis(50));
            self.book.sweep(&mut self.h.dp).unwrap();
        }
        self.assert_counts();
    }

    /// The book's per-origin counts (what `status` shows) agree with its
    /// holds.
    fn assert_counts(&self) {
        for o in [
            BanOrigin::Manual,
            BanOrigin::Autoban,
            BanOrigin::Feed,
            BanOrigin::Crowdsec,
        ] {
            let walked = self.book.list().filter(|b| b.origin == o).count();
            assert_eq!(self.book.held_by(o), walked, "{o:?}");
        }
    }

    /// The kernel's ban entries, by the network each stands for.
    fn kernel(&self) -> BTreeMap<Cidr, shield_common::maps::Ban> {
        self.h.dp.ban_entries().unwrap().into_iter().collect()
    }
}

fn open(dir: &std::path::Path) -> BanBook {
    BanBook::open(dir, Arc::new(StateWrites::default()), &mut |w| {
        panic!("journal: {w}")
    })
    .unwrap()
}

fn rec(net: &str, origin: BanOrigin, ttl_ms: Option<u64>) -> BanRecord {
    let now = clock::unix_ms();
    BanRecord {
        net: cidr(net),
        origin,
        reason: Some("test".into()),
        created_unix_ms: now,
        expires_unix_ms: ttl_ms.map(|t| now + t),
    }
}

fn desired(ttl_ms: u64) -> Desired {
    Desired {
        expires_unix_ms: clock::unix_ms() + ttl_ms,
        reason: "crowdsec test".into(),
    }
}

/// The shieldctl scenario of issue 16: a /64 banned for an hour, then one
/// address in it for a moment. The kernel keys both at the /64; when the
/// address's ban ends, the /64's must go on.
#[test]
fn a_short_host_ban_neither_shortens_nor_lifts_its_64() {
    let mut f = Fixture::new();
    f.add("2001:db8:a::/64", BanOrigin::Manual, Some(HOUR_MS));
    f.add("2001:db8:a::7", BanOrigin::Manual, Some(300));
    let entry = f.kernel()[&cidr("2001:db8:a::/64")];
    assert!(
        entry.expires_ns > monotonic_ns() + 1_800_000_000_000,
        "the /64's entry carries the longest expiry (an hour), not the host's"
    );
    f.sweep_until_gone("2001:db8:a::7");
    assert!(f.book.list().any(|b| b.net == cidr("2001:db8:a::/64")));
    assert_eq!(f.verdict("2001:db8:a::7"), Reason::Banned);
    assert_eq!(f.verdict("2001:db8:a::99"), Reason::Banned);
    assert_eq!(f.verdict("2001:db8:b::7"), Reason::Clean);
}

/// The other order: a long host ban keeps the /64 entry when a short /64
/// ban around it ends.
#[test]
fn a_short_64_ban_never_lifts_a_host_ban_inside_it() {
    let mut f = Fixture::new();
    f.add("2001:db8:a::7", BanOrigin::Manual, None);
    f.add("2001:db8:a::/64", BanOrigin::Manual, Some(300));
    f.sweep_until_gone("2001:db8:a::/64");
    assert_eq!(f.verdict("2001:db8:a::7"), Reason::Banned);
}

/// Across origins: a CrowdSec decision on one address over a manual /64,
/// an autoban over a manual ban; the one lifted never takes the other along.
#[test]
fn lifting_one_origin_never_lifts_another_sharing_the_entry() {
    let mut f = Fixture::new();
    f.add("2001:db8:a::/64", BanOrigin::Manual, None);
    let set: BTreeMap<Cidr, Option<Desired>> =
        [(cidr("2001:db8:a::7"), Some(desired(HOUR_MS)))].into();
    f.book.crowdsec_changes(&mut f.h.dp, &set).unwrap();
    let lift: BTreeMap<Cidr, Option<Desired>> = [(cidr("2001:db8:a::7"), None)].into();
    f.book.crowdsec_changes(&mut f.h.dp, &lift).unwrap();
    assert_eq!(
        f.verdict("2001:db8:a::99"),
        Reason::Banned,
        "CrowdSec letting go of one address lifted the manual /64"
    );

    let added = f
        .book
        .add_many(
            &mut f.h.dp,
            &[rec("2001:db8:a::8", BanOrigin::Autoban, Some(HOUR_MS))],
        )
        .unwrap();
    assert_eq!(added.added.len(), 1, "{added:?}");
    assert!(f.book.remove(&mut f.h.dp, cidr("2001:db8:a::8")).unwrap());
    assert_eq!(
        f.verdict("2001:db8:a::99"),
        Reason::Banned,
        "unbanning an autobanned address lifted the manual /64"
    );

    // And a manual host ban outlives a CrowdSec /64 that ends.
    f.add("2001:db8:c::7", BanOrigin::Manual, None);
    let set: BTreeMap<Cidr, Option<Desired>> =
        [(cidr("2001:db8:c::/64"), Some(desired(HOUR_MS)))].into();
    f.book.crowdsec_changes(&mut f.h.dp, &set).unwrap();
    let lift: BTreeMap<Cidr, Option<Desired>> = [(cidr("2001:db8:c::/64"), None)].into();
    f.book.crowdsec_changes(&mut f.h.dp, &lift).unwrap();
    assert_eq!(f.verdict("2001:db8:c::7"), Reason::Banned);

    // Removing the last holder does lift the entry.
    assert!(f.book.remove(&mut f.h.dp, cidr("2001:db8:a::/64")).unwrap());
    assert_eq!(f.verdict("2001:db8:a::99"), Reason::Clean);
}

/// A restart finds the /64 entry a host ban wrote: it is that ban's, not
/// a second ban to adopt into the book.
#[test]
fn restore_knows_whose_shared_entry_it_finds() {
    let mut f = Fixture::new();
    f.add("2001:db8:a::7", BanOrigin::Manual, Some(HOUR_MS));
    f.add("2001:db8:a::8", BanOrigin::Autoban, Some(HOUR_MS));
    // The agent's writer does this outside its lock (agent/writer.rs).
    f.book.write_journal_now();
    let mut again = open(&f.dir);
    let r = again.restore(&mut f.h.dp).unwrap();
    assert_eq!(r.adopted_from_maps, 0, "{r:?}");
    let nets: BTreeSet<Cidr> = again.list().map(|b| b.net).collect();
    assert_eq!(nets, [cidr("2001:db8:a::7"), cidr("2001:db8:a::8")].into());
    assert_eq!(f.verdict("2001:db8:a::99"), Reason::Banned);
}

/// The kernel entries the book's bans need, as the kernel keys them.
fn book_keys(f: &Fixture) -> BTreeSet<Cidr> {
    let prefix = f.h.dp.config().unwrap().ipv6_prefix as u8;
    f.book
        .list()
        .map(|b| shield_user::agent::bans::enforced_net(b.net, prefix))
        .collect()
}

fn v4_host(i: u32) -> String {
    std::net::Ipv4Addr::from(0xc633_6400 + i).to_string()
}

/// Autobans (spoofable, many) may fill only part of the exact ban maps:
/// the rest stays free for manual and CrowdSec bans. The book never lists
/// an autoban the kernel refused.
#[test]
fn autobans_leave_headroom_for_manual_and_crowdsec_bans() {
    const CAP: u32 = 16;
    let mut f = Fixture::with_capacities(vec![(MAP_BAN_V4, CAP), (MAP_BAN_V6, CAP)]);
    let flood: Vec<BanRecord> = (0..CAP)
        .map(|i| rec(&v4_host(i), BanOrigin::Autoban, Some(HOUR_MS)))
        .collect();
    let added = f.book.add_many(&mut f.h.dp, &flood).unwrap();
    let autobans = f.book.list().count() as u32;
    assert!(
        autobans < CAP,
        "autobans took every slot of BAN_V4 ({autobans} of {CAP})"
    );
    assert_eq!(autobans, CAP / 2, "autobans fill their share, half");
    assert_eq!(added.added.len() as u32, autobans);
    assert_eq!(added.refused.len() as u32, CAP - autobans);
    assert!(
        added
            .refused
            .iter()
            .all(|(_, e)| matches!(e, BanError::AutobanShare { map: "BAN_V4", .. })),
        "{added:?}"
    );
    assert_eq!(book_keys(&f), f.kernel().keys().copied().collect());
    // The reserve takes every manual and CrowdSec ban up to capacity.
    let reserve = CAP - autobans;
    for i in 0..reserve - 1 {
        f.add(&v4_host(100 + i), BanOrigin::Manual, None);
    }
    let set: BTreeMap<Cidr, Option<Desired>> =
        [(cidr(&v4_host(200)), Some(desired(HOUR_MS)))].into();
    f.book.crowdsec_changes(&mut f.h.dp, &set).unwrap();
    assert_eq!(f.kernel().len() as u32, CAP);
    assert_eq!(f.verdict(&v4_host(200)), Reason::Banned);
    assert_eq!(f.verdict(&v4_host(100)), Reason::Banned);
}

/// A full map refuses what does not fit, and the book says only what the
/// kernel holds: an autoban batch is taken in as far as it fits (not cut
/// off at the first refusal with the refused one listed), a CrowdSec batch
/// likewise.
#[test]
fn the_book_never_claims_a_ban_a_full_map_refused() {
    const CAP: u32 = 16;
    let mut f = Fixture::with_capacities(vec![(MAP_BAN_V4, CAP)]);
    for i in 0..CAP - 1 {
        f.add(&v4_host(i), BanOrigin::Manual, None);
    }
    // Two autobans: one on an address already banned (no new entry needed),
    // one new, for which the reserve leaves no room.
    let added = f
        .book
        .add_many(
            &mut f.h.dp,
            &[
                rec(&v4_host(50), BanOrigin::Autoban, Some(HOUR_MS)),
                rec(&v4_host(0), BanOrigin::Autoban, Some(HOUR_MS)),
            ],
        )
        .unwrap();
    assert_eq!(added.refused.len(), 1, "{added:?}");
    assert_eq!(added.refused[0].0.net, cidr(&v4_host(50)));
    assert!(
        f.book
            .list()
            .any(|b| b.net == cidr(&v4_host(0)) && b.origin == BanOrigin::Autoban),
        "an autoban on an entry already in the map costs no room"
    );
    assert_eq!(book_keys(&f), f.kernel().keys().copied().collect());
    // CrowdSec brings three; one fits.
    let set: BTreeMap<Cidr, Option<Desired>> = (60..63)
        .map(|i| (cidr(&v4_host(i)), Some(desired(HOUR_MS))))
        .collect();
    let sync = f.book.crowdsec_changes(&mut f.h.dp, &set).unwrap();
    assert_eq!((sync.added, sync.refused), (1, 2), "{sync:?}");
    assert_eq!(f.kernel().len() as u32, CAP);
    assert_eq!(book_keys(&f), f.kernel().keys().copied().collect());
    // And a manual ban on a full map fails without a trace in the book.
    assert!(
        f.book
            .add(&mut f.h.dp, rec(&v4_host(70), BanOrigin::Manual, None))
            .is_err()
    );
    assert_eq!(book_keys(&f), f.kernel().keys().copied().collect());
    f.assert_counts();
}

/// Issue 20: the agent writes a CrowdSec resync in steps, one hold of its
/// lock each (agent/crowdsec.rs, `write_holds`). Written one prefix per
/// step, a diff never unbans, at any step, a prefix both the old and the
/// new decisions hold, nor one another origin holds, even one banned
/// between two steps; at the end the kernel holds exactly the book.
#[test]
fn a_crowdsec_diff_written_in_steps_never_unbans_a_prefix_it_keeps() {
    let mut f = Fixture::new();
    let old: BTreeMap<Cidr, Option<Desired>> = (0..20)
        .map(|i| (cidr(&v4_host(i)), Some(desired(HOUR_MS))))
        .collect();
    f.book.crowdsec_changes(&mut f.h.dp, &old).unwrap();
    f.add(&v4_host(5), BanOrigin::Manual, None);
    f.add(&v4_host(25), BanOrigin::Manual, None);
    // The new decisions keep 10..20 (a later expiry for 10..15, so those
    // are rewritten), drop 0..10 and add 20..30.
    let new: BTreeMap<Cidr, Desired> = (10..30)
        .map(|i| {
            let ttl = if i < 15 { 2 * HOUR_MS } else { HOUR_MS };
            (cidr(&v4_host(i)), desired(ttl))
        })
        .collect();
    let diff = f.book.crowdsec_diff(new);
    assert_eq!(diff.len(), 30, "10 released, 5 rewritten, 5 kept, 10 added");
    let kept_throughout: Vec<u32> = (10..20).chain([5, 25]).collect();
    let mut total = shield_user::agent::bans::CrowdsecSync::default();
    for (step, (net, want)) in diff.iter().enumerate() {
        if step == 1 {
            // Between two steps, another origin bans a prefix CrowdSec
            // lets go of in the next one (the diff is in address order).
            f.add(&v4_host(2), BanOrigin::Manual, None);
        }
        total.absorb(f.book.crowdsec_changes(&mut f.h.dp, [(net, want)]).unwrap());
        for i in &kept_throughout {
            assert_eq!(
                f.verdict(&v4_host(*i)),
                Reason::Banned,
                "{} passed after step {step} ({net})",
                v4_host(*i)
            );
        }
    }
    assert_eq!(
        (total.added, total.updated, total.removed, total.still_held),
        (10, 5, 10, 2),
        "{total:?}"
    );
    for i in 0..30 {
        let banned = (10..30).contains(&i) || [2, 5, 25].contains(&i);
        assert_eq!(
            f.verdict(&v4_host(i)) == Reason::Banned,
            banned,
            "{}",
            v4_host(i)
        );
    }
    assert_eq!(book_keys(&f), f.kernel().keys().copied().collect());
    f.assert_counts();
}
