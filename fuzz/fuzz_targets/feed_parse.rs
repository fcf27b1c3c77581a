//! Feed bodies come from the network: whatever the bytes, `parse_feed` must
//! not panic, must account for every line, and must hand the agent sorted,
//! unique entries.
//!
//! Input: one selector byte, then the body. The selector's low bits pick the
//! format (so every parser sees every input, not only the one sniffing would
//! choose); the body is then parsed several ways and the results are checked
//! against each other.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use shield_user::feeds::{
    FeedFormat, MAX_REPORTED, ParseOptions, ParsedFeed, is_broad, parse_feed,
};

const FORMATS: [FeedFormat; 5] = [
    FeedFormat::Auto,
    FeedFormat::Plain,
    FeedFormat::Netset,
    FeedFormat::Spamhaus,
    FeedFormat::Ipsum,
];

/// `None` means 1; 0 keeps even score-0 lines; 3 is a typical setting.
const MIN_SCORES: [Option<u32>; 4] = [None, Some(0), Some(1), Some(3)];

fn parse(body: &[u8], opts: &ParseOptions) -> ParsedFeed {
    // Reading from a slice cannot fail, so an error here is a bug.
    parse_feed(body, opts).expect("parse_feed failed on an in-memory body")
}

/// What `ParsedFeed` documents, for any options.
fn check_invariants(feed: &ParsedFeed, opts: &ParseOptions) {
    assert_eq!(
        feed.lines,
        feed.accepted + feed.ignored + feed.rejected + feed.refused_broad + feed.below_min_score,
        "every line lands in exactly one count: {feed:?}"
    );
    assert!(
        feed.entries.windows(2).all(|w| w[0] < w[1]),
        "entries not sorted and unique: {:?}",
        feed.entries
    );
    assert!(feed.entries.len() as u64 <= feed.accepted);
    assert!(feed.normalized <= feed.accepted);
    assert!(feed.first_rejects.len() <= MAX_REPORTED);
    // The first skipped lines, all of them up to the cap, in order.
    let skipped = feed.rejected + feed.refused_broad;
    assert_eq!(
        feed.first_rejects.len() as u64,
        skipped.min(MAX_REPORTED as u64)
    );
    assert!(feed.first_rejects.windows(2).all(|w| w[0].line < w[1].line));
    for r in &feed.first_rejects {
        assert!(r.line >= 1 && r.line <= feed.lines, "{r:?}");
        assert!(!r.why.is_empty());
        // Shown on terminals and in logs: escaped to printable ASCII, cut
        // to about 80 characters with an ellipsis.
        let text = r.text.strip_suffix('…').unwrap_or(&r.text);
        assert!(
            text.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "unescaped text: {:?}",
            r.text
        );
        assert!(text.len() <= 100, "text not cut: {:?}", r.text);
    }
    if opts.format != FeedFormat::Auto {
        assert_eq!(feed.format, opts.format);
    }
    assert_ne!(feed.format, FeedFormat::Auto, "Auto must be resolved");
    if opts.allow_broad {
        assert_eq!(feed.refused_broad, 0);
    } else {
        assert!(!feed.entries.iter().any(is_broad), "{:?}", feed.entries);
    }
    // Only ipsum lines have scores, and none is below 0.
    if feed.format != FeedFormat::Ipsum || opts.min_score == Some(0) {
        assert_eq!(feed.below_min_score, 0);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(selector) % FORMATS.len()];
    let min_score = MIN_SCORES[usize::from(selector >> 4) % MIN_SCORES.len()];

    let strict = ParseOptions {
        format,
        min_score,
        allow_broad: false,
    };
    let broad = ParseOptions {
        allow_broad: true,
        ..strict.clone()
    };
    let s = parse(body, &strict);
    let b = parse(body, &broad);
    check_invariants(&s, &strict);
    check_invariants(&b, &broad);

    // `allow_broad` only moves lines between `refused_broad` and `accepted`.
    assert_eq!(s.format, b.format);
    assert_eq!(s.lines, b.lines);
    assert_eq!(s.accepted + s.refused_broad, b.accepted);
    assert_eq!((s.ignored, s.rejected), (b.ignored, b.rejected));
    assert_eq!(s.below_min_score, b.below_min_score);
    let kept_from_broad: Vec<_> = b.entries.iter().filter(|c| !is_broad(c)).copied().collect();
    assert_eq!(s.entries, kept_from_broad);

    // A reader with a tiny buffer splits lines across refills; the result
    // must not depend on where they fall.
    let chunked = parse_feed(BufReader::with_capacity(7, body), &strict).expect("in-memory read");
    assert_eq!(chunked, s, "result depends on the reader's buffer size");

    // `min_score` means nothing outside ipsum, and `None` means 1.
    if min_score.is_some() {
        let unset = parse(
            body,
            &ParseOptions {
                min_score: None,
                ..strict
            },
        );
        if min_score == Some(1) || s.format != FeedFormat::Ipsum {
            assert_eq!(
                unset, s,
                "min_score {min_score:?} changed a {:?} parse",
                s.format
            );
        }
    }
});
