//! Go's `time.Duration` text (`"3h59m58.76s"`, `"-1.5s"`, `"250ms"`), which
//! is how the LAPI writes a decision's remaining time.

use std::time::Duration;

/// The duration `s` spells, with its sign: `(negative, magnitude)`.
/// `None` for anything that is not Go duration syntax or overflows.
pub fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some((neg, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part: u128 = 0;
        let mut div: u128 = 1;
        // Digits past nanosecond precision change nothing.
        for d in frac.bytes().take(18) {
            if !d.is_ascii_digit() {
                return None;
            }
            part = part * 10 + u128::from(d - b'0');
            div *= 10;
        }
        total_ns = total_ns
            .checked_add(whole.checked_mul(scale)?)?
            .checked_add(part * scale / div)?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    Some((neg, Duration::new(secs, (total_ns % 1_000_000_000) as u32)))
}
