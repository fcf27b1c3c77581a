//! An operator's config, however broken, must give errors an editor can jump
//! to (file, line ≥ 1, column ≥ 1, in file order), never a panic and never
//! an empty error list.
//!
//! Input: one selector byte for the kernel clock tick, then the text. The
//! bytes are converted lossily rather than skipped when they are not UTF-8
//! (`config::load` refuses such files before parsing), so no input is wasted.
#![no_main]

use std::{collections::HashSet, path::Path};

use libfuzzer_sys::fuzz_target;
use shield_user::config;

/// Ticks `clock_getres(CLOCK_MONOTONIC_COARSE)` can report: 0 when the call
/// fails, 1 ns on a high-resolution kernel, and HZ = 1000, 300, 250 and 100.
const TICKS_NS: [u64; 6] = [0, 1, 1_000_000, 3_333_333, 4_000_000, 10_000_000];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let tick_ns = TICKS_NS[usize::from(selector) % TICKS_NS.len()];
    let text = String::from_utf8_lossy(rest);
    let origin = Path::new("/etc/shield/fuzz.toml");

    match config::parse(&text, origin, tick_ns) {
        Ok(cfg) => {
            // Documented on `PortRuleConfig::ports`: ranges expanded, no
            // duplicates.
            for rule in &cfg.ports {
                let unique: HashSet<_> = rule.ports.iter().collect();
                assert_eq!(unique.len(), rule.ports.len(), "{rule:?}");
            }
        }
        Err(errs) => {
            assert!(!errs.errors.is_empty(), "an error without a message");
            // Lines a position may point at: one per `\n`, plus the last
            // (possibly empty) one.
            let line_count = text.split('\n').count();
            for e in &errs.errors {
                assert_eq!(e.file, origin);
                assert!(!e.message.is_empty(), "{e:?}");
                if e.line == 0 {
                    // The whole-file error (an unplaceable TOML error).
                    assert_eq!(e.column, 0, "{e:?}");
                    continue;
                }
                assert!(e.column >= 1, "{e:?}");
                assert!(e.line <= line_count, "line past the end: {e:?}");
                let chars = text
                    .split('\n')
                    .nth(e.line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(e.column <= chars + 1, "column past the line's end: {e:?}");
            }
            assert!(
                errs.errors
                    .windows(2)
                    .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
                "errors not in file order: {errs:?}"
            );
            // Rendering is what the operator sees; it must not panic either.
            let _ = errs.to_string();
        }
    }
});
