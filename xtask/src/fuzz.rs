//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, one after another
//! (the machines have two cores; two fuzzers would only halve each other).
//!
//! Corpora live in `fuzz/corpus/<target>/` and are kept between runs, so each
//! run starts where the last one stopped; crashes land in
//! `fuzz/artifacts/<target>/`. Neither is in git.
//!
//! Then the packet fuzzer (`tests/tests/packet_fuzz.rs`): frames through the
//! real XDP program and the host reference model, by the million.
//! `cargo xtask test` runs a short round of both ([`smoke_build`] and
//! [`smoke_run`]; the packet fuzzer as its `packet_fuzz` suite).

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct FuzzArgs {
    /// How long to fuzz each target, in seconds (not counting the build).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Fuzz only this target (one of `fuzz/fuzz_targets/*.rs`, or `packets`
    /// for the packet fuzzer alone); default: all.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Frames for the packet fuzzer (through BPF_PROG_TEST_RUN and the
    /// reference model); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    packets: u64,
    /// The packet fuzzer's seed; default: a new one each run (printed, so
    /// a failure can be replayed).
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
}

/// How much fuzzing each target gets.
#[derive(Clone, Copy)]
enum Budget {
    /// `cargo xtask fuzz`: wall-clock seconds from a new random seed each
    /// time, to explore.
    Seconds(u64),
    /// `cargo xtask test`: a fixed seed and a fixed number of inputs per
    /// target ([`smoke_runs`]). One commit's fresh clone then fuzzes the
    /// same inputs every time, so a red smoke replays and a green one
    /// cannot turn red by luck on the next landing (a 15-second run from a
    /// random seed once failed a landing on a bug older than the change).
    /// Exploring for new bugs is `cargo xtask fuzz`'s job.
    Smoke,
}

/// The smoke's seed: any fixed value does; this one is not special.
const SMOKE_SEED: u32 = 1;

/// A backstop for a very slow machine: a smoke that reaches it stops early
/// and passes with fewer inputs, it never fails for it.
const SMOKE_MAX_SECONDS: u64 = 300;

/// Inputs per target in the smoke: about 10 seconds each on a quiet 2-core
/// machine (executions per second from the smoke's own table: cidr_parse
/// about 370k, control_request 49k, config_parse 4.9k, feed_parse 3.3k,
/// policy_compile 320), two to four times that beside two busy loops.
fn smoke_runs(target: &str) -> u64 {
    match target {
        "cidr_parse" => 3_000_000,
        "control_request" => 400_000,
        "config_parse" => 40_000,
        "feed_parse" => 30_000,
        "policy_compile" => 3_000,
        // A new target gets a modest count until it is measured.
        _ => 20_000,
    }
}

/// How the targets are built.
#[derive(Clone, Copy)]
enum Sanitizer {
    /// AddressSanitizer, cargo-fuzz's default: for `cargo xtask fuzz`,
    /// whose long runs pay for the slower build and executions.
    Address,
    /// None, for the smoke of `cargo xtask test`: the fuzzed code is safe
    /// Rust, where bounds and borrow checks already stop what ASan would
    /// catch, and the targets look for panics, hangs and wrong answers.
    /// On a fresh 2-core machine the build took 363 s instead of about 490
    /// (user CPU 538 s against 772), and each second fuzzes more inputs.
    None,
}

impl Sanitizer {
    fn flag(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }
}

/// Where the feed fixtures live; they are the feed target's seeds, copied at
/// run time so there is one copy in git.
const FEED_FIXTURES: &str = "shield-user/src/feeds/testdata";
/// The embedded default policy: a complete, valid config to start from.
const DEFAULT_POLICY: &str = "shield-user/src/config/default.toml";
/// `shield_user::feeds::MAX_LINE`; xtask does not depend on shield-user
/// (building it needs what setup installs), so the value is repeated here.
const FEED_MAX_LINE: usize = 4096;
/// Format selectors `feed_parse` understands: Auto, Plain, Netset, Spamhaus,
/// Ipsum.
const FEED_FORMATS: u8 = 5;

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    setup::run()?;
    let root = cmd::root();
    let all = targets(&root.join("fuzz"))?;
    let chosen = match args.target.as_deref() {
        None => all,
        Some("packets") => Vec::new(),
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_string()],
        Some(t) => bail!(
            "there is no fuzz target `{t}`; the targets are: {}, packets",
            all.join(", ")
        ),
    };
    if !chosen.is_empty() {
        cargo_fuzz()?;
        build_targets(&chosen, Sanitizer::Address)?;
        run_targets(&chosen, Budget::Seconds(args.seconds), Sanitizer::Address)?;
    }
    let packets = matches!(args.target.as_deref(), None | Some("packets"));
    if packets && args.packets > 0 {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        packet_fuzzer(args.packets, seed)?;
    }
    Ok(())
}

/// The short run `cargo xtask test` makes: every target for a few seconds
/// when nightly and cargo-fuzz are there (setup installs cargo-fuzz). The
/// packet fuzzer is an ordinary suite there, at its own bounded budget.
pub fn smoke_possible() -> bool {
    let nightly = cmd::succeeds(Command::new("cargo").args(["+nightly", "--version"]));
    if !nightly || !setup::has_cargo_fuzz() {
        eprintln!(
            "xtask test: SKIPPING the cargo-fuzz targets: {} (`cargo xtask setup` installs \
             cargo-fuzz {})",
            if nightly {
                "cargo-fuzz is not installed"
            } else {
                "there is no nightly toolchain"
            },
            setup::CARGO_FUZZ_VERSION
        );
        return false;
    }
    true
}

/// Builds every cargo-fuzz target for [`smoke_run`] (without a sanitizer:
/// [`Sanitizer::None`] says why).
pub fn smoke_build() -> anyhow::Result<()> {
    build_targets(&targets(&cmd::root().join("fuzz"))?, Sanitizer::None)
}

/// Fuzzes every target with the smoke's fixed budget ([`Budget::Smoke`]);
/// [`smoke_build`] comes first.
pub fn smoke_run() -> anyhow::Result<()> {
    run_targets(
        &targets(&cmd::root().join("fuzz"))?,
        Budget::Smoke,
        Sanitizer::None,
    )
}

/// The packet fuzzer suite with a budget of `frames` frames.
fn packet_fuzzer(frames: u64, seed: u64) -> anyhow::Result<()> {
    eprintln!("xtask fuzz: packet fuzzer, {frames} frames, seed {seed}");
    cmd::run(
        Command::new("cargo")
            .args([
                "test",
                "--package",
                "shield-tests",
                "--test",
                "packet_fuzz",
                "--",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("SHIELD_PACKET_FUZZ_FRAMES", frames.to_string())
            .env("SHIELD_PACKET_FUZZ_SEED", seed.to_string())
            .current_dir(cmd::root()),
    )
    .with_context(|| {
        format!(
            "the packet fuzzer failed; replay: SHIELD_PACKET_FUZZ_FRAMES={frames} \
             SHIELD_PACKET_FUZZ_SEED={seed} cargo test -p shield-tests --test packet_fuzz"
        )
    })
}

/// One build for all of them: a compile error shows before any time is
/// spent fuzzing.
fn build_targets(chosen: &[String], sanitizer: Sanitizer) -> anyhow::Result<()> {
    let root = cmd::root();
    let mut build = nightly_fuzz(&root);
    build.args(["build", "--sanitizer", sanitizer.flag()]);
    if let [one] = chosen {
        build.arg(one);
    }
    eprintln!("xtask: {}", shown(&build));
    let status = build
        .status()
        .with_context(|| format!("could not start {}", shown(&build)))?;
    if !status.success() {
        bail!("{} failed ({status})", shown(&build));
    }
    Ok(())
}

fn run_targets(chosen: &[String], budget: Budget, sanitizer: Sanitizer) -> anyhow::Result<()> {
    let root = cmd::root();
    let fuzz_dir = root.join("fuzz");
    let mut results = Vec::new();
    for target in chosen {
        let corpus = fuzz_dir.join("corpus").join(target);
        seed(&root, target, &corpus)?;
        results.push(fuzz_one(&root, &fuzz_dir, target, budget, sanitizer)?);
    }

    match budget {
        Budget::Seconds(seconds) => eprintln!("\nxtask fuzz: {seconds} s per target"),
        Budget::Smoke => eprintln!("\nxtask fuzz: fixed inputs per target, seed {SMOKE_SEED}"),
    }
    eprintln!(
        "{:<18} {:>12} {:>10} {:>8}  result",
        "target", "executions", "exec/s", "corpus"
    );
    for r in &results {
        eprintln!(
            "{:<18} {:>12} {:>10} {:>8}  {}",
            r.target,
            r.runs.map_or("?".into(), |n| n.to_string()),
            r.per_sec.map_or("?".into(), |n| n.to_string()),
            r.corpus,
            if r.failure.is_none() { "ok" } else { "FAILED" }
        );
    }
    let failures: Vec<&String> = results.iter().filter_map(|r| r.failure.as_ref()).collect();
    if !failures.is_empty() {
        let list = failures
            .iter()
            .map(|f| format!("  {f}"))
            .collect::<Vec<_>>()
            .join("\n");
        bail!("fuzzing found problems:\n{list}");
    }
    eprintln!("xtask fuzz: no crashes");
    Ok(())
}

/// cargo-fuzz must be there to fuzz: setup's install is best effort.
fn cargo_fuzz() -> anyhow::Result<()> {
    setup::cargo_fuzz();
    if !setup::has_cargo_fuzz() {
        bail!(
            "cargo-fuzz is not installed: `cargo install cargo-fuzz --version {} --locked`",
            setup::CARGO_FUZZ_VERSION
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` in the workspace root: libFuzzer's instrumentation
/// (`-Z sanitizer`, sancov passes) exists only on nightly.
///
/// The variables `cargo run` set for xtask itself are removed: ring's build
/// script is rebuilt whenever `CARGO_MANIFEST_DIR` changes, so passing them
/// on would rebuild shield-user's dependencies on every switch between
/// `cargo xtask fuzz` and a `cargo fuzz` typed by hand.
fn nightly_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.args(["+nightly", "fuzz"]).current_dir(root);
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO_PKG_")
            || key_str == "CARGO_MANIFEST_DIR"
            || key_str == "CARGO_MANIFEST_PATH"
        {
            c.env_remove(&key);
        }
    }
    c
}

/// The command line, without the environment `nightly_fuzz` cleans up.
fn shown(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The targets: every `fuzz/fuzz_targets/*.rs`, so a new one is never left
/// out.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_string())
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// Puts the seeds into the corpus: the hand-written ones from
/// `fuzz/seeds/<target>/` and the ones made from files the project already
/// has. Existing corpus files are kept; seeds are rewritten (same name, same
/// bytes), so this is idempotent.
fn seed(root: &Path, target: &str, corpus: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = corpus.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let hand_written = files(&root.join("fuzz/seeds").join(target))?;
    for (name, bytes) in &hand_written {
        write(&format!("seed-{name}"), bytes)?;
    }
    match target {
        // The target reads one selector byte (the format), then the body:
        // each fixture goes in under every format, so every parser starts
        // from real feeds.
        "feed_parse" => {
            for (name, body) in files(&root.join(FEED_FIXTURES))? {
                for selector in 0..FEED_FORMATS {
                    let mut input = vec![selector];
                    input.extend_from_slice(&body);
                    write(&format!("fixture-{selector}-{name}"), &input)?;
                }
            }
            // A line over the cap, then a good one: the skip-and-resync path.
            let mut long = vec![1u8];
            long.extend(std::iter::repeat_n(b'x', FEED_MAX_LINE + 100));
            long.extend_from_slice(b"\n192.0.2.1\n");
            write("overlong-line", &long)?;
        }
        // Selector byte `\n` (4 ms tick), then the default policy.
        "config_parse" => {
            let policy = fs::read(root.join(DEFAULT_POLICY))
                .with_context(|| format!("reading {DEFAULT_POLICY}"))?;
            write("default-policy.toml", &[b"\n".as_slice(), &policy].concat())?;
        }
        // The target also reads its input as a stream of frames: each seed
        // framed (4-byte big-endian length, then the body).
        "control_request" => {
            for (name, body) in &hand_written {
                let len = u32::try_from(body.len()).context("seed too large for a frame")?;
                write(
                    &format!("framed-{name}"),
                    &[len.to_be_bytes().as_slice(), body].concat(),
                )?;
            }
        }
        // The generator reads its choices from the input: a few long
        // pseudo-random inputs start it on configs with every section.
        "policy_compile" => {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for n in 0..8 {
                let bytes: Vec<u8> = (0..1024)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                write(&format!("random-{n}"), &bytes)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The regular files directly in `dir` (not README.md), by name.
fn files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_file() || name == "README.md" {
            continue;
        }
        let bytes = fs::read(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// Extra libFuzzer flags per target.
fn extra_flags(target: &str) -> Vec<String> {
    match target {
        // libFuzzer's default input cap (4 KiB for small seeds) would keep
        // every line under the parser's 4 KiB line cap; allow a few over it.
        "feed_parse" => vec![format!("-max_len={}", 3 * FEED_MAX_LINE)],
        // Every choice the config generator makes takes input bytes; short
        // inputs only make tiny configs.
        "policy_compile" => vec!["-max_len=2048".to_string()],
        _ => Vec::new(),
    }
}

struct Outcome {
    target: String,
    runs: Option<u64>,
    per_sec: Option<u64>,
    corpus: usize,
    /// Why the target failed: the crash files, or the exit status.
    failure: Option<String>,
}

fn fuzz_one(
    root: &Path,
    fuzz_dir: &Path,
    target: &str,
    budget: Budget,
    sanitizer: Sanitizer,
) -> anyhow::Result<Outcome> {
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let before = listing(&artifacts);
    let mut c = nightly_fuzz(root);
    // The build's own sanitizer, or cargo-fuzz would build again.
    c.args(["run", "--sanitizer", sanitizer.flag(), target, "--"]);
    match budget {
        Budget::Seconds(seconds) => c.arg(format!("-max_total_time={seconds}")),
        Budget::Smoke => c
            .arg(format!("-seed={SMOKE_SEED}"))
            .arg(format!("-runs={}", smoke_runs(target)))
            .arg(format!("-max_total_time={SMOKE_MAX_SECONDS}")),
    };
    c.arg("-print_final_stats=1")
        .args(extra_flags(target))
        .stderr(Stdio::piped());
    eprintln!("xtask: {}", shown(&c));
    let mut child = c
        .spawn()
        .with_context(|| format!("could not start {}", shown(&c)))?;
    let mut runs = None;
    let mut per_sec = None;
    // libFuzzer reports every corpus addition on its own line: thousands in
    // a minute. Those and the suggested dictionary are dropped; everything
    // else (the build, progress pulses, the final stats, any crash report)
    // goes through.
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out = std::io::stderr().lock();
    let mut in_dictionary = false;
    let mut written = Vec::new();
    for line in BufReader::new(stderr).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        if line.starts_with("###### Recommended dictionary") {
            in_dictionary = true;
        }
        let quiet = in_dictionary || is_noise(&line);
        if line.starts_with("###### End of recommended dictionary") {
            in_dictionary = false;
        }
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            runs = v.trim().parse().ok();
        }
        if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            per_sec = v.trim().parse().ok();
        }
        // libFuzzer names the file it saved a crashing (or timing-out, or
        // leaking) input to; the name is a hash of the input, so a crash
        // found before leaves no new file behind and this is how it is seen.
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            written.push(PathBuf::from(path.trim()));
        }
        if !quiet {
            writeln!(out, "{line}")?;
        }
    }
    drop(out);
    let status = child.wait()?;

    let mut crashes: BTreeSet<PathBuf> = listing(&artifacts).difference(&before).cloned().collect();
    crashes.extend(written.into_iter().map(|p| root.join(p)));
    let crashes: Vec<PathBuf> = crashes.into_iter().collect();
    let failure = if !crashes.is_empty() {
        let shown = crashes
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "{target}: {shown} (reproduce: cargo +nightly fuzz run --sanitizer {} {target} {})",
            sanitizer.flag(),
            crashes[0]
                .strip_prefix(root)
                .unwrap_or(&crashes[0])
                .display()
        ))
    } else if !status.success() {
        Some(format!("{target}: cargo fuzz run failed ({status})"))
    } else {
        None
    };
    Ok(Outcome {
        target: target.to_string(),
        runs,
        per_sec,
        corpus: listing(&fuzz_dir.join("corpus").join(target)).len(),
        failure,
    })
}

/// `#1234  NEW  cov: ...` and `REDUCE` lines, the `NEW_FUNC` lines that
/// follow them, and the eBPF build's progress lines that cargo replays from
/// shield-user's build script on every (even no-op) build.
fn is_noise(line: &str) -> bool {
    if line.starts_with("\tNEW_FUNC[") {
        return true;
    }
    if let Some(replayed) = line.strip_prefix("warning: shield-user@") {
        let progress = replayed
            .split_once(": ")
            .map_or("", |(_, l)| l.trim_start());
        return progress.starts_with("Compiling ") || progress.starts_with("Finished ");
    }
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let mut words = rest.split_whitespace();
    let counter = words
        .next()
        .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()));
    counter && matches!(words.next(), Some("NEW" | "REDUCE"))
}

/// The files in `dir`, or none when it does not exist yet.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_recognised() {
        assert!(is_noise(
            "#813267\tREDUCE cov: 3332 ft: 7671 corp: 1365/92Kb lim: 890 exec/s: 27108"
        ));
        assert!(is_noise("#12\tNEW    cov: 1 ft: 1 corp: 1/1b"));
        assert!(!is_noise("#65536\tpulse  cov: 3332 ft: 7671"));
        assert!(!is_noise("#822432\tDONE   cov: 3332 ft: 7687"));
        assert!(!is_noise("==1234== ERROR: libFuzzer: deadly signal"));
        assert!(!is_noise("# NEW comment"));
        assert!(is_noise(
            "\tNEW_FUNC[1/2]: 0x5582 in serde_json::read::error src/read.rs:895"
        ));
        assert!(is_noise(
            "warning: shield-user@0.1.0:    Compiling aya-ebpf v0.2.1"
        ));
        assert!(is_noise(
            "warning: shield-user@0.1.0:     Finished `release` profile [optimized] target(s) in 1m 12s"
        ));
        assert!(!is_noise(
            "warning: shield-user@0.1.0: error[E0308]: mismatched types"
        ));
    }
}
