//! No input makes the parser panic or misplace an error.

use proptest::prelude::*;

use super::*;

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("a = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = errors(&deep);
    assert!(e.len() == 1 && e[0].message.contains("recursion"), "{e:?}");
    let tables = format!("a = {}{}", "{ b = ".repeat(50_000), "}".repeat(50_000));
    assert!(parse(&tables, Path::new("x"), TICK).is_err());
}

/// Values of every type, some valid somewhere, most not.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"1000/s\"".to_string()),
        Just("\"unlimited\"".to_string()),
        Just("\"10.0.0.0/8\"".to_string()),
        Just("\"8000-8099\"".to_string()),
        Just("\"1h30m\"".to_string()),
        Just("\"https://example.com/x\"".to_string()),
        Just("[]".to_string()),
        Just("[\"eth0\", 22, \"1-65535\"]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "interfaces",
            "xdp_mode",
            "dry_run",
            "ipv6_prefix",
            "control_socket",
            "metrics_listen",
            "state_dir",
            "pin_dir",
            "malformed",
            "cidrs",
            "packets",
            "packet_burst",
            "connections",
            "connection_burst",
            "name",
            "proto",
            "ports",
            "allow_from",
            "url",
            "path",
            "format",
            "refresh",
            "allow_http",
            "min_score",
            "max_bytes",
            "lapi_url",
            "api_key_file",
            "poll",
            "machine_id",
            "password_file",
            "enabled",
            "after",
            "ttl",
            "factor",
            "max_ttl",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,10}",
    ]
}

fn any_header() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "[allow]",
        "[limits]",
        "[[tier]]",
        "[[port]]",
        "[[feed]]",
        "[crowdsec]",
        "[autoban]",
        "[tier]",
        "[[limits]]",
    ])
    .prop_map(str::to_string)
}

/// A document of sections made of known (and unknown) keys with values of
/// any type, to reach deep into the walk.
fn any_document() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            any_header(),
            prop::collection::vec((any_key(), any_value()), 0..6),
        ),
        0..8,
    )
    .prop_map(|sections| {
        let mut out = String::new();
        for (header, pairs) in sections {
            out.push_str(&header);
            out.push('\n');
            for (k, v) in pairs {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn garbage_never_panics(text in "\\PC{0,200}", tick in any::<u64>()) {
        let _ = parse(&text, Path::new("x"), tick);
    }

    #[test]
    fn structured_garbage_never_panics_and_errors_are_placed(
        text in any_document(),
        tick in prop_oneof![Just(TICK), any::<u64>()],
    ) {
        let lines = text.lines().count().max(1);
        if let Err(e) = parse(&text, Path::new("x"), tick) {
            prop_assert!(!e.errors.is_empty());
            for err in &e.errors {
                prop_assert!(err.line >= 1 && err.line <= lines + 1, "{err} in\n{text}");
                prop_assert!(err.column >= 1);
                prop_assert!(!err.message.is_empty());
            }
        }
    }
}
