//! Medians with their spread, and the marked section of BENCHMARKS.md.

use std::{fs, path::Path};

use crate::sys::{Ctx, Res};

/// The median of the rounds, and the lowest and highest round.
#[derive(Clone, Copy)]
pub struct Stat {
    pub med: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Stat {
                med: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        // With an even count, the mean of the middle two.
        let mid = v.len() / 2;
        let med = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Stat {
            med,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `1,042 ms (1,010–1,120)`: whole units from 100 up, one decimal
    /// below, so small and large numbers both keep their meaningful digits.
    pub fn show(&self, unit: &str) -> String {
        if !self.med.is_finite() {
            return "—".into();
        }
        format!(
            "{}{unit} ({}–{})",
            num(self.med),
            num(self.min),
            num(self.max)
        )
    }

    /// A ratio: two decimals, three below 0.1 so that a small one still
    /// shows its first digit.
    pub fn ratio(&self) -> String {
        if !self.med.is_finite() {
            return "—".into();
        }
        let d = if self.med < 0.1 { 3 } else { 2 };
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.med,
            self.min,
            self.max,
            d = d
        )
    }
}

/// Thousands separated, one decimal under 100.
pub fn num(x: f64) -> String {
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// An integer count with thousands separators.
pub fn count(n: usize) -> String {
    num(n as f64).trim_end_matches(".0").to_string()
}

pub const BEGIN: &str = "<!-- feedbench:begin -->";
pub const END: &str = "<!-- feedbench:end -->";

/// Replaces the marked section of `path` with `body`, or appends a marked
/// section when there is none yet. Everything outside the markers stays
/// byte for byte.
pub fn write_section(path: &Path, body: &str) -> Res<()> {
    let old = fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
    let section = format!("{BEGIN}\n{body}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &old[..b], &old[e + END.len()..])
        }
        (None, None) => format!("{}\n{section}\n", old.trim_end()),
        _ => {
            return Err(format!(
                "{} has a broken {BEGIN} … {END} pair; fix it by hand",
                path.display()
            ));
        }
    };
    fs::write(path, new).ctx(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spread() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.med, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(&[1.0, 4.0]).med, 2.5);
        assert!(Stat::of(&[]).med.is_nan());
        assert_eq!(Stat::of(&[f64::NAN, 5.0]).med, 5.0);
        assert_eq!(Stat::of(&[0.25, 0.3]).ratio(), "0.28 (0.25–0.30)");
        assert_eq!(Stat::of(&[0.0061]).ratio(), "0.006 (0.006–0.006)");
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1042.4), "1,042");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(29.14), "29.1");
        assert_eq!(num(100.0), "100");
        assert_eq!(count(998_417), "998,417");
        assert_eq!(count(12), "12");
    }

    #[test]
    fn section_is_replaced_in_place_or_appended() {
        let dir = std::env::temp_dir().join(format!("feedbench-report-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.md");
        fs::write(&p, format!("head\n{BEGIN}\nold\n{END}\ntail\n")).unwrap();
        write_section(&p, "new\n").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("head\n{BEGIN}\nnew\n{END}\ntail\n")
        );
        fs::write(&p, "only text\n").unwrap();
        write_section(&p, "x\n").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("only text\n{BEGIN}\nx\n{END}\n")
        );
        fs::write(&p, format!("{END}\n{BEGIN}\n")).unwrap();
        assert!(write_section(&p, "x\n").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
