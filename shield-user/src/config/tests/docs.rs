//! docs/configuration.md stays true: its examples parse, its default policy
//! is the default, and the error it quotes is the one produced.

use super::*;

const DOC: &str = include_str!("../../../../docs/configuration.md");

/// The bodies of the ```toml blocks, in order.
fn toml_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match (&mut current, line.trim()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(body), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_example_parses() {
    let blocks = toml_blocks();
    assert!(blocks.len() >= 3, "found {} toml blocks", blocks.len());
    for b in &blocks {
        ok(b);
    }
}

#[test]
fn the_documented_default_policy_is_the_default() {
    let blocks = toml_blocks();
    let last = blocks.last().expect("the default policy block");
    assert_eq!(ok(last), ok(""));
    assert_eq!(ok(last), default_policy(TICK));
}

#[test]
fn the_inheritance_example_resolves_as_described() {
    let c = ok(&toml_blocks()[0]);
    assert_eq!(c.tiers[0].limits.packets, Some(rate(10_000, 1)));
    assert_eq!(c.tiers[0].limits.connections, None);
    assert_eq!(c.ports[0].limits.connections, Some(rate(5, 60)));
    assert_eq!(c.ports[0].limits.packets, None);
}

#[test]
fn the_quoted_burst_error_is_real() {
    let e = errors("[limits]\npackets = \"100000/s\"\npacket_burst = 399\n");
    let line = format!("shield.toml:3:16: {}", e[0].message);
    assert!(DOC.contains(&line), "docs do not quote: {line}");
}
