//! Telling a feed's format from its first lines, for `format = "auto"`.

use crate::{config::FeedFormat, net::Cidr};

/// How many lines `parse_feed` reads ahead to sniff, at most.
pub(crate) const SNIFF_LINES: usize = 100;
/// It stops reading ahead after this many data (non-comment) lines.
pub(crate) const SNIFF_DATA_LINES: usize = 8;

/// The format of a feed, judged from its first lines (blank lines are
/// skipped):
/// - a JSON object first: Spamhaus JSON-lines;
/// - the first data line that holds an address decides: `IP<TAB>digits` is
///   ipsum, `CIDR ; SBL…` is Spamhaus;
/// - a bare address there defers to the header: a `;` comment naming
///   Spamhaus means Spamhaus, FireHOL's `#` header (its `# Maintainer` lines
///   or its name) means netset;
/// - anything else is plain, which is also the safest guess: it is the
///   strictest format and rejects (and so reports) what it does not know.
pub fn sniff(first_lines: &[&str]) -> FeedFormat {
    let lines = first_lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty());
    let mut spamhaus_header = false;
    let mut firehol_header = false;
    let mut first = true;
    for line in lines {
        if first && line.starts_with('{') {
            return FeedFormat::Spamhaus;
        }
        first = false;
        if let Some(comment) = line.strip_prefix(';') {
            spamhaus_header |= contains_ignoring_case(comment, "spamhaus");
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            firehol_header |= contains_ignoring_case(comment, "firehol")
                || comment.trim_start().starts_with("Maintainer");
            continue;
        }
        match shape(line) {
            Shape::Ipsum => return FeedFormat::Ipsum,
            Shape::Spamhaus => return FeedFormat::Spamhaus,
            Shape::Address => break,
            // A garbage line says nothing; the next one may.
            Shape::Unknown => continue,
        }
    }
    if spamhaus_header {
        FeedFormat::Spamhaus
    } else if firehol_header {
        FeedFormat::Netset
    } else {
        FeedFormat::Plain
    }
}

/// True when the line (trimmed, not a comment) starts a data section: the
/// read-ahead counts these.
pub(crate) fn is_data(line: &str) -> bool {
    let line = line.trim();
    !(line.is_empty() || line.starts_with('#') || line.starts_with(';'))
}

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// `ADDR<TAB>digits`
    Ipsum,
    /// `ADDR ; SBL…`
    Spamhaus,
    /// An address alone, perhaps with a trailing comment.
    Address,
    Unknown,
}

fn shape(line: &str) -> Shape {
    let is_addr = |s: &str| Cidr::parse_normalizing(s).is_ok();
    if let Some((addr, score)) = line.split_once('\t') {
        let score = score.trim();
        if is_addr(addr) && !score.is_empty() && score.bytes().all(|b| b.is_ascii_digit()) {
            return Shape::Ipsum;
        }
    }
    if let Some((addr, rest)) = line.split_once(';')
        && is_addr(addr)
        && rest.trim_start().starts_with("SBL")
    {
        return Shape::Spamhaus;
    }
    let data = line.split(['#', ';']).next().unwrap_or_default();
    if is_addr(data) {
        Shape::Address
    } else {
        Shape::Unknown
    }
}

fn contains_ignoring_case(haystack: &str, lower_needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(lower_needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_first_line_is_spamhaus() {
        let lines = [
            "",
            r#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}"#,
        ];
        assert_eq!(sniff(&lines), FeedFormat::Spamhaus);
        // Only as the first line: JSON after data is garbage in a plain feed.
        assert_eq!(
            sniff(&["192.0.2.1", r#"{"cidr":"1.2.3.0/24"}"#]),
            FeedFormat::Plain
        );
    }

    #[test]
    fn ipsum_by_its_tab_and_score() {
        let lines = [
            "# IPsum Threat Intelligence Feed",
            "# (https://github.com/stamparm/ipsum)",
            "#",
            "# IP\tnumber of (black)lists",
            "#",
            "185.224.128.17\t9",
        ];
        assert_eq!(sniff(&lines), FeedFormat::Ipsum);
        assert_eq!(sniff(&["2001:db8::5\t3"]), FeedFormat::Ipsum);
        // Spaces are not ipsum's separator, and the score must be digits.
        assert_eq!(sniff(&["192.0.2.1 9"]), FeedFormat::Plain);
        assert_eq!(sniff(&["192.0.2.1\tnine"]), FeedFormat::Plain);
    }

    #[test]
    fn spamhaus_by_sbl_or_by_header() {
        assert_eq!(sniff(&["1.10.16.0/20 ; SBL256894"]), FeedFormat::Spamhaus);
        assert_eq!(sniff(&["2001:db8::/32;SBL1"]), FeedFormat::Spamhaus);
        let header = [
            "; Spamhaus DROP List 2026/11/27 - (c) 2026 The Spamhaus Project SLU",
            "; https://www.spamhaus.org/drop/drop.txt",
            "1.10.16.0/20",
        ];
        assert_eq!(sniff(&header), FeedFormat::Spamhaus);
    }

    #[test]
    fn firehol_header_is_netset() {
        let lines = [
            "#",
            "# firehol_level1",
            "#",
            "# ipv4 hash:net ipset",
            "#",
            "# Maintainer      : FireHOL",
            "#",
            "0.0.0.0/8",
        ];
        assert_eq!(sniff(&lines), FeedFormat::Netset);
        assert_eq!(
            sniff(&["# Maintainer : someone", "192.0.2.0/24"]),
            FeedFormat::Netset
        );
    }

    #[test]
    fn everything_else_is_plain() {
        assert_eq!(sniff(&[]), FeedFormat::Plain);
        assert_eq!(sniff(&["", "  "]), FeedFormat::Plain);
        assert_eq!(
            sniff(&["# my list", "192.0.2.1", "198.51.100.0/24"]),
            FeedFormat::Plain
        );
        assert_eq!(sniff(&["garbage", "more garbage"]), FeedFormat::Plain);
    }

    #[test]
    fn the_first_data_line_with_an_address_decides() {
        // Garbage is passed over; a bare address stops the search, so a
        // later ipsum-looking line does not turn a plain list into ipsum.
        assert_eq!(sniff(&["garbage", "192.0.2.1\t5"]), FeedFormat::Ipsum);
        assert_eq!(sniff(&["192.0.2.1", "192.0.2.2\t5"]), FeedFormat::Plain);
        assert_eq!(sniff(&["192.0.2.1", "; Spamhaus"]), FeedFormat::Plain);
    }

    #[test]
    fn data_lines_are_told_from_comments() {
        assert!(is_data(" 1.2.3.4"));
        assert!(is_data("junk"));
        assert!(!is_data(" # c"));
        assert!(!is_data("; c"));
        assert!(!is_data("  "));
    }
}
