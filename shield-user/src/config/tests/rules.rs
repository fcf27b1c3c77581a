//! `[[tier]]` and `[[port]]`.

use super::*;

const TIER_A: &str = "[[tier]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\n";

#[test]
fn tiers_need_a_name_and_prefixes() {
    only_at(
        "[[tier]]\ncidrs = [\"10.0.0.0/8\"]\n",
        1,
        1,
        "has no `name`",
    );
    only_at("[[tier]]\nname = \"a\"\n", 1, 1, "has no `cidrs`");
    only_at(
        "[[tier]]\nname = \"a\"\ncidrs = []\n",
        3,
        9,
        "matches no source",
    );
}

#[test]
fn names_are_short_lowercase_words() {
    assert_eq!(
        only("[[tier]]\nname = \"Big Partners\"\ncidrs = [\"10.0.0.0/8\"]\n"),
        "2:8: `name`: \"Big Partners\" may only use a-z, 0-9, `_` and `-` (names become metric \
         labels and shieldctl arguments); did you mean \"big-partners\"?"
    );
    only_at(
        "[[tier]]\nname = \"\"\ncidrs = [\"10.0.0.0/8\"]\n",
        2,
        8,
        "cannot be empty",
    );
    let long = format!("[[feed]]\nname = \"{}\"\npath = \"/x\"\n", "a".repeat(65));
    only_at(&long, 2, 8, "at most 64");
    ok("[[feed]]\nname = \"a_b-9\"\npath = \"/x\"\n");
}

#[test]
fn names_are_unique() {
    let text = format!("{TIER_A}[[tier]]\nname = \"a\"\ncidrs = [\"10.1.0.0/16\"]\n");
    only_at(
        &text,
        5,
        8,
        "another [[tier]] is already named `a` (line 2)",
    );
    only_at(
        "[[feed]]\nname = \"f\"\npath = \"/a\"\n[[feed]]\nname = \"f\"\npath = \"/b\"\n",
        5,
        8,
        "another [[feed]] is already named `f`",
    );
    // Tier and port names share shieldctl's namespace.
    let text = format!("{TIER_A}[[port]]\nname = \"a\"\nproto = \"tcp\"\nports = [22]\n");
    only_at(&text, 5, 8, "already the name of a [[tier]] (line 2)");
    // Feeds have a namespace of their own.
    ok(&format!("{TIER_A}[[feed]]\nname = \"a\"\npath = \"/a\"\n"));
}

#[test]
fn the_same_prefix_in_two_tiers_is_an_error_but_nesting_is_fine() {
    let text =
        format!("{TIER_A}[[tier]]\nname = \"b\"\ncidrs = [\"192.0.2.0/24\", \"10.0.0.0/8\"]\n");
    only_at(
        &text,
        6,
        26,
        "`10.0.0.0/8` is already in [[tier]] `a` (line 3)",
    );
    let c = ok(&format!(
        "{TIER_A}[[tier]]\nname = \"b\"\ncidrs = [\"10.1.0.0/16\", \"10.1.2.3\"]\n"
    ));
    assert_eq!(c.tiers[1].cidrs.len(), 2);
}

#[test]
fn at_most_63_tiers() {
    let tiers = |n: usize| -> String {
        (0..n)
            .map(|i| format!("[[tier]]\nname = \"t{i}\"\ncidrs = [\"10.{i}.0.0/16\"]\n"))
            .collect()
    };
    assert_eq!(ok(&tiers(63)).tiers.len(), 63);
    // The 64th header is on line 3 * 63 + 1.
    only_at(
        &tiers(64),
        190,
        1,
        "too many tiers: the kernel's tables hold at most 63",
    );
}

fn port_rule(name: &str, proto: &str, ports: &str) -> String {
    format!("[[port]]\nname = \"{name}\"\nproto = \"{proto}\"\nports = {ports}\n")
}

#[test]
fn ports_ranges_and_their_limits() {
    let c = ok(&port_rule("a", "tcp", "[\"8000-8003\", 22, \"443\"]"));
    assert_eq!(c.ports[0].ports, [8000, 8001, 8002, 8003, 22, 443]);
    assert_eq!(
        ok(&port_rule("a", "tcp", "[\"1-65535\"]")).ports[0]
            .ports
            .len(),
        65_535
    );
    only_at(
        &port_rule("a", "tcp", "[0]"),
        4,
        10,
        "port 0 is out of range; ports are 1 to 65535",
    );
    only_at(
        &port_rule("a", "tcp", "[65536]"),
        4,
        10,
        "port 65536 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[-22]"),
        4,
        10,
        "port -22 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[\"0-10\"]"),
        4,
        10,
        "port 0 is out of range",
    );
    only_at(
        &port_rule("a", "tcp", "[\"8099-8000\"]"),
        4,
        10,
        "runs backwards; did you mean \"8000-8099\"?",
    );
    only_at(
        &port_rule("a", "tcp", "[\"http\"]"),
        4,
        10,
        "is not a port like 443",
    );
    only_at(&port_rule("a", "tcp", "[22.5]"), 4, 10, "found float 22.5");
    only_at(&port_rule("a", "tcp", "[]"), 4, 9, "at least one port");
    only_at(
        &port_rule("a", "tcp", "22"),
        4,
        9,
        "expected a list like [443",
    );
}

#[test]
fn proto_is_tcp_or_udp() {
    only_at(
        &port_rule("a", "icmp", "[1]"),
        3,
        9,
        "\"icmp\" has no ports",
    );
    only_at(&port_rule("a", "TCP", "[1]"), 3, 9, "did you mean `tcp`?");
    only_at(
        "[[port]]\nname = \"a\"\nports = [1]\n",
        1,
        1,
        "has no `proto`",
    );
    only_at(
        "[[port]]\nname = \"a\"\nproto = \"tcp\"\n",
        1,
        1,
        "has no `ports`",
    );
    // SYN limits mean nothing to UDP.
    only_at(
        &format!("{}connections = \"5/s\"\n", port_rule("a", "udp", "[53]")),
        5,
        1,
        "a udp rule has none",
    );
}

#[test]
fn a_port_belongs_to_one_rule_per_protocol() {
    let text = format!(
        "{}{}",
        port_rule("a", "tcp", "[22, \"8000-8099\"]"),
        port_rule("b", "tcp", "[\"8050-8060\", 22]")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        format!("{}:{}: {}", e[0].line, e[0].column, e[0].message),
        "8:10: tcp ports 8050-8060 are already claimed by [[port]] `a` (line 1); a port can be \
         in one rule per protocol"
    );
    assert_eq!((e[1].line, e[1].column), (8, 23));
    assert!(
        e[1].message
            .starts_with("tcp port 22 is already claimed by [[port]] `a`")
    );

    // Partly overlapping ranges say how much overlaps.
    let text = format!(
        "{}{}",
        port_rule("a", "tcp", "[\"8000-8009\"]"),
        port_rule("b", "tcp", "[\"8005-8020\"]")
    );
    only_at(
        &text,
        8,
        10,
        "5 of these tcp ports (8005-8009) are already claimed",
    );

    // Within one rule.
    only_at(
        &port_rule("a", "tcp", "[22, \"20-25\"]"),
        4,
        14,
        "already listed in this rule",
    );

    // The same port for the other protocol is a different destination.
    let c = ok(&format!(
        "{}{}",
        port_rule("a", "tcp", "[53]"),
        port_rule("b", "udp", "[53]")
    ));
    assert_eq!(c.ports.len(), 2);
}

#[test]
fn at_most_63_port_rules() {
    let rules = |n: usize| -> String {
        (0..n)
            .map(|i| port_rule(&format!("p{i}"), "tcp", &format!("[{}]", i + 1)))
            .collect()
    };
    assert_eq!(ok(&rules(63)).ports.len(), 63);
    only_at(&rules(64), 4 * 63 + 1, 1, "too many port rules");
}

#[test]
fn allow_from_makes_an_acl() {
    let c = ok(&format!(
        "{}allow_from = []\n",
        port_rule("a", "tcp", "[11211]")
    ));
    assert_eq!(c.ports[0].allow_from, Some(vec![]));
    only_at(
        &format!(
            "{}allow_from = [\"10.0.0.1/8\"]\n",
            port_rule("a", "tcp", "[22]")
        ),
        5,
        15,
        "did you mean `10.0.0.0/8`?",
    );
}
