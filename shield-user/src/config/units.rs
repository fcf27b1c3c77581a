//! Rates, durations and sizes as people write them. Public so that shieldctl
//! accepts exactly what the config file does.

use std::time::Duration;

use super::model::Rate;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses `N/s` (or `N/sec`), `N/min`, `N/h`, `N/<duration>` (`100/10s`) or
/// `unlimited`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let text = s.trim();
    if text == "unlimited" {
        return Ok(Rate {
            count: 0,
            per: Duration::from_secs(1),
        });
    }
    let Some((n, unit)) = text.split_once('/') else {
        return Err(format!(
            "`{text}` is not a rate: write N/s, N/min or N/h (like \"1000/s\"), or \"unlimited\""
        ));
    };
    let count = parse_count(n.trim()).ok_or_else(|| {
        format!(
            "`{text}` is not a rate: `{}` is not a whole number",
            n.trim()
        )
    })?;
    let unit = unit.trim();
    let per = match unit {
        "s" | "sec" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        u if u.starts_with(|c: char| c.is_ascii_digit()) => {
            parse_duration(u).map_err(|e| format!("`{text}` is not a rate: {e}"))?
        }
        "m" => {
            return Err(format!(
                "`{text}`: write `{count}/min` for a rate per minute (`m` is ambiguous)"
            ));
        }
        u => {
            return Err(format!(
                "`{text}`: unknown unit `{u}`; rates are per `s`, `min` or `h`"
            ));
        }
    };
    if per.is_zero() {
        return Err(format!("`{text}`: the period must be longer than zero"));
    }
    if count == 0 {
        return Err(format!(
            "`{text}` admits nothing; write \"unlimited\" for no limit, or block sources with `allow_from`"
        ));
    }
    // One packet per nanosecond is the finest spacing the kernel can hold;
    // anything faster would silently become that.
    if u128::from(count) > per.as_nanos() {
        return Err(format!(
            "`{text}` is faster than one per nanosecond, which cannot be enforced; write \"unlimited\" instead"
        ));
    }
    Ok(Rate { count, per })
}

/// The inverse of [`parse_rate`].
pub fn format_rate(r: &Rate) -> String {
    if r.count == 0 {
        return "unlimited".into();
    }
    match r.per.as_nanos() {
        n if n == NANOS_PER_SEC => format!("{}/s", r.count),
        n if n == 60 * NANOS_PER_SEC => format!("{}/min", r.count),
        n if n == 3600 * NANOS_PER_SEC => format!("{}/h", r.count),
        _ => format!("{}/{}", r.count, format_duration(r.per)),
    }
}

const UNITS: [(&str, u128); 7] = [
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `30s`, `10m`, `1h`, `2d`, `1h30m`, `500ms`: numbers with units
/// `d h m s ms us ns`, largest first, each at most once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = |why: &str| format!("`{text}` is not a duration: {why}");
    if text.is_empty() {
        return Err("an empty duration: write one like \"30s\", \"10m\" or \"1h30m\"".into());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    // Index into UNITS of the last unit seen: units must get smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number, like \"30s\" or \"1h30m\""));
        }
        let (num, tail) = rest.split_at(digits);
        let letters = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(letters);
        if unit.is_empty() {
            return Err(bad(&format!(
                "`{num}` needs a unit: d, h, m, s or ms (like \"{num}s\")"
            )));
        }
        let Some(idx) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad(&format!("unknown unit `{unit}`; use d, h, m, s or ms")));
        };
        if last.is_some_and(|l| idx <= l) {
            return Err(bad("write units largest first, each once (like \"1h30m\")"));
        }
        last = Some(idx);
        let n: u128 = num.parse().map_err(|_| bad("the number is too large"))?;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too long"))?;
        rest = tail;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| bad("too long"))?;
    // The remainder is below one second, so it fits in u32.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// The inverse of [`parse_duration`], largest units first: `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let mut rest = d.as_nanos();
    if rest == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = rest / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest %= size;
        }
    }
    out
}

/// Parses a byte size: `67108864`, `64MiB`, `10MB`, `512KiB`, `1GiB`.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write bytes, or a number with KiB, MiB or GiB (like \"64MiB\")"
            ));
        }
    };
    let n = parse_count(num).ok_or_else(|| {
        format!("`{text}` is not a size: write a number of bytes, or one like \"64MiB\"")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A whole number, allowing `_` between digit groups as TOML integers do.
fn parse_count(s: &str) -> Option<u64> {
    if s.is_empty()
        || s.starts_with('_')
        || s.ends_with('_')
        || s.contains("__")
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    s.replace('_', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rate(count: u64, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000/s"), Ok(rate(1000, 1)));
        assert_eq!(parse_rate("1000/sec"), Ok(rate(1000, 1)));
        assert_eq!(parse_rate(" 5/min "), Ok(rate(5, 60)));
        assert_eq!(parse_rate("3/h"), Ok(rate(3, 3600)));
        assert_eq!(parse_rate("10_000/s"), Ok(rate(10_000, 1)));
        assert_eq!(parse_rate("100/10s"), Ok(rate(100, 10)));
        assert_eq!(parse_rate("unlimited").map(|r| r.count), Ok(0));
    }

    #[test]
    fn bad_rates_say_why() {
        let cases = [
            ("1000", "not a rate"),
            ("abc/s", "not a whole number"),
            ("-5/s", "not a whole number"),
            ("1.5/s", "not a whole number"),
            ("5/m", "`5/min`"),
            ("5/day", "unknown unit `day`"),
            ("0/s", "admits nothing"),
            ("5/0s", "longer than zero"),
            ("2000000000/s", "faster than one per nanosecond"),
            ("99999999999999999999/s", "not a whole number"),
            ("", "not a rate"),
            ("1__0/s", "not a whole number"),
        ];
        for (input, want) in cases {
            let e = parse_rate(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s250ms"), Ok(Duration::from_millis(1250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        let cases = [
            ("", "empty"),
            ("30", "needs a unit"),
            ("s", "expected a number"),
            ("10x", "unknown unit `x`"),
            ("30m1h", "largest first"),
            ("1m1m", "largest first"),
            ("1h 30m", "expected a number"),
            ("-1s", "expected a number"),
            ("99999999999999999999999999999999999999999d", "too large"),
            ("999999999999999999999d", "too long"),
        ];
        for (input, want) in cases {
            let e = parse_duration(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(
            format_duration(Duration::from_nanos(1_500_001)),
            "1ms500us1ns"
        );
        assert_eq!(format_rate(&rate(5, 60)), "5/min");
        assert_eq!(format_rate(&rate(1000, 1)), "1000/s");
        assert_eq!(format_rate(&rate(7, 3600)), "7/h");
        assert_eq!(format_rate(&rate(100, 10)), "100/10s");
        assert_eq!(format_rate(&rate(0, 1)), "unlimited");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("64mb").unwrap_err().contains("not a size"));
        assert!(parse_size("MiB").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    proptest! {
        #[test]
        fn durations_round_trip(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn whole_second_durations_round_trip(secs in 0u64..10_000_000_000) {
            let d = Duration::from_secs(secs);
            let text = format_duration(d);
            prop_assert!(!text.contains("ms"), "{}", text);
            prop_assert_eq!(parse_duration(&text), Ok(d));
        }

        #[test]
        fn rates_round_trip(
            count in 1u64..1_000_000_000,
            per in prop::sample::select(&[1u64, 60, 3600, 10, 86_400][..]),
        ) {
            let r = rate(count, per);
            prop_assert_eq!(parse_rate(&format_rate(&r)), Ok(r));
        }

        #[test]
        fn unit_parsers_never_panic(s in "\\PC{0,24}") {
            let _ = parse_rate(&s);
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        }
    }
}
