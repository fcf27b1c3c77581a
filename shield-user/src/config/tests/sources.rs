//! `[[feed]]`, `[crowdsec]` and `[autoban]`.

use super::*;

fn feed(body: &str) -> String {
    format!("[[feed]]\nname = \"f\"\n{body}")
}

#[test]
fn a_feed_has_exactly_one_source() {
    only_at(&feed(""), 1, 1, "has no source");
    only_at(
        &feed("url = \"https://example.com/x\"\npath = \"/x\"\n"),
        4,
        1,
        "`url` or `path`, not both",
    );
    only_at("[[feed]]\npath = \"/x\"\n", 1, 1, "has no `name`");
}

#[test]
fn feed_urls_are_https_unless_http_is_allowed() {
    only_at(
        &feed("url = \"http://example.com/x\"\n"),
        3,
        7,
        "plain http, which anyone on the path can tamper with",
    );
    let c = ok(&feed("url = \"http://example.com/x\"\nallow_http = true\n"));
    assert!(c.feeds[0].allow_http);
    only_at(
        &feed("url = \"ftp://example.com/x\"\n"),
        3,
        7,
        "not an https:// URL",
    );
    only_at(&feed("url = \"https:///x\"\n"), 3, 7, "not a valid URL");
    only_at(
        &feed("url = \"https://exa mple.com/\"\n"),
        3,
        7,
        "not a valid URL",
    );
}

#[test]
fn feed_settings() {
    only_at(
        &feed("path = \"/x\"\nformat = \"csv\"\n"),
        4,
        10,
        "not one of auto, plain",
    );
    only_at(
        &feed("path = \"/x\"\nformat = \"plain\"\nmin_score = 3\n"),
        5,
        13,
        "only applies to the ipsum format, and this feed's format is \"plain\"",
    );
    // Auto may turn out to be ipsum.
    assert_eq!(
        ok(&feed("path = \"/x\"\nmin_score = 2\n")).feeds[0].min_score,
        Some(2)
    );
    only_at(
        &feed("path = \"/x\"\nrefresh = \"9s\"\n"),
        4,
        11,
        "too often",
    );
    assert_eq!(
        ok(&feed("path = \"/x\"\nrefresh = \"10s\"\n")).feeds[0].refresh,
        Duration::from_secs(10)
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = 0\n"),
        4,
        13,
        "must be at least 1",
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = \"0MiB\"\n"),
        4,
        13,
        "more than zero",
    );
    only_at(
        &feed("path = \"/x\"\nmax_bytes = \"lots\"\n"),
        4,
        13,
        "not a size",
    );
    only_at(
        &feed("path = \"/x\"\nallow_broad = 1\n"),
        4,
        15,
        "expected true or false",
    );
}

#[test]
fn at_most_255_feeds() {
    let feeds = |n: usize| -> String {
        (0..n)
            .map(|i| format!("[[feed]]\nname = \"f{i}\"\npath = \"/f\"\n"))
            .collect()
    };
    assert_eq!(ok(&feeds(255)).feeds.len(), 255);
    only_at(&feeds(256), 3 * 255 + 1, 1, "too many feeds");
}

#[test]
fn crowdsec() {
    let c = ok("[crowdsec]\napi_key_file = \"/etc/shield/cs.key\"\n");
    let cs = c.crowdsec.unwrap();
    assert_eq!(cs.lapi_url, "http://127.0.0.1:8080");
    assert_eq!(cs.poll, Duration::from_secs(10));
    assert_eq!((cs.machine_id, cs.password_file), (None, None));

    only_at("[crowdsec]\n", 1, 1, "needs `api_key_file`");
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nlapi_url = \"tcp://127.0.0.1:8080\"\n",
        3,
        12,
        "not an http:// or https:// URL",
    );
    ok("[crowdsec]\napi_key_file = \"/k\"\nlapi_url = \"https://lapi.example:8080/\"\n");
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nmachine_id = \"h1\"\n",
        3,
        1,
        "`machine_id` needs `password_file` too",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\npassword_file = \"/p\"\n",
        3,
        1,
        "`password_file` needs `machine_id` too",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\npoll = \"0s\"\n",
        3,
        8,
        "longer than zero",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\npoll = \"2h\"\n",
        3,
        8,
        "between 1s and 1h",
    );
}

#[test]
fn crowdsec_filters_and_tls() {
    let cs = ok("[crowdsec]\napi_key_file = \"/k\"\nscopes = [\"ip\"]\ntypes = [\"ban\", \"captcha\"]\norigins = [\"cscli\", \"CAPI\"]\n")
        .crowdsec
        .unwrap();
    assert_eq!(cs.scopes, [DecisionScope::Ip]);
    assert_eq!(cs.types, ["ban", "captcha"]);
    assert_eq!(cs.origins, ["cscli", "CAPI"]);
    let cs = ok("[crowdsec]\napi_key_file = \"/k\"\n").crowdsec.unwrap();
    assert_eq!(cs.scopes, [DecisionScope::Ip, DecisionScope::Range]);
    assert_eq!(cs.types, ["ban"]);
    assert!(cs.origins.is_empty());

    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nscopes = [\"Ip\", \"Country\"]\n",
        3,
        17,
        "not a scope shield can enforce",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nscopes = []\n",
        3,
        10,
        "cannot be empty",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\ntypes = []\n",
        3,
        9,
        "cannot be empty",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\norigins = [\"a,b\"]\n",
        3,
        12,
        "is not a name",
    );
    only_at(
        "[crowdsec]\napi_key_file = \"/k\"\nca_file = \"/ca.pem\"\n",
        3,
        11,
        "needs an https:// `lapi_url`",
    );
    only_at(
        "[crowdsec]\nlapi_url = \"https://lapi:8080\"\ncert_file = \"/c.pem\"\n",
        3,
        1,
        "`cert_file` needs `key_file` too",
    );
    // A client certificate authenticates instead of a key.
    let cs = ok("[crowdsec]\nlapi_url = \"https://lapi:8080\"\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n")
        .crowdsec
        .unwrap();
    assert_eq!(cs.api_key_file, None);
    assert_eq!(cs.key_file.as_deref(), Some(std::path::Path::new("/k.pem")));
}

#[test]
fn crowdsec_refuses_a_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cs.key");
    std::fs::write(&key, "k").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!("[crowdsec]\napi_key_file = \"{}\"\n", key.display());
    let file = dir.path().join("shield.toml");
    std::fs::write(&file, &text).unwrap();
    let errors = crate::config::load(&file, TICK).unwrap_err().errors;
    let [e] = errors.as_slice() else {
        panic!("one error expected: {errors:?}")
    };
    assert_eq!(
        (e.file.as_path(), e.line, e.column),
        (file.as_path(), 2, 16)
    );
    assert!(
        e.message
            .contains("readable by group or others (mode 0644)"),
        "{e}"
    );
    // `parse` reads nothing but its text (the fuzz target runs it): the
    // same config passes there, and its mode is `load`'s to check.
    ok(&text);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    crate::config::load(&file, TICK).unwrap();
}

#[test]
fn autoban() {
    only_at(
        "[autoban]\nafter = \"0s\"\n",
        2,
        9,
        "`after` must be longer than zero",
    );
    only_at(
        "[autoban]\nttl = \"0s\"\n",
        2,
        7,
        "`ttl` must be longer than zero",
    );
    only_at(
        "[autoban]\nfactor = 0\n",
        2,
        10,
        "0 is out of range; it must be at least 1",
    );
    only_at(
        "[autoban]\nmax_ttl = \"5m\"\n",
        2,
        11,
        "`max_ttl` = \"5m\" is shorter than the default `ttl` (10m)",
    );
    assert_eq!(ok("[autoban]\nfactor = 1\n").autoban.factor, 1);
    only_at(
        "[autoban]\nttl = \"2h\"\nmax_ttl = \"1h\"\n",
        3,
        11,
        "`max_ttl` = \"1h\" is shorter than `ttl` = \"2h\"",
    );
    only_at(
        "[autoban]\nttl = \"2d\"\n",
        2,
        7,
        "`ttl` = \"2d\" is longer than the default `max_ttl` (1d)",
    );
    assert_eq!(
        ok("[autoban]\nttl = \"1h\"\nmax_ttl = \"1h\"\n")
            .autoban
            .max_ttl,
        Duration::from_secs(3600)
    );
}

#[test]
fn adaptive() {
    let c = ok("");
    assert!(!c.adaptive.enabled, "off by default");
    assert_eq!(c.adaptive.drop_rate, Some(rate(100_000, 1)));
    assert_eq!(c.adaptive.pass_rate, None);
    let c = ok(
        "[adaptive]\nenabled = true\ndrop_rate = \"off\"\npass_rate = \"2000/s\"\nfactor = 4\nmax_level = 2\nstep = \"3s\"\nrelax_after = \"1m\"\n",
    );
    assert_eq!(
        c.adaptive,
        AdaptiveConfig {
            enabled: true,
            drop_rate: None,
            pass_rate: Some(rate(2000, 1)),
            factor: 4,
            max_level: 2,
            step: Duration::from_secs(3),
            relax_after: Duration::from_secs(60),
        }
    );
    only_at(
        "[adaptive]\nfactor = 1\n",
        2,
        10,
        "`factor`: 1 is out of range; it must be between 2 and 10",
    );
    only_at("[adaptive]\nmax_level = 9\n", 2, 13, "between 1 and 8");
    only_at(
        "[adaptive]\ndrop_rate = \"unlimited\"\n",
        2,
        13,
        "`drop_rate`: a threshold must be above zero",
    );
    only_at(
        "[adaptive]\npass_rate = \"fast\"\n",
        2,
        13,
        "`fast` is not a rate",
    );
    only_at(
        "[adaptive]\nstep = \"0s\"\n",
        2,
        8,
        "`step` must be longer than zero",
    );
    only_at(
        "[adaptive]\nrelax_afte = \"1m\"\n",
        2,
        1,
        "did you mean `relax_after`?",
    );
    only_at(
        "[adaptive]\nenabled = true\ndrop_rate = \"off\"\n",
        1,
        1,
        "set at least one threshold",
    );
}
