//! The peer: the same feed in nftables interval sets, loaded with `nft -f`,
//! in a network namespace of its own so the host's ruleset is never touched.
//!
//! A refresh is measured two ways. Incrementally (one transaction deleting
//! the stale elements and adding the new ones), which is what shield does,
//! but which nft 1.0.6 turns into minutes of userspace work on a set this
//! size; so it runs once, under a time limit. And as a rebuild (one
//! transaction flushing the sets and adding the whole new list), which is
//! what an nftables-based updater can actually use.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use shield_user::net::Cidr;

use crate::sys::{Ctx, Netns, Res, Timed, tag, timed};

const TABLE: &str = "shield_bench";

/// The nft scripts for a full load and for the refresh, written once.
pub struct Files {
    pub full: PathBuf,
    pub update: PathBuf,
    pub rebuild: PathBuf,
    /// Elements in the sets after the full load.
    pub elements: usize,
    /// Feed entries left out because a broader entry of the same feed
    /// already covers them (an interval set refuses overlaps).
    pub covered: usize,
    pub added: usize,
    pub deleted: usize,
}

/// First and last address of `c`, v4 widened to u128 (families are never
/// compared with each other).
fn bounds(c: &Cidr) -> (u128, u128) {
    let (start, bits) = match c.addr() {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host_bits = bits - u32::from(c.prefix_len());
    let span = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (start, start | span)
}

/// `entries` without the ones a broader entry covers, in order. Networks
/// are either nested or disjoint, and in `Cidr` order (address, then
/// prefix length) a covering network comes before everything it covers, so
/// one sweep that remembers the end of the last kept network suffices.
fn disjoint(entries: &[Cidr]) -> (Vec<Cidr>, usize) {
    let mut sorted = entries.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut kept: Vec<Cidr> = Vec::with_capacity(sorted.len());
    let mut last: Option<(bool, u128)> = None;
    for c in sorted {
        let (start, end) = bounds(&c);
        if let Some((v4, last_end)) = last
            && v4 == c.is_v4()
            && start <= last_end
        {
            continue;
        }
        last = Some((c.is_v4(), end));
        kept.push(c);
    }
    let covered = entries.len() - kept.len();
    (kept, covered)
}

/// Elements of a sorted `a` that are not in a sorted `b`.
fn minus(a: &[Cidr], b: &[Cidr]) -> Vec<Cidr> {
    let mut out = Vec::new();
    let mut j = 0;
    for c in a {
        while j < b.len() && b[j] < *c {
            j += 1;
        }
        if b.get(j) != Some(c) {
            out.push(*c);
        }
    }
    out
}

/// `{ a, b/24, ... }` of one family; hosts without their /32 or /128, as
/// people write them.
fn elements(w: &mut impl Write, entries: &[Cidr], v4: bool) -> std::io::Result<()> {
    write!(w, "{{ ")?;
    let mut first = true;
    for c in entries.iter().filter(|c| c.is_v4() == v4) {
        if !first {
            writeln!(w, ",")?;
        }
        first = false;
        if c.is_host() {
            write!(w, "{}", c.addr())?;
        } else {
            write!(w, "{c}")?;
        }
    }
    write!(w, " }}")
}

fn has(entries: &[Cidr], v4: bool) -> bool {
    entries.iter().any(|c| c.is_v4() == v4)
}

/// The table, one interval set per family with the feed's elements, and a
/// chain that drops their sources, as a firewall built on nftables would
/// have it.
fn write_full(path: &Path, entries: &[Cidr]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "table inet {TABLE} {{")?;
    for (name, ty, v4) in [
        ("feed_v4", "ipv4_addr", true),
        ("feed_v6", "ipv6_addr", false),
    ] {
        write!(w, "  set {name} {{ type {ty}; flags interval;")?;
        if has(entries, v4) {
            write!(w, " elements = ")?;
            elements(&mut w, entries, v4)?;
        }
        writeln!(w, " }}")?;
    }
    writeln!(
        w,
        "  chain input {{ type filter hook input priority filter; policy accept;\n    ip saddr @feed_v4 drop\n    ip6 saddr @feed_v6 drop\n  }}\n}}"
    )?;
    w.flush()
}

/// One transaction: the stale elements out, the new ones in. nft applies a
/// file atomically, so there is no moment with neither list enforced (what
/// shield gets by adding before it deletes).
fn write_update(path: &Path, delete: &[Cidr], add: &[Cidr]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (verb, list) in [("delete", delete), ("add", add)] {
        for (set, v4) in [("feed_v4", true), ("feed_v6", false)] {
            if has(list, v4) {
                write!(w, "{verb} element inet {TABLE} {set} ")?;
                elements(&mut w, list, v4)?;
                writeln!(w)?;
            }
        }
    }
    w.flush()
}

/// One transaction: both sets emptied and refilled with the new list.
fn write_rebuild(path: &Path, entries: &[Cidr]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (set, v4) in [("feed_v4", true), ("feed_v6", false)] {
        writeln!(w, "flush set inet {TABLE} {set}")?;
        if has(entries, v4) {
            write!(w, "add element inet {TABLE} {set} ")?;
            elements(&mut w, entries, v4)?;
            writeln!(w)?;
        }
    }
    w.flush()
}

/// Writes the scripts for the entries of the two feed versions.
pub fn prepare(dir: &Path, v1: &[Cidr], v2: &[Cidr]) -> Res<Files> {
    let (old, covered) = disjoint(v1);
    let (new, _) = disjoint(v2);
    let delete = minus(&old, &new);
    let add = minus(&new, &old);
    let full = dir.join("full.nft");
    let update = dir.join("update.nft");
    let rebuild = dir.join("rebuild.nft");
    write_full(&full, &old).ctx(|| format!("writing {}", full.display()))?;
    write_update(&update, &delete, &add).ctx(|| format!("writing {}", update.display()))?;
    write_rebuild(&rebuild, &new).ctx(|| format!("writing {}", rebuild.display()))?;
    Ok(Files {
        full,
        update,
        rebuild,
        elements: old.len(),
        covered,
        added: add.len(),
        deleted: delete.len(),
    })
}

/// True when `nft` can run here.
pub fn available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub struct Round {
    pub load: Timed,
    /// Only in the rounds asked to try it.
    pub incremental: Option<Timed>,
    pub rebuild: Timed,
}

/// A fresh namespace, the full load, the incremental refresh when
/// `incremental` gives it a time limit, then the rebuild; the namespace
/// (and with it the table) is deleted on return.
pub fn round(files: &Files, dir: &Path, n: u32, incremental: Option<Duration>) -> Res<Round> {
    let ns = Netns::create(format!("{}-nft{n}", tag()))?;
    let nft = |script: &Path, limit: Option<Duration>| -> Res<Timed> {
        let mut cmd = Command::new("nft");
        cmd.arg("-f").arg(script);
        ns.enter(&mut cmd)?;
        timed(&mut cmd, &dir.join("nft.err"), limit)
    };
    let load = nft(&files.full, None)?;
    // A transaction nft is killed in the middle of is never committed, so
    // the rebuild below starts from the full load's state either way.
    let incremental = match incremental {
        Some(limit) => Some(nft(&files.update, Some(limit))?),
        None => None,
    };
    let rebuild = nft(&files.rebuild, None)?;
    Ok(Round {
        load,
        incremental,
        rebuild,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(v: &[&str]) -> Vec<Cidr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn covered_entries_are_left_out_and_counted() {
        let (kept, covered) = disjoint(&cs(&[
            "10.1.2.3/32",
            "10.0.0.0/8",
            "10.255.255.255/32",
            "11.0.0.0/32",
            "2001:db8::/32",
            "2001:db8::1/128",
            "2001:db9::1/128",
            "0.0.0.0/0",
        ]));
        // 0.0.0.0/0 covers every IPv4 entry; IPv6 is another family.
        assert_eq!(kept, cs(&["0.0.0.0/0", "2001:db8::/32", "2001:db9::1/128"]));
        assert_eq!(covered, 5);
        let (kept, covered) = disjoint(&cs(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.255/32"]));
        assert_eq!(kept, cs(&["10.0.0.0/24", "10.0.1.0/24"]));
        assert_eq!(covered, 1);
    }

    #[test]
    fn differences_of_sorted_lists() {
        let a = cs(&["10.0.0.1/32", "10.0.0.2/32", "10.0.0.4/32"]);
        let b = cs(&["10.0.0.2/32", "10.0.0.3/32"]);
        assert_eq!(minus(&a, &b), cs(&["10.0.0.1/32", "10.0.0.4/32"]));
        assert_eq!(minus(&b, &a), cs(&["10.0.0.3/32"]));
        assert!(minus(&a, &a).is_empty());
    }

    #[test]
    fn scripts_use_bare_hosts_and_skip_empty_lists() {
        let mut out = Vec::new();
        elements(
            &mut out,
            &cs(&["192.0.2.1/32", "198.51.100.0/24", "2001:db8::/48"]),
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{ 192.0.2.1,\n198.51.100.0/24 }"
        );
        assert!(!has(&cs(&["192.0.2.1/32"]), false));
    }
}
