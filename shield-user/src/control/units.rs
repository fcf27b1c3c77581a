//! Rates (`1000/s`, `5/min`, `unlimited`) and durations (`10m`, `1h30m`) as
//! operators type them on the command line, and their human renderings.
//!
//! The grammar is the config file's (`config::parse_rate`,
//! `config::parse_duration`), so shieldctl accepts exactly what the config
//! does; this file adds the protocol's rate type and the renderings.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest TTL or override duration the CLI accepts. A year is longer
/// than any sane temporary measure; anything beyond is a typo (`365d` vs
/// `3650d`) or should be a permanent entry.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The config parser's message, which names the text and the fix.
    #[error("{0}")]
    Rate(String),
    #[error("{0}")]
    Duration(String),
    #[error("duration `{0}` is zero")]
    ZeroDuration(String),
    #[error("duration `{text}` is longer than {max}")]
    DurationTooLong { text: String, max: String },
}

/// The period of a rate. Only the three the config accepts, so a rate
/// always renders back to what an operator could have typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RatePer {
    Second,
    Minute,
    Hour,
}

impl RatePer {
    pub fn secs(self) -> u64 {
        match self {
            RatePer::Second => 1,
            RatePer::Minute => 60,
            RatePer::Hour => 3600,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            RatePer::Second => "s",
            RatePer::Minute => "min",
            RatePer::Hour => "h",
        }
    }
}

/// A rate limit as written: `N/s`, `N/min`, `N/h`, or `unlimited`.
///
/// On the wire it is the same string, so scripts read and write
/// `"packets": "1000/s"` rather than a nested object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateSpec {
    Unlimited,
    Limited { count: u64, per: RatePer },
}

impl RateSpec {
    /// Events per second, for comparisons and display; `None` when unlimited.
    pub fn per_second(&self) -> Option<f64> {
        match *self {
            RateSpec::Unlimited => None,
            RateSpec::Limited { count, per } => Some(count as f64 / per.secs() as f64),
        }
    }
}

impl FromStr for RateSpec {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<RateSpec, UnitError> {
        crate::config::parse_rate(s)
            .map(RateSpec::from)
            .map_err(UnitError::Rate)
    }
}

impl From<crate::config::Rate> for RateSpec {
    /// The same rate per second, minute or hour, whichever is exact
    /// (`100/10s` is `10/s`); per hour, rounded, when none is.
    fn from(r: crate::config::Rate) -> RateSpec {
        if r.count == 0 {
            return RateSpec::Unlimited;
        }
        let per_ns = r.per.as_nanos().max(1);
        for per in [RatePer::Second, RatePer::Minute, RatePer::Hour] {
            let scaled = u128::from(r.count) * u128::from(per.secs()) * 1_000_000_000;
            if scaled % per_ns == 0 {
                return RateSpec::Limited {
                    count: u64::try_from(scaled / per_ns).unwrap_or(u64::MAX),
                    per,
                };
            }
        }
        let hourly = u128::from(r.count) * 3_600 * 1_000_000_000 / per_ns;
        let hourly = u64::try_from(hourly).unwrap_or(u64::MAX).max(1);
        // The rounded rate is written the way it would be parsed back
        // (`76/910s` rounds to `300/h`, which reads back as `5/min`), so
        // the wire form of a rate is a fixed point: what shieldctl sends
        // is what the agent reads and shows.
        RateSpec::from(crate::config::Rate {
            count: hourly,
            per: Duration::from_secs(RatePer::Hour.secs()),
        })
    }
}

impl From<RateSpec> for crate::config::Rate {
    fn from(s: RateSpec) -> crate::config::Rate {
        match s {
            RateSpec::Unlimited => crate::config::Rate {
                count: 0,
                per: Duration::from_secs(1),
            },
            RateSpec::Limited { count, per } => crate::config::Rate {
                count,
                per: Duration::from_secs(per.secs()),
            },
        }
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateSpec::Unlimited => f.write_str("unlimited"),
            RateSpec::Limited { count, per } => write!(f, "{count}/{}", per.suffix()),
        }
    }
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RateSpec, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `90s`, `10m`, `1h30m`, `2d`: the config file's grammar. A bare
/// number is refused: the unit is exactly the thing people get wrong.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    crate::config::parse_duration(s).map_err(UnitError::Duration)
}

/// A duration for a ban TTL or an override: non-zero and at most a year.
pub fn parse_ttl(s: &str) -> Result<Duration, UnitError> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(UnitError::ZeroDuration(s.trim().to_string()));
    }
    if d > MAX_TTL {
        return Err(UnitError::DurationTooLong {
            text: s.trim().to_string(),
            max: "365d".into(),
        });
    }
    Ok(d)
}

/// `9m58s`, `1h30m`, `2d3h`: the two most significant units, which is as
/// much precision as a human reading a table wants.
pub fn format_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    let mut shown = 0;
    for (size, name) in UNITS {
        if shown == 2 {
            break;
        }
        let n = rest / size;
        if n > 0 {
            out.push_str(&format!("{n}{name}"));
            rest -= n * size;
            shown += 1;
        } else if shown > 0 {
            // Stop at a gap: "1d" rather than "1d0h", "2h" not "2h0m".
            break;
        }
    }
    out
}

/// `950`, `5.0k`, `1.2M`: compact counts for tables.
pub fn format_count(n: f64) -> String {
    if !n.is_finite() || n < 0.0 {
        return "-".into();
    }
    if n >= 1e15 {
        // Beyond any real counter; keep the column narrow.
        return format!("{n:.1e}");
    }
    const UNITS: [(f64, &str); 5] = [(1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")];
    let mut i = UNITS.iter().rposition(|(size, _)| n >= *size).unwrap_or(0);
    loop {
        let (size, suffix) = UNITS[i];
        let v = n / size;
        let text = if i == 0 && (v.fract() == 0.0 || v >= 100.0) {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        // Rounding can carry into the next unit: 999.96 is "1.0k", not
        // "1000".
        if i + 1 < UNITS.len() && text.parse::<f64>().is_ok_and(|x| x >= 1000.0) {
            i += 1;
            continue;
        }
        return format!("{text}{suffix}");
    }
}

/// A rate in events per second: `5.0k/s`, `12/s`, `0.5/s`.
pub fn format_rate(per_sec: f64) -> String {
    format!("{}/s", format_count(per_sec))
}

/// `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_render_back() {
        for (text, want) in [
            ("1000/s", "1000/s"),
            ("5/min", "5/min"),
            ("3/h", "3/h"),
            (" 7 / s ", "7/s"),
            ("unlimited", "unlimited"),
        ] {
            let r: RateSpec = text.parse().unwrap();
            assert_eq!(r.to_string(), want, "{text}");
            assert_eq!(want.parse::<RateSpec>().unwrap(), r);
        }
        assert_eq!(
            "120/min".parse::<RateSpec>().unwrap().per_second(),
            Some(2.0)
        );
        assert_eq!(RateSpec::Unlimited.per_second(), None);
    }

    #[test]
    fn bad_rates_are_refused() {
        for bad in [
            "", "1000", "/s", "x/s", "-5/s", "1.5/s", "5/day", "5/", "5//s", "1e3/s", "5/m", "0/s",
        ] {
            assert!(
                matches!(bad.parse::<RateSpec>(), Err(UnitError::Rate(_))),
                "{bad:?}"
            );
        }
        assert_eq!("100/10s".parse::<RateSpec>().unwrap().to_string(), "10/s");
        assert!("99999999999999999999999/s".parse::<RateSpec>().is_err());
    }

    /// Found by the `control_request` fuzz target: a rate that was rounded
    /// to per-hour must render as the rate it parses back to.
    #[test]
    fn every_rate_renders_as_a_fixed_point() {
        let r: RateSpec = "76/910s".parse().unwrap();
        assert_eq!(r.to_string(), "5/min");
        for count in 1..=120u64 {
            for per in 1..=400u64 {
                let text = format!("{count}/{per}s");
                let once: RateSpec = text.parse().unwrap();
                let twice: RateSpec = once.to_string().parse().unwrap();
                assert_eq!(twice, once, "{text} renders as {once}");
            }
        }
    }

    #[test]
    fn rates_are_strings_on_the_wire() {
        let r: RateSpec = "5/min".parse().unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"5/min\"");
        assert_eq!(serde_json::from_str::<RateSpec>("\"5/min\"").unwrap(), r);
        assert!(serde_json::from_str::<RateSpec>("\"0/s\"").is_err());
        assert!(serde_json::from_str::<RateSpec>("5").is_err());
    }

    #[test]
    fn durations() {
        let s = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(s("90s"), Ok(90));
        assert_eq!(s("10m"), Ok(600));
        assert_eq!(s("1h30m"), Ok(5400));
        assert_eq!(s("2d"), Ok(172_800));
        assert_eq!(s("2d1h"), Ok(49 * 3600));
        assert_eq!(s("1h0m5s"), Ok(3605));
        assert_eq!(s("0s"), Ok(0));
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1h 30m",
            "1m1h",
            "1h1h",
            "-1h",
            "1.5h",
            "h1",
            "99999999999999999999d",
            "999999999999999999d",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(UnitError::Duration(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_ttl("365d").unwrap(), MAX_TTL);
        assert!(matches!(parse_ttl("0s"), Err(UnitError::ZeroDuration(_))));
        assert!(matches!(parse_ttl("0h0m"), Err(UnitError::ZeroDuration(_))));
        let e = parse_ttl("366d").unwrap_err();
        assert_eq!(e.to_string(), "duration `366d` is longer than 365d");
    }

    #[test]
    fn human_durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(598), "9m58s");
        assert_eq!(format_duration(3600), "1h");
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(5405), "1h30m");
        assert_eq!(format_duration(86_400 + 3 * 3600 + 59), "1d3h");
        assert_eq!(format_duration(86_400 + 59), "1d");
        // Rendered durations parse back (to within the dropped precision).
        for secs in [1, 59, 61, 3599, 3661, 90_061, 31_536_000] {
            let back = parse_duration(&format_duration(secs)).unwrap().as_secs();
            assert!(back <= secs && back as f64 >= secs as f64 * 0.95, "{secs}");
        }
        assert!(!format_duration(u64::MAX).is_empty());
    }

    #[test]
    fn human_counts_and_rates() {
        assert_eq!(format_rate(5000.0), "5.0k/s");
        assert_eq!(format_rate(950.0), "950/s");
        assert_eq!(format_rate(0.5), "0.5/s");
        assert_eq!(format_rate(12.34), "12.3/s");
        assert_eq!(format_rate(999.9), "1.0k/s");
        assert_eq!(format_rate(999.4), "999/s");
        assert_eq!(format_rate(999_990.0), "1.0M/s");
        assert_eq!(format_rate(999_400.0), "999.4k/s");
        assert_eq!(format_rate(1_250_000.0), "1.2M/s");
        assert_eq!(format_rate(f64::NAN), "-/s");
        assert_eq!(format_count(0.0), "0");
        assert_eq!(format_count(3.4e13), "34.0T");
        assert_eq!(format_count(1.1e36), "1.1e36");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }
}
