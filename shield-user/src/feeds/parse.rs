//! The line parsers and the loop that feeds them.

use std::{
    borrow::Cow,
    io::{self, BufRead},
};

use serde::Deserialize;

use super::{
    FeedFormat, MAX_LINE, MAX_REPORTED, ParseOptions, ParsedFeed, Rejected, escape,
    index::FeedSet,
    is_broad,
    lines::{Line, LineReader, SliceLines, split_at_lines},
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

/// As [`parse_feed`], but `entries` come in input order, duplicates kept,
/// from any reader. A body already in memory that ends up in a
/// [`FeedSet`] is better served by [`parse_feed_set`], which the agent uses.
pub fn parse_feed_unordered<R: BufRead>(input: R, opts: &ParseOptions) -> io::Result<ParsedFeed> {
    let mut reader = LineReader::new(input);
    let mut sink = Sink::new(opts, Vec::new());

    let format = match opts.format {
        FeedFormat::Auto => {
            let (format, head) = sniff_head(&mut reader)?;
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
    let (mut feed, entries) = sink.finish(format);
    feed.entries = entries;
    Ok(feed)
}

/// Reads ahead into owned copies (bounded: `SNIFF_LINES` lines of at most
/// `MAX_LINE` bytes) and sniffs the format from them. The lines are handed
/// back to be parsed like the rest.
#[allow(clippy::type_complexity)]
fn sniff_head<R: BufRead>(
    reader: &mut LineReader<R>,
) -> io::Result<(FeedFormat, Vec<(u64, Vec<u8>, bool)>)> {
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
    Ok((sniff::sniff(&strs), head))
}

/// The format `opts` asks for, sniffed from `body`'s head when `Auto`.
pub(super) fn resolved_format(body: &[u8], opts: &ParseOptions) -> FeedFormat {
    match opts.format {
        // The head is only looked at; the parse reads it again.
        FeedFormat::Auto => match sniff_head(&mut LineReader::new(body)) {
            Ok((format, _)) => format,
            Err(_) => unreachable!("reading a slice cannot fail"),
        },
        f => f,
    }
}

/// Pieces a body is cut into at most, each parsed on a thread of its own.
const MAX_PIECES: usize = 4;
/// Bodies are only cut when every piece gets at least this much: below it,
/// a thread costs more than it saves.
const MIN_PIECE: usize = 1 << 20;

/// What the agent parses a body in memory with: the same lines, outcomes,
/// counts and reports as [`parse_feed`], but the entries go straight into
/// the compact [`FeedSet`] (`entries` of the report stays empty). Large
/// bodies are cut at line ends and parsed on up to `MAX_PIECES` threads,
/// as many as there are CPUs; a piece whose thread cannot be started is
/// parsed on the caller's.
///
/// This is the refresh's critical path: a million lines are parsed and
/// sorted without the 18-byte `Vec<Cidr>` in between, and on two CPUs in
/// about half the time.
pub fn parse_feed_set(body: &[u8], opts: &ParseOptions) -> (ParsedFeed, FeedSet) {
    let format = resolved_format(body, opts);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let wanted = (body.len() / MIN_PIECE).clamp(1, cpus.clamp(1, MAX_PIECES));
    parse_in_pieces(body, format, opts, wanted)
}

/// [`parse_feed_set`] with the format resolved, in at most `wanted` pieces.
pub(super) fn parse_in_pieces(
    body: &[u8],
    format: FeedFormat,
    opts: &ParseOptions,
    wanted: usize,
) -> (ParsedFeed, FeedSet) {
    let pieces = split_at_lines(body, wanted);
    let parts: Vec<(ParsedFeed, FeedSet)> = if pieces.len() <= 1 {
        vec![parse_piece(body, format, opts)]
    } else {
        std::thread::scope(|scope| {
            let started: Vec<_> = pieces[1..]
                .iter()
                .map(|piece| {
                    let run = move || parse_piece(piece, format, opts);
                    std::thread::Builder::new()
                        .name("feed-parse".into())
                        .spawn_scoped(scope, run)
                        .map_err(|_| piece)
                })
                .collect();
            let mut parts = vec![parse_piece(pieces[0], format, opts)];
            for s in started {
                parts.push(match s {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Err(piece) => parse_piece(piece, format, opts),
                });
            }
            parts
        })
    };
    merge_pieces(parts, format)
}

/// One piece of a body: its report (line numbers counted from the piece's
/// first line) and its entries, sorted.
fn parse_piece(piece: &[u8], format: FeedFormat, opts: &ParseOptions) -> (ParsedFeed, FeedSet) {
    let mut sink = Sink::new(opts, FeedSet::default());
    for line in SliceLines::new(piece) {
        let outcome = classify(format, &line, sink.min_score);
        sink.take(&line, outcome);
    }
    let (feed, mut set) = sink.finish(format);
    set.normalize();
    (feed, set)
}

/// The pieces' reports added up in body order (their line numbers moved
/// by the lines before them), and their sets merged.
fn merge_pieces(parts: Vec<(ParsedFeed, FeedSet)>, format: FeedFormat) -> (ParsedFeed, FeedSet) {
    let mut feed = ParsedFeed {
        format,
        ..ParsedFeed::default()
    };
    let mut sets = Vec::with_capacity(parts.len());
    for (p, set) in parts {
        for mut r in p.first_rejects {
            if feed.first_rejects.len() < MAX_REPORTED {
                r.line += feed.lines;
                feed.first_rejects.push(r);
            }
        }
        feed.lines += p.lines;
        feed.accepted += p.accepted;
        feed.ignored += p.ignored;
        feed.rejected += p.rejected;
        feed.refused_broad += p.refused_broad;
        feed.normalized += p.normalized;
        feed.below_min_score += p.below_min_score;
        sets.push(set);
    }
    (feed, FeedSet::merge(sets))
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
        min = .0.broadest_blocked()
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
    if let Some((c, normalized)) = fast_v4_line(line) {
        return Ok(Outcome::Entry(c, normalized));
    }
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

/// Where accepted entries go: a `Vec<Cidr>` in input order, or straight
/// into a [`FeedSet`]'s compact keys.
trait Entries {
    fn add(&mut self, c: Cidr);
}

impl Entries for Vec<Cidr> {
    fn add(&mut self, c: Cidr) {
        self.push(c);
    }
}

impl Entries for FeedSet {
    fn add(&mut self, c: Cidr) {
        self.push(&c);
    }
}

/// Tallies outcomes into the result.
struct Sink<'o, E> {
    opts: &'o ParseOptions,
    min_score: u32,
    feed: ParsedFeed,
    entries: E,
}

impl<'o, E: Entries> Sink<'o, E> {
    fn new(opts: &'o ParseOptions, entries: E) -> Self {
        Sink {
            opts,
            min_score: opts.min_score.unwrap_or(1),
            feed: ParsedFeed::default(),
            entries,
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
                self.entries.add(c);
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

    fn finish(self, format: FeedFormat) -> (ParsedFeed, E) {
        let mut feed = self.feed;
        feed.format = format;
        (feed, self.entries)
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

/// A whole plain-format line that is one IPv4 address or prefix as
/// [`fast_v4`] takes it, with blanks around it and perhaps a `#` or `;`
/// comment after it, read in one pass over the bytes; `None` for
/// [`plain_line`]'s general way to decide. This is the line nearly every
/// line of a big feed is, and the refresh of a million of them is bound by
/// how fast it is read.
fn fast_v4_line(line: &[u8]) -> Option<(Cidr, bool)> {
    let mut at = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let mut octets = [0u8; 4];
    for (i, o) in octets.iter_mut().enumerate() {
        if i > 0 {
            if line.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let (n, used) = leading_number(&line[at..], 255)?;
        *o = n as u8;
        at += used;
    }
    let len = if line.get(at) == Some(&b'/') {
        let (n, used) = leading_number(&line[at + 1..], 32)?;
        at += 1 + used;
        Some(n as u8)
    } else {
        None
    };
    let rest = line[at..].trim_ascii_start();
    if !matches!(rest.first(), None | Some(b'#' | b';')) {
        return None;
    }
    let addr = std::net::IpAddr::from(octets);
    match len {
        None => Some((Cidr::host(addr), false)),
        Some(l) => {
            let c = Cidr::truncating(addr, l);
            Some((c, c.addr() != addr))
        }
    }
}

/// The number at the start of `text` as [`small_number`] takes it, and
/// how many bytes it used. `None` when it has no digits, more than three,
/// a leading zero, or is over `max`.
fn leading_number(text: &[u8], max: u16) -> Option<(u16, usize)> {
    let digits = text
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let n = small_number(&text[..digits], max)?;
    Some((n, digits))
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

    /// What the plain format makes of `line` without the one-pass reader.
    fn general_plain(line: &[u8]) -> Option<(Cidr, bool)> {
        let data = uncommented(line);
        match address(data) {
            Ok(found) if !data.is_empty() => Some(found),
            _ => None,
        }
    }

    #[test]
    fn the_line_reader_takes_blanks_and_comments_around_the_address() {
        for (t, want) in [
            ("1.2.3.4", Some("1.2.3.4")),
            ("  1.2.3.4\t", Some("1.2.3.4")),
            ("1.2.3.4 # c", Some("1.2.3.4")),
            ("1.2.3.4#c", Some("1.2.3.4")),
            ("10.1.2.3/8 ; SBL1", Some("10.0.0.0/8")),
            ("1.2.3.4/32;", Some("1.2.3.4")),
            ("1.2.3.4 x", None),
            ("1.2.3.4/", None),
            ("1.2.3.4/33", None),
            ("1.2.3.4.5", None),
            ("1.2.3.1234", None),
            ("1.2.3.0123", None),
            ("01.2.3.4", None),
            ("1.2.3", None),
            ("# 1.2.3.4", None),
            ("", None),
        ] {
            let got = fast_v4_line(t.as_bytes()).map(|(c, _)| c);
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "{t:?}");
        }
        assert!(fast_v4_line(b"10.1.2.3/8").unwrap().1, "normalized");
    }

    proptest! {
        /// Whatever the one-pass line reader accepts, the general way reads
        /// the same (what it leaves, the general way decides).
        #[test]
        fn the_line_reader_never_disagrees(text in "[ \t0-9./#;x]{0,24}") {
            if let Some(f) = fast_v4_line(text.as_bytes()) {
                prop_assert_eq!(Some(f), general_plain(text.as_bytes()));
            }
        }

        /// And it takes every well-formed line of the common shape.
        #[test]
        fn the_line_reader_takes_every_plain_line(
            a: u8, b: u8, c: u8, d: u8,
            len in proptest::option::of(0u8..=32),
            before in "[ \t]{0,2}",
            after in "[ \t]{0,2}(#.{0,5})?",
        ) {
            let text = match len {
                Some(l) => format!("{before}{a}.{b}.{c}.{d}/{l}{after}"),
                None => format!("{before}{a}.{b}.{c}.{d}{after}"),
            };
            prop_assert_eq!(fast_v4_line(text.as_bytes()), general_plain(text.as_bytes()));
        }

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
