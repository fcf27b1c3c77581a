//! What the benchmark binaries share: named results for `--json`, medians,
//! the marked sections of docs/BENCHMARKS.md, and a description of the
//! machine a run happened on.

use std::{fmt::Write as _, fs, path::Path};

/// One measured value under a stable name (`xdp.pass_ns`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Measure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// The results one benchmark binary produced.
#[derive(Clone, Debug, Default)]
pub struct Results(pub Vec<Measure>);

impl Results {
    pub fn push(&mut self, name: &str, value: f64, unit: &str) {
        self.0.push(Measure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        });
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|m| m.name == name).map(|m| m.value)
    }

    /// `{"results": [{"name", "value", "unit"}, ...]}`. A value that was
    /// not measured (NaN) is written as `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .0
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "value": if m.value.is_finite() { serde_json::json!(m.value) } else { serde_json::Value::Null },
                    "unit": m.unit,
                })
            })
            .collect();
        serde_json::json!({ "results": rows })
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(|e| e.to_string())?;
        fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Reads a file [`Results::write_json`] wrote.
    pub fn read_json(path: &Path) -> Result<Results, String> {
        let text =
            fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let rows = v["results"]
            .as_array()
            .ok_or_else(|| format!("{}: no `results` array", path.display()))?;
        let mut out = Results::default();
        for r in rows {
            let name = r["name"]
                .as_str()
                .ok_or_else(|| format!("{}: a result without a name", path.display()))?;
            out.push(
                name,
                r["value"].as_f64().unwrap_or(f64::NAN),
                r["unit"].as_str().unwrap_or(""),
            );
        }
        Ok(out)
    }
}

/// The median (the mean of the middle two for an even count); NaN when
/// there is nothing to take it of.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// in `path` with `body`, or appends the marked section when the file has
/// none. Everything outside the markers stays byte for byte.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let old = fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &old[..b], &old[e + end.len()..])
        }
        (None, None) => format!("{}\n\n{section}\n", old.trim_end()),
        _ => {
            return Err(format!(
                "{} has a broken {begin} … {end} pair; fix it by hand",
                path.display()
            ));
        }
    };
    fs::write(path, new).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `uname -r`.
pub fn kernel() -> String {
    std::process::Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The CPU model, the CPU count and the memory, from /proc.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
    let mut s = String::new();
    let _ = write!(s, "{cpus} × {model}, {mem_gib:.1} GiB RAM");
    s
}

/// The three load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: an all-zero cpu_set_t is empty; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid set; libc indexes it with a bounds check.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Walks a bench's command line: `--quick` is a flag (the answer), every
/// other key takes a value that `set` stores, answering `Ok(false)` for a
/// key it does not know.
pub fn parse_args(
    usage: &str,
    mut set: impl FnMut(&str, String) -> Result<bool, String>,
) -> Result<bool, String> {
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--quick" {
            quick = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{k} needs a value\n{usage}"))?;
        if !set(&k, v)? {
            return Err(format!("unknown argument {k}\n{usage}"));
        }
    }
    Ok(quick)
}

/// A bench binary's exit: bad arguments print their message and exit 2, a
/// failed run prints `name: error` and exits 1.
pub fn exit<A>(
    name: &str,
    args: Result<A, String>,
    run: impl FnOnce(&A) -> Result<(), String>,
) -> std::process::ExitCode {
    let a = match args {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[1.0, 4.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn json_round_trip_keeps_names_and_unmeasured_values() {
        let mut r = Results::default();
        r.push("xdp.pass_ns", 42.5, "ns");
        r.push("path.pps.none", f64::NAN, "pps");
        let dir = std::env::temp_dir().join(format!("benchout-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        r.write_json(&p).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"value\": null"), "{text}");
        let back = Results::read_json(&p).unwrap();
        assert_eq!(back.get("xdp.pass_ns"), Some(42.5));
        assert!(back.get("path.pps.none").unwrap().is_nan());
        assert_eq!(back.0[1].unit, "pps");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let dir = std::env::temp_dir().join(format!("benchout-s-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.md");
        fs::write(&p, "head\n<!-- x:begin -->\nold\n<!-- x:end -->\ntail\n").unwrap();
        write_section(&p, "x", "new\n").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "head\n<!-- x:begin -->\nnew\n<!-- x:end -->\ntail\n"
        );
        write_section(&p, "y", "more").unwrap();
        assert!(
            fs::read_to_string(&p)
                .unwrap()
                .ends_with("tail\n\n<!-- y:begin -->\nmore\n<!-- y:end -->\n")
        );
        fs::write(&p, "<!-- x:end -->\n<!-- x:begin -->\n").unwrap();
        assert!(write_section(&p, "x", "z").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
