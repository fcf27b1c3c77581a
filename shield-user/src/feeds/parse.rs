//! The line parsers and the loop that feeds them.

use std::{
    borrow::Cow,
    io::{self, BufRead},
};

use serde::Deserialize;

use super::{
    FeedFormat, MAX_LINE, MAX_REPORTED, MIN_V4_PREFIX, MIN_V6_PREFIX, ParseOptions, ParsedFeed,
    Rejected, escape, is_broad,
    lines::{Line, LineReader},
    sniff::{self, SNIFF_DATA_LINES, SNIFF_LINES},
};
use crate::net::{Cidr, CidrError};

/// Parses a feed body of `opts.format` (sniffed when `Auto`).
///
/// Only I/O errors from `input` fail the parse. Malformed, over-long and
/// broad lines are skipped and counted in the result, and the first few are
/// kept with their line numbers.
pub fn parse_feed<R: BufRead>(input: R, opts: &ParseOptions) -> io::Result<ParsedFeed> {
    let mut feed = parse_feed_unordered(input, opts)?;
    // Order is what makes the agent's diff against the maps a merge rather
    // than a hash; duplicates are common across aggregated lists. The
    // integer key orders exactly like `Cidr`'s `Ord` (family, then address,
    // then length) and compares several times faster than the enum.
    feed.entries.sort_unstable_by_key(sort_key);
    feed.entries.dedup();
    Ok(feed)
}

/// As [`parse_feed`], but `entries` come in input order, duplicates kept.
/// For callers that build a [`super::FeedSet`], which sorts its compact keys
/// faster than a `Vec<Cidr>` sorts (a refresh of a million lines saves about
/// 40 ms that way).
pub fn parse_feed_unordered<R: BufRead>(input: R, opts: &ParseOptions) -> io::Result<ParsedFeed> {
    let mut reader = LineReader::new(input);
    let mut sink = Sink::new(opts);

    let format = match opts.format {
        FeedFormat::Auto => {
            // Read ahead into owned copies (bounded: SNIFF_LINES lines of at
            // most MAX_LINE bytes), sniff them, then parse them like the rest.
            let mut head: Vec<(u64, Vec<u8>, bool)> = Vec::new();
            let mut data_lines = 0;
            while head.len() < SNIFF_LINES && data_lines < SNIFF_DATA_LINES {
                let Some(line) = reader.next_line()? else {
                    break;
                };
                let text = String::from_utf8_lossy(line.bytes);
                data_lines += usize::from(sniff::is_data(&text));
                head.push((line.number, line.bytes.to_vec(), line.overlong));
            }
            let texts: Vec<Cow<'_, str>> = head
                .iter()
                .map(|(_, b, _)| String::from_utf8_lossy(b))
                .collect();
            let strs: Vec<&str> = texts.iter().map(|t| &**t).collect();
            let format = sniff::sniff(&strs);
            for (number, bytes, overlong) in &head {
                let line = Line {
                    number: *number,
                    bytes,
                    overlong: *overlong,
                };
                sink.take(&line, classify(format, &line, sink.min_score));
            }
            format
        }
        f => f,
    };

    while let Some(line) = reader.next_line()? {
        let outcome = classify(format, &line, sink.min_score);
        sink.take(&line, outcome);
    }
    Ok(sink.finish(format))
}

/// What became of one line.
enum Outcome {
    /// An entry, and whether its host bits had to be cleared.
    Entry(Cidr, bool),
    /// Blank, comment or metadata.
    Ignored,
    BelowMinScore,
    Rejected(Reason),
}

/// Why a line was skipped. Only the first few become strings.
#[derive(Debug, thiserror::Error)]
enum Reason {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("contains a NUL byte")]
    Nul,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("not an IP address or CIDR")]
    Syntax,
    #[error("prefix length /{len} is too long for {family} (max /{max})")]
    PrefixTooLong {
        len: u32,
        family: &'static str,
        max: u32,
    },
    #[error("unexpected text after the address")]
    TrailingText,
    #[error("no score after the address (ipsum lines are `IP<TAB>score`)")]
    NoScore,
    #[error("the score is not a whole number")]
    BadScore,
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JSON record without a \"cidr\" field")]
    NoCidr,
    #[error(
        "{0} is broader than /{min}; set allow_broad = true to accept it",
        min = if .0.is_v4() { MIN_V4_PREFIX } else { MIN_V6_PREFIX }
    )]
    Broad(Cidr),
}

fn classify(format: FeedFormat, line: &Line<'_>, min_score: u32) -> Outcome {
    if line.overlong {
        return Outcome::Rejected(Reason::TooLong);
    }
    let result = match format {
        FeedFormat::Ipsum => ipsum_line(line.bytes, min_score),
        FeedFormat::Spamhaus if line.bytes.trim_ascii_start().starts_with(b"{") => {
            spamhaus_json_line(line.bytes)
        }
        // Spamhaus's text lists are `CIDR ; SBLnnn` with `;` comments, which
        // the plain parser reads as an address and a trailing comment.
        FeedFormat::Plain | FeedFormat::Netset | FeedFormat::Spamhaus | FeedFormat::Auto => {
            plain_line(line.bytes)
        }
    };
    result.unwrap_or_else(Outcome::Rejected)
}

/// The line up to its first `#` or `;`, trimmed.
fn uncommented(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .position(|&b| b == b'#' || b == b';')
        .unwrap_or(line.len());
    line[..end].trim_ascii()
}

fn plain_line(line: &[u8]) -> Result<Outcome, Reason> {
    let data = uncommented(line);
    if data.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let (c, normalized) = address(data)?;
    Ok(Outcome::Entry(c, normalized))
}

fn ipsum_line(line: &[u8], min_score: u32) -> Result<Outcome, Reason> {
    let data = uncommented(line);
    if data.is_empty() {
        return Ok(Outcome::Ignored);
    }
    // ipsum writes a tab; any run of blanks is taken, since nothing else
    // could be meant.
    let Some(split) = data.iter().position(u8::is_ascii_whitespace) else {
        // Report a bad address as such before the missing score.
        address(data)?;
        return Err(Reason::NoScore);
    };
    let (addr, score) = (&data[..split], data[split..].trim_ascii());
    let (c, normalized) = address(addr)?;
    if score.is_empty() || !score.iter().all(u8::is_ascii_digit) {
        return Err(Reason::BadScore);
    }
    // All digits, so only overflow can fail; a score past u32 is not a
    // count of lists anyone keeps.
    let score: u32 = std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Reason::BadScore)?;
    if score < min_score {
        return Ok(Outcome::BelowMinScore);
    }
    Ok(Outcome::Entry(c, normalized))
}

/// One record of Spamhaus's JSON-lines lists: either a network or the
/// trailing `{"type":"metadata",...}`. Other fields (`sblid`, `rir`, ...) are
/// ignored.
#[derive(Deserialize)]
struct SpamhausRecord<'a> {
    #[serde(borrow, default)]
    cidr: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

fn spamhaus_json_line(line: &[u8]) -> Result<Outcome, Reason> {
    let record: SpamhausRecord<'_> = serde_json::from_slice(line)?;
    match (record.cidr, record.kind.as_deref()) {
        (Some(cidr), _) => {
            let (c, normalized) = address(cidr.as_bytes())?;
            Ok(Outcome::Entry(c, normalized))
        }
        (None, Some("metadata")) => Ok(Outcome::Ignored),
        (None, _) => Err(Reason::NoCidr),
    }
}

/// One IP or CIDR, host bits forgiven. `data` is trimmed and must be the
/// address alone.
fn address(data: &[u8]) -> Result<(Cidr, bool), Reason> {
    // Most feed lines are plain IPv4: a strict hand-written parser takes
    // them in a fraction of the time of std's (which handles every form).
    // Anything it does not accept goes the general way below.
    if let Some(found) = fast_v4(data) {
        return Ok(found);
    }
    // The common case first: valid ASCII that parses. The checks below only
    // run to explain a failure.
    let parsed = std::str::from_utf8(data).map(Cidr::parse_normalizing);
    match parsed {
        Ok(Ok(found)) => Ok(found),
        _ if data.contains(&0) => Err(Reason::Nul),
        Err(_) => Err(Reason::NotUtf8),
        Ok(Err(CidrError::PrefixTooLong {
            len, family, max, ..
        })) => Err(Reason::PrefixTooLong { len, family, max }),
        Ok(Err(_)) => {
            let first = data
                .split(u8::is_ascii_whitespace)
                .next()
                .unwrap_or_default();
            let first_ok =
                std::str::from_utf8(first).is_ok_and(|s| Cidr::parse_normalizing(s).is_ok());
            Err(if first.len() < data.len() && first_ok {
                Reason::TrailingText
            } else {
                Reason::Syntax
            })
        }
    }
}

/// Tallies outcomes into the result.
struct Sink<'o> {
    opts: &'o ParseOptions,
    min_score: u32,
    feed: ParsedFeed,
}

impl<'o> Sink<'o> {
    fn new(opts: &'o ParseOptions) -> Self {
        Sink {
            opts,
            min_score: opts.min_score.unwrap_or(1),
            feed: ParsedFeed::default(),
        }
    }

    fn take(&mut self, line: &Line<'_>, outcome: Outcome) {
        let feed = &mut self.feed;
        feed.lines += 1;
        match outcome {
            Outcome::Entry(c, _) if !self.opts.allow_broad && is_broad(&c) => {
                feed.refused_broad += 1;
                self.report(line, Reason::Broad(c));
            }
            Outcome::Entry(c, normalized) => {
                feed.accepted += 1;
                feed.normalized += u64::from(normalized);
                feed.entries.push(c);
            }
            Outcome::Ignored => feed.ignored += 1,
            Outcome::BelowMinScore => feed.below_min_score += 1,
            Outcome::Rejected(why) => {
                feed.rejected += 1;
                self.report(line, why);
            }
        }
    }

    fn report(&mut self, line: &Line<'_>, why: Reason) {
        if self.feed.first_rejects.len() < MAX_REPORTED {
            self.feed.first_rejects.push(Rejected {
                line: line.number,
                text: escape::shown(line.bytes),
                why: why.to_string(),
            });
        }
    }

    fn finish(self, format: FeedFormat) -> ParsedFeed {
        let mut feed = self.feed;
        feed.format = format;
        feed
    }
}

/// `Cidr`'s order as plain integers.
fn sort_key(c: &Cidr) -> (bool, u128, u8) {
    match c.addr() {
        std::net::IpAddr::V4(a) => (false, u128::from(u32::from(a)), c.prefix_len()),
        std::net::IpAddr::V6(a) => (true, u128::from(a), c.prefix_len()),
    }
}

/// `a.b.c.d` or `a.b.c.d/len`, exactly as `Cidr::parse_normalizing` would
/// read it (no leading zeros, octets ≤ 255, lengths ≤ 32), or `None` for
/// the general parser to decide, including to explain an error.
fn fast_v4(data: &[u8]) -> Option<(Cidr, bool)> {
    let (addr_part, len_part) = match data.iter().position(|&b| b == b'/') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut octets = [0u8; 4];
    let mut parts = addr_part.split(|&b| b == b'.');
    for o in &mut octets {
        *o = small_number(parts.next()?, 255)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    let addr = std::net::IpAddr::from(octets);
    match len_part {
        None => Some((Cidr::host(addr), false)),
        Some(l) => {
            let len = small_number(l, 32)? as u8;
            let c = Cidr::truncating(addr, len);
            Some((c, c.addr() != addr))
        }
    }
}

/// 1 to 3 ASCII digits without a leading zero (a lone `0` is fine), at
/// most `max`.
fn small_number(digits: &[u8], max: u16) -> Option<u16> {
    if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: u16 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u16::from(d - b'0');
    }
    (n <= max).then_some(n)
}

#[cfg(test)]
mod fast_v4_tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn agrees_with_the_general_parser_on_the_edges() {
        for t in [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.0/8",
            "10.1.2.3/8",
            "1.2.3.4/32",
            "1.2.3.4/0",
            "01.2.3.4",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/08",
            "1.2.3.4/008",
            "1..3.4",
            "a.b.c.d",
            "1.2.3.4 ",
            "",
        ] {
            let fast = fast_v4(t.as_bytes());
            let slow = Cidr::parse_normalizing(t).ok();
            if let Some(f) = fast {
                assert_eq!(Some(f), slow, "{t:?}");
            }
        }
        assert!(fast_v4(b"1.2.3.4").is_some());
        assert!(fast_v4(b"10.1.2.3/8").unwrap().1, "normalized");
    }

    proptest! {
        /// Whatever the fast path accepts, the general parser reads the same.
        #[test]
        fn never_disagrees(text in "[0-9./]{0,20}") {
            if let Some(f) = fast_v4(text.as_bytes()) {
                prop_assert_eq!(Some(f), Cidr::parse_normalizing(&text).ok());
            }
        }

        /// And it takes every well-formed address.
        #[test]
        fn takes_every_plain_address(a: u8, b: u8, c: u8, d: u8, len in proptest::option::of(0u8..=32)) {
            let text = match len {
                Some(l) => format!("{a}.{b}.{c}.{d}/{l}"),
                None => format!("{a}.{b}.{c}.{d}"),
            };
            prop_assert_eq!(fast_v4(text.as_bytes()), Cidr::parse_normalizing(&text).ok());
        }
    }
}
