//! `status` asked of a running agent again and again from a thread of its
//! own while a benchmark loads it, each answer's round trip recorded: the
//! figure `control.status_p99_ms@load` (docs/BENCHMARKS.md). Each request
//! opens a connection of its own, as `shieldctl status` does; starting the
//! shieldctl process is left out, as it measures the machine, not the agent.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use shield_user::control::{Client, Request, Response};

/// The pause between two requests: about a hundred a second at most, a
/// client's pace rather than a flood of the control socket.
const PAUSE: Duration = Duration::from_millis(10);

/// A running probe; [`StatusProbe::finish`] stops it and returns the
/// round trips.
pub struct StatusProbe {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    thread: JoinHandle<Latencies>,
}

/// Round trips of answered requests, and how many got no answer.
#[derive(Debug, Default)]
pub struct Latencies {
    pub answered: Vec<Duration>,
    pub failed: u64,
}

impl StatusProbe {
    /// Starts asking the agent behind `socket`. Requests before its first
    /// answer (the socket not there yet) are not counted.
    pub fn start(socket: PathBuf) -> StatusProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let thread = thread::spawn(move || {
            let mut out = Latencies::default();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let answered = Client::connect(&socket)
                    .and_then(|mut c| c.request(&Request::Status))
                    .is_ok_and(|r| matches!(r, Response::Ok(_)));
                let took = t.elapsed();
                if answered {
                    out.answered.push(took);
                    counter.fetch_add(1, Ordering::Relaxed);
                } else if !out.answered.is_empty() {
                    out.failed += 1;
                }
                thread::sleep(PAUSE);
            }
            out
        });
        StatusProbe {
            stop,
            count,
            thread,
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn finish(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Latencies {
    /// The `q` quantile (0..=1) in milliseconds; `None` without answers.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let mut v = self.answered.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[i].as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_the_sorted_answers() {
        let l = Latencies {
            answered: (1..=100).rev().map(Duration::from_millis).collect(),
            failed: 0,
        };
        assert_eq!(l.quantile_ms(0.0), Some(1.0));
        assert_eq!(l.quantile_ms(0.5), Some(51.0));
        assert_eq!(l.quantile_ms(0.99), Some(99.0));
        assert_eq!(l.quantile_ms(1.0), Some(100.0));
        assert_eq!(Latencies::default().quantile_ms(0.99), None);
    }
}
