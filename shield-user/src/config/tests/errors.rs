//! Where errors are placed and what they say: syntax, unknown keys, wrong types, and all of them at once.

use super::*;

#[test]
fn syntax_errors_are_one_error_with_a_position() {
    only_at("a = 1\nb = \n", 2, 5, "invalid TOML");
    only_at(
        "xdp_mode = \"auto\"\nxdp_mode = \"skb\"\n",
        2,
        1,
        "duplicate key",
    );
    // Where the closing quote was expected.
    only_at("[limits]\npackets = \"1/s\n", 2, 15, "invalid basic string");
}

#[test]
fn unknown_keys_point_at_the_key_and_suggest_the_closest() {
    assert_eq!(
        only("intefaces = [\"eth0\"]\n"),
        "1:1: unknown key `intefaces` in the top level; did you mean `interfaces`?"
    );
    assert_eq!(
        only("[limits]\n  packet_brust = 10\n"),
        "2:3: unknown key `packet_brust` in [limits]; did you mean `packet_burst`?"
    );
    // Far from every key: the message lists them instead.
    only_at(
        "[autoban]\nbandwidth = 1\n",
        2,
        1,
        "known keys: enabled, after, ttl",
    );
    // A limit key at the top level says where it belongs.
    only_at("packets = \"10/s\"\n", 1, 1, "`packets` goes in [limits]");
    only_at("[tiers]\n", 1, 2, "did you mean `tier`?");
}

#[test]
fn unknown_keys_are_errors_in_every_table() {
    let cases = [
        ("[allow]\ncidr = []\n", "in [allow]; did you mean `cidrs`?"),
        (
            "[[tier]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\npacket = \"1/s\"\n",
            "in [[tier]]; did you mean `packets`?",
        ),
        (
            "[[port]]\nname = \"a\"\nproto = \"tcp\"\nports = [1]\nallowfrom = []\n",
            "in [[port]]; did you mean `allow_from`?",
        ),
        (
            "[[feed]]\nname = \"a\"\npath = \"/x\"\nrefesh = \"1h\"\n",
            "in [[feed]]; did you mean `refresh`?",
        ),
        (
            "[crowdsec]\napi_key_file = \"/k\"\nlapi = \"http://x\"\n",
            "in [crowdsec]",
        ),
        (
            "[autoban]\nttls = \"1h\"\n",
            "in [autoban]; did you mean `ttl`?",
        ),
    ];
    for (text, want) in cases {
        let got = only(text);
        assert!(got.contains(want), "{text:?}: {got}");
    }
}

#[test]
fn wrong_types_name_the_expected_shape_and_the_value_found() {
    assert_eq!(
        only("[limits]\npackets = 1000\n"),
        "2:11: `packets`: expected a string like \"1000/s\", found integer 1000"
    );
    assert_eq!(
        only("[limits]\npacket_burst = \"2000\"\n"),
        "2:16: `packet_burst`: expected an integer like 2000, found string \"2000\""
    );
    assert_eq!(
        only("dry_run = \"yes\"\n"),
        "1:11: `dry_run`: expected true or false, found string \"yes\""
    );
    assert_eq!(
        only("ipv6_prefix = 64.0\n"),
        "1:15: `ipv6_prefix`: expected an integer like 64, found float 64.0"
    );
    assert_eq!(
        only("[autoban]\nttl = 600\n"),
        "2:7: `ttl`: expected a string like \"30s\", found integer 600"
    );
    assert_eq!(
        only("interfaces = \"eth0\"\n"),
        "1:14: `interfaces`: expected a list of strings like [\"eth0\"], found string \"eth0\""
    );
    only_at(
        "interfaces = [\"eth0\", 7]\n",
        1,
        23,
        "found integer 7 in the list",
    );
    only_at("limits = 5\n", 1, 10, "expected a table, written [limits]");
    only_at(
        "[tier]\nname = \"a\"\n",
        1,
        1,
        "write [[tier]] (two brackets), not [tier]",
    );
    only_at("tier = [1]\n", 1, 9, "found integer 1 in the list");
    only_at("[[autoban]]\n", 1, 1, "expected a table, written [autoban]");
}

#[test]
fn every_error_in_the_file_is_reported_in_file_order() {
    let text = r#"xdp_mode = "fast"
ipv6_prefix = 8
[limits]
packets = "lots"
[[tier]]
name = "Partners"
cidrs = ["10.1.2.3/8"]
[[port]]
name = "ssh"
proto = "icmp"
ports = [0]
[[feed]]
name = "f"
url = "ftp://example.com/x"
[autoban]
factor = 0
"#;
    let got: Vec<(usize, usize)> = errors(text).iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [
            (1, 12),
            (2, 15),
            (4, 11),
            (6, 8),
            (7, 10),
            (10, 9),
            (11, 10),
            (14, 7),
            (16, 10),
        ]
    );
    let text_errors = parse(text, Path::new("/etc/shield/shield.toml"), TICK)
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = text_errors.lines().collect();
    assert_eq!(lines.len(), 9);
    assert_eq!(
        lines[0],
        "/etc/shield/shield.toml:1:12: `xdp_mode`: \"fast\" is not one of auto, native, skb"
    );
    assert_eq!(
        lines[4],
        "/etc/shield/shield.toml:7:10: `cidrs`: `10.1.2.3/8` has host bits set; did you mean `10.0.0.0/8`?"
    );
}
