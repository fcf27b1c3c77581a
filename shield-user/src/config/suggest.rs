//! "Did you mean …?" for misspelt keys and values.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, c), *c))
        .filter(|(d, c)| *d <= threshold(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// One edit per three characters, at least one and at most three: generous
/// enough for `packet_brust`, strict enough not to offer `ttl` for `url`.
fn threshold(candidate: &str) -> usize {
    (candidate.chars().count() / 3).clamp(1, 3)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of neighbours each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Long inputs cannot be near any key; skip the quadratic work.
    if a.len().abs_diff(b.len()) > 3 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &[
        "packets",
        "packet_burst",
        "connections",
        "connection_burst",
        "url",
        "ttl",
        "tier",
        "port",
    ];

    #[test]
    fn suggests_likely_typos() {
        assert_eq!(closest("packet_brust", KEYS), Some("packet_burst"));
        assert_eq!(closest("packet_bursts", KEYS), Some("packet_burst"));
        assert_eq!(closest("Packets", KEYS), Some("packets"));
        assert_eq!(closest("conections", KEYS), Some("connections"));
        assert_eq!(closest("tiers", KEYS), Some("tier"));
        assert_eq!(closest("ports", KEYS), Some("port"));
        assert_eq!(closest("uri", KEYS), Some("url"));
    }

    #[test]
    fn stays_quiet_when_nothing_is_close() {
        assert_eq!(closest("bandwidth", KEYS), None);
        assert_eq!(closest("", KEYS), None);
        assert_eq!(closest("x", &["url"]), None);
        assert_eq!(closest(&"a".repeat(10_000), KEYS), None);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
