//! The stages of a long command, timed, so its end says where the time
//! went: on a fresh machine the answer decides what to speed up first.

use std::time::{Duration, Instant};

/// Finished stages, in order, with how long each took and how it ended.
#[derive(Default)]
pub struct Stages {
    done: Vec<(String, Duration, bool)>,
    started: Option<Instant>,
}

impl Stages {
    pub fn new() -> Self {
        Stages {
            done: Vec::new(),
            started: Some(Instant::now()),
        }
    }

    /// Runs one stage and records it, failed or not.
    pub fn run<T>(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let name = name.into();
        let start = Instant::now();
        let result = f();
        self.done.push((name, start.elapsed(), result.is_ok()));
        result
    }

    /// The table: one line per stage, then the total.
    pub fn table(&self) -> String {
        let width = self.done.iter().map(|(n, ..)| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, took, ok) in &self.done {
            out.push_str(&format!(
                "  {name:<width$}  {:>9}{}\n",
                clock(*took),
                if *ok { "" } else { "  FAILED" }
            ));
        }
        if let Some(start) = self.started {
            out.push_str(&format!(
                "  {:<width$}  {:>9}\n",
                "total",
                clock(start.elapsed())
            ));
        }
        out
    }
}

/// `12m05s`, `48.2s`: minutes where they matter, tenths where they don't.
fn clock(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_a_stopwatch() {
        assert_eq!(clock(Duration::from_millis(48_240)), "48.2s");
        assert_eq!(clock(Duration::from_secs(725)), "12m05s");
        assert_eq!(clock(Duration::from_secs(60)), "1m00s");
    }

    #[test]
    fn a_failed_stage_is_recorded_and_marked() {
        let mut s = Stages::new();
        s.run("ok", || Ok(())).unwrap();
        assert!(
            s.run("bad", || -> anyhow::Result<()> { anyhow::bail!("no") })
                .is_err()
        );
        let t = s.table();
        assert!(t.contains("ok "), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with("FAILED"), "{t}");
        assert!(
            t.lines().last().unwrap().trim_start().starts_with("total"),
            "{t}"
        );
    }
}
