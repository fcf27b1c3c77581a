use std::{os::unix::fs::PermissionsExt, time::Duration};

use super::{decisions::WireDecision, spool::rfc3339_for_test, *};
use crate::config::{DecisionScope, check_secret_mode};

fn w(id: i64, scope: &str, value: &str, kind: &str, origin: &str, duration: &str) -> WireDecision {
    WireDecision {
        id,
        origin: origin.into(),
        scope: scope.into(),
        kind: kind.into(),
        value: value.into(),
        duration: duration.into(),
        scenario: Some("test".into()),
    }
}

fn all() -> Filter {
    Filter {
        scopes: vec![DecisionScope::Ip, DecisionScope::Range],
        types: vec!["ban".into()],
        origins: vec![],
        max_addresses: crate::config::DEFAULT_MAX_ADDRESSES,
    }
}

#[test]
fn go_durations() {
    let d = |s| parse_go_duration(s);
    assert_eq!(
        d("59m58.768480852s"),
        Some((false, Duration::new(3598, 768_480_852)))
    );
    assert_eq!(
        d("-39.528267ms"),
        Some((true, Duration::from_nanos(39_528_267)))
    );
    assert_eq!(d("1h2m3s"), Some((false, Duration::from_secs(3723))));
    assert_eq!(d("0"), Some((false, Duration::ZERO)));
    assert_eq!(d("1.5h"), Some((false, Duration::from_secs(5400))));
    assert_eq!(d("3µs"), Some((false, Duration::from_micros(3))));
    for bad in [
        "",
        "-",
        "1",
        "h",
        "1x",
        "1.2.3s",
        ".s",
        "99999999999999999999999h",
        "1h-2m",
    ] {
        assert_eq!(d(bad), None, "{bad}");
    }
}

#[test]
fn startup_replaces_and_deltas_add_and_delete() {
    let mut b = DecisionBook::default();
    let out = b.apply_page(
        vec![
            w(1, "Ip", "192.0.2.1", "ban", "cscli", "1h"),
            w(2, "Range", "198.51.100.0/24", "ban", "CAPI", "2h"),
            w(3, "Ip", "192.0.2.1", "ban", "crowdsec", "3h"),
        ],
        vec![],
        true,
        &all(),
        1_000,
    );
    assert_eq!((out.added, out.rejected.len()), (3, 0));
    let want = b.desired(1_000);
    assert_eq!(want.len(), 2);
    let one = &want[&"192.0.2.1/32".parse().unwrap()];
    assert_eq!(one.expires_unix_ms, 1_000 + 3 * 3_600_000);
    assert!(one.reason.contains("#3"), "{}", one.reason);

    // The longer decision goes; the shorter one still holds the address.
    b.apply_page(
        vec![],
        vec![w(3, "Ip", "192.0.2.1", "ban", "crowdsec", "-1s")],
        false,
        &all(),
        2_000,
    );
    assert_eq!(
        b.desired(2_000)[&"192.0.2.1/32".parse().unwrap()].expires_unix_ms,
        1_000 + 3_600_000
    );
    b.apply_page(
        vec![],
        vec![w(1, "Ip", "192.0.2.1", "ban", "cscli", "-1s")],
        false,
        &all(),
        2_000,
    );
    assert_eq!(b.desired(2_000).len(), 1);

    // A startup page is the whole truth.
    b.apply_page(
        vec![w(9, "Ip", "2001:db8::9", "ban", "cscli", "10m")],
        vec![],
        true,
        &all(),
        3_000,
    );
    let want = b.desired(3_000);
    assert_eq!(
        want.keys().map(ToString::to_string).collect::<Vec<_>>(),
        ["2001:db8::9/128"]
    );
    assert_eq!(b.by_origin().get("cscli"), Some(&1));
    assert_eq!(b.expire(3_000 + 600_001), 1);
    assert!(b.is_empty());
    assert!(b.by_origin().is_empty());
}

/// The per-origin counts a scrape reads are kept as decisions come, are
/// replaced (same id, another origin), go and expire.
#[test]
fn per_origin_counts_follow_every_change() {
    let mut b = DecisionBook::default();
    b.apply_page(
        vec![
            w(1, "Ip", "192.0.2.1", "ban", "cscli", "1h"),
            w(2, "Ip", "192.0.2.2", "ban", "CAPI", "1m"),
            w(3, "Ip", "192.0.2.3", "ban", "CAPI", "1h"),
        ],
        vec![],
        true,
        &all(),
        1_000,
    );
    let counts = |b: &DecisionBook| -> Vec<(String, u64)> { b.by_origin().into_iter().collect() };
    assert_eq!(counts(&b), [("CAPI".into(), 2), ("cscli".into(), 1)]);
    // Id 3 again, now from crowdsec; id 1 deleted.
    b.apply_page(
        vec![w(3, "Ip", "192.0.2.3", "ban", "crowdsec", "1h")],
        vec![w(1, "Ip", "192.0.2.1", "ban", "cscli", "-1s")],
        false,
        &all(),
        2_000,
    );
    assert_eq!(counts(&b), [("CAPI".into(), 1), ("crowdsec".into(), 1)]);
    assert_eq!(b.expire(2_000 + 60_000), 1, "id 2's minute is up");
    assert_eq!(counts(&b), [("crowdsec".into(), 1)]);
}

#[test]
fn filters_and_hostile_values() {
    let mut b = DecisionBook::default();
    let f = Filter {
        scopes: vec![DecisionScope::Ip],
        types: vec!["ban".into(), "captcha".into()],
        origins: vec!["cscli".into()],
        max_addresses: crate::config::DEFAULT_MAX_ADDRESSES,
    };
    let out = b.apply_page(
        vec![
            w(1, "Ip", "192.0.2.1", "captcha", "cscli", "1h"),
            w(2, "Range", "198.51.100.0/24", "ban", "cscli", "1h"),
            w(3, "Ip", "192.0.2.3", "ban", "CAPI", "1h"),
            w(4, "Ip", "192.0.2.4", "throttle", "cscli", "1h"),
            w(5, "Username", "bob", "ban", "cscli", "1h"),
            w(6, "Ip", "not-an-ip", "ban", "cscli", "1h"),
            w(7, "Ip", "192.0.2.7", "ban", "cscli", "forever"),
            w(8, "Ip", "192.0.2.8", "ban", "cscli", "-5s"),
        ],
        vec![],
        true,
        &f,
        0,
    );
    assert_eq!(out.added, 1);
    assert_eq!(out.ignored, 5);
    assert_eq!(
        out.rejected.iter().map(|r| r.id).collect::<Vec<_>>(),
        [6, 7]
    );

    let out = b.apply_page(
        vec![
            w(1, "Range", "0.0.0.0/0", "ban", "x", "1h"),
            w(2, "Range", "2001::/8", "ban", "x", "1h"),
            w(3, "Range", "10.0.0.0/8", "ban", "x", "1h"),
            w(4, "range", "10.1.2.3/24", "BAN", "x", "1h"),
        ],
        vec![],
        true,
        &all(),
        0,
    );
    assert_eq!(
        out.rejected.iter().map(|r| r.id).collect::<Vec<_>>(),
        [1, 2]
    );
    let nets: Vec<String> = b.desired(0).keys().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "10.1.2.0/24"]);
}

#[test]
fn a_hostile_duration_is_capped_at_a_year() {
    let mut b = DecisionBook::default();
    b.apply_page(
        vec![w(1, "Ip", "192.0.2.1", "ban", "x", "2562047h")],
        vec![],
        true,
        &all(),
        0,
    );
    assert_eq!(
        b.desired(0).values().next().unwrap().expires_unix_ms,
        366 * 24 * 3_600_000
    );
}

#[test]
fn secrets_must_be_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key");
    assert!(
        check_secret_mode(&p).is_ok(),
        "a missing file is checked at use"
    );
    assert!(read_secret(&p).unwrap_err().contains("does not exist"));
    std::fs::write(&p, "  s3cret\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = check_secret_mode(&p).unwrap_err();
    assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
    assert!(read_secret(&p).is_err());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_secret(&p).unwrap(), "s3cret");
    std::fs::write(&p, "\n").unwrap();
    assert!(read_secret(&p).unwrap_err().contains("empty"));
    std::fs::write(&p, "two words").unwrap();
    assert!(read_secret(&p).is_err());
}

#[test]
fn spool_survives_reopen_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let alert = |i: u32| Alert {
        source: Cidr::host(std::net::IpAddr::from([192, 0, 2, (i % 250) as u8])),
        rate_pps: 1234.0,
        reason: "over the packet limit for 5s".into(),
        duration_secs: 600,
        at_unix_ms: u64::from(i),
    };
    let mut s = Spool::open(dir.path(), &mut |_| {}).unwrap();
    s.push(alert(1));
    s.push(alert(2));
    // Written behind the queue: a snapshot, taken once per change.
    let snap = s.take_snapshot().unwrap();
    assert!(s.take_snapshot().is_none(), "nothing changed since");
    snap.write().unwrap();
    let mut s = Spool::open(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(s.batch().alerts, [alert(1), alert(2)]);
    assert_eq!(s.pushed(&s.batch()), 2);
    s.push(alert(3));
    s.take_snapshot().unwrap().write().unwrap();
    let s2 = Spool::open(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(s2.batch().alerts, [alert(3)]);
    let dropped: usize = (0..spool::MAX_SPOOLED as u32 + 5)
        .map(|i| s.push(alert(i)))
        .sum();
    assert_eq!(s.len(), spool::MAX_SPOOLED);
    assert_eq!((dropped, s.overflowed), (6, 6));

    std::fs::write(dir.path().join(SPOOL_FILE), "{").unwrap();
    let mut warned = Vec::new();
    let s = Spool::open(dir.path(), &mut |w| warned.push(w)).unwrap();
    assert!(s.is_empty() && warned.len() == 1);
}

#[test]
fn alert_wire_carries_its_decision() {
    let a = Alert {
        source: "203.0.113.9/32".parse().unwrap(),
        rate_pps: 12000.4,
        reason: "over the packet limit for 5s".into(),
        duration_secs: 600,
        at_unix_ms: 1_795_818_273_000,
    };
    let v = a.wire();
    assert_eq!(v["scenario"], SCENARIO);
    assert_eq!(v["source"]["ip"], "203.0.113.9");
    assert_eq!(v["decisions"][0]["duration"], "600s");
    assert_eq!(v["decisions"][0]["value"], "203.0.113.9");
    assert!(v["message"].as_str().unwrap().contains("12000"));
    assert_eq!(v["start_at"], "2026-11-27T22:24:33Z");
    assert_eq!(rfc3339_for_test(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_for_test(951_782_400_000), "2000-02-29T00:00:00Z");
}

use crate::net::Cidr;

#[test]
fn a_delta_names_the_prefixes_it_touched() {
    let mut b = DecisionBook::default();
    let ip = |s: &str| s.parse::<Cidr>().unwrap();
    let out = b.apply_page(
        vec![
            w(1, "Ip", "192.0.2.1", "ban", "cscli", "1h"),
            w(2, "Ip", "192.0.2.1", "ban", "cscli", "2h"),
            w(3, "Ip", "192.0.2.3", "ban", "cscli", "1h"),
        ],
        vec![],
        true,
        &all(),
        0,
    );
    assert!(out.touched.is_empty(), "a startup page is diffed whole");
    let out = b.apply_page(
        vec![w(4, "Ip", "192.0.2.4", "ban", "cscli", "1h")],
        vec![
            w(2, "Ip", "192.0.2.1", "ban", "cscli", "-1s"),
            w(3, "Ip", "192.0.2.3", "ban", "cscli", "-1s"),
        ],
        false,
        &all(),
        0,
    );
    assert_eq!(
        out.touched,
        [ip("192.0.2.1/32"), ip("192.0.2.3/32"), ip("192.0.2.4/32")]
    );
    let ch = b.desired_for(&out.touched, 0);
    assert_eq!(
        ch[&ip("192.0.2.1/32")].as_ref().unwrap().expires_unix_ms,
        3_600_000
    );
    assert_eq!(ch[&ip("192.0.2.3/32")], None);
    assert!(ch[&ip("192.0.2.4/32")].is_some());
    // The index agrees with a full evaluation.
    let full = b.desired(0);
    for (net, d) in &ch {
        assert_eq!(d.as_ref(), full.get(net));
    }
    assert_eq!(b.expire(3_600_000), 2);
    assert!(b.desired_for(&[ip("192.0.2.1/32")], 3_600_000)[&ip("192.0.2.1/32")].is_none());
}

/// A LAPI (hostile, or intercepted) that sends many broad ranges, each
/// within the per-decision limit, cannot black-hole IPv4: past the
/// address cap, Range decisions are refused, counted and named.
#[test]
fn range_decisions_past_the_address_cap_are_refused() {
    let mut b = DecisionBook::default();
    let ranges: Vec<WireDecision> = (0..200)
        .map(|i| {
            w(
                i,
                "Range",
                &format!("{}.0.0.0/8", i + 1),
                "ban",
                "CAPI",
                "1h",
            )
        })
        .collect();
    let out = b.apply_page(ranges, vec![], true, &all(), 1_000);
    assert_eq!(out.added, 16, "sixteen /8s fit the default cap");
    assert_eq!(out.rejected.len(), 184);
    assert!(
        out.rejected[0].why.contains("max_addresses"),
        "{:?}",
        out.rejected[0]
    );
    // Hosts still come in, and a delta that frees room lets a range in.
    let out = b.apply_page(
        vec![w(500, "Ip", "203.0.113.9", "ban", "CAPI", "1h")],
        vec![w(0, "Range", "1.0.0.0/8", "ban", "CAPI", "1h")],
        false,
        &all(),
        1_000,
    );
    assert_eq!((out.added, out.deleted), (1, 1));
    let out = b.apply_page(
        vec![w(501, "Range", "100.0.0.0/8", "ban", "CAPI", "1h")],
        vec![],
        false,
        &all(),
        1_000,
    );
    assert_eq!(out.added, 1, "{:?}", out.rejected);
}

/// Finding 9 of issue 16: autobans spooled while a batch is being pushed
/// overflow the spool; the push's success must then remove what it pushed,
/// not whatever happens to be at the front by now.
#[test]
fn a_push_removes_only_what_it_pushed_even_after_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let alert = |i: u64| Alert {
        source: Cidr::host(std::net::IpAddr::from([
            10,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ])),
        rate_pps: 1.0,
        reason: "r".into(),
        duration_secs: 600,
        at_unix_ms: i,
    };
    let mut s = Spool::open(dir.path(), &mut |_| {}).unwrap();
    for i in 0..spool::BATCH as u64 {
        s.push(alert(i));
    }
    let batch = s.batch();
    assert_eq!(batch.alerts.len(), spool::BATCH);
    // While the batch is on the wire, a flood fills the spool past its cap.
    let flood = spool::MAX_SPOOLED as u64;
    let dropped: usize = (0..flood).map(|i| s.push(alert(1_000_000 + i))).sum();
    // The overflow is counted: the batch's alerts went first.
    assert_eq!((dropped, s.overflowed), (spool::BATCH, spool::BATCH as u64));
    assert_eq!(s.pushed(&batch), 0, "nothing of the batch is left");
    // Every flood alert is still spooled: the overflow took the (pushed)
    // old ones, and the push removed nothing else.
    assert_eq!(s.len(), spool::MAX_SPOOLED);
    let mut left = Vec::new();
    while !s.is_empty() {
        let b = s.batch();
        left.extend(b.alerts.iter().map(|a| a.at_unix_ms));
        assert_eq!(s.pushed(&b), b.alerts.len());
    }
    let want: Vec<u64> = (0..flood).map(|i| 1_000_000 + i).collect();
    assert_eq!(left, want, "flood alerts lost without being counted");
}

/// Finding 10 of issue 16: a page is refused as soon as it holds more
/// than the cap, new and deleted together; null lists are empty ones.
#[test]
fn stream_pages_over_the_cap_are_refused() {
    use super::decisions::{StreamBodyError, parse_stream_body};
    let d = |id: u32| format!("{{\"id\":{id},\"value\":\"192.0.2.{}\"}}", id % 250);
    let page = |new: u32, deleted: u32| {
        let list = |r: std::ops::Range<u32>| r.map(d).collect::<Vec<_>>().join(",");
        format!(
            "{{\"new\":[{}],\"other\":{{\"x\":[1,2]}},\"deleted\":[{}]}}",
            list(0..new),
            list(1000..1000 + deleted)
        )
    };
    let ok = parse_stream_body(page(3, 2).as_bytes(), 5).unwrap();
    assert_eq!((ok.new.len(), ok.deleted.len()), (3, 2));
    assert!(matches!(
        parse_stream_body(page(3, 3).as_bytes(), 5),
        Err(StreamBodyError::TooMany { max: 5 })
    ));
    assert!(matches!(
        parse_stream_body(page(6, 0).as_bytes(), 5),
        Err(StreamBodyError::TooMany { max: 5 })
    ));
    let empty = parse_stream_body(b"{\"new\":null,\"deleted\":null}", 5).unwrap();
    assert!(empty.new.is_empty() && empty.deleted.is_empty());
    assert!(matches!(
        parse_stream_body(b"{\"new\":[{\"id\":\"x\"}]}", 5),
        Err(StreamBodyError::Json(_))
    ));
    assert!(matches!(
        parse_stream_body(b"{} trailing", 5),
        Err(StreamBodyError::Json(_))
    ));
}
