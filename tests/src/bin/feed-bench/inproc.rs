//! shield's feed path run in this process, step by step, against a private
//! (unpinned, unattached) dataplane: where the time of a load goes.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use shield_common::maps::FeedEntry;
use shield_user::{
    config::FeedSource,
    dataplane::{Dataplane, LoadOptions},
    feeds::{
        FeedIndex, FeedSet, FetchOptions, Fetched, ParseOptions, Validators, apply_plan, cache,
        fetch, parse_feed_set, parse_feed_unordered,
    },
    net::Cidr,
};

use crate::sys::{Ctx, Res};

/// One load of a feed body into the maps, step by step.
#[derive(Clone, Copy, Default)]
pub struct Load {
    pub fetch: Duration,
    /// Into the compact set, as the agent parses (`parse_feed_set`).
    pub parse: Duration,
    pub plan: Duration,
    pub apply: Duration,
    pub commit: Duration,
    /// After the apply, off the path to enforcement: the body written to
    /// the state directory as the last good copy, as the agent does before
    /// it answers.
    pub cache: Duration,
    pub entries: usize,
    pub added: usize,
    pub removed: usize,
}

impl Load {
    /// Read to enforced and recorded: read, parse, diff, write, commit.
    pub fn total(&self) -> Duration {
        self.fetch + self.parse + self.plan + self.apply + self.commit
    }

    /// The part that needs the new set already built: diff, kernel
    /// writes, bookkeeping. This is what holds the agent's lock.
    pub fn kernel(&self) -> Duration {
        self.plan + self.apply + self.commit
    }
}

/// fetch → parse into the set → plan → apply → commit → cache, as the agent
/// does (it too holds the body until the cache has it).
pub fn load(
    dp: &mut Dataplane,
    index: &mut FeedIndex,
    feed_id: u32,
    path: &Path,
    state_dir: &Path,
) -> Res<Load> {
    let opts = FetchOptions {
        connect_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(60),
        max_bytes: 64 << 20,
        allow_http: false,
    };
    let t = Instant::now();
    let source = FeedSource::Path(path.to_path_buf());
    let fetched = fetch(&source, &Validators::default(), &opts)
        .ctx(|| format!("reading {}", path.display()))?;
    let Fetched::Body { bytes, validators } = fetched else {
        return Err("a first read cannot be `not modified`".into());
    };
    let fetch_t = t.elapsed();

    let t = Instant::now();
    let (parsed, set) = parse_feed_set(&bytes[..], &ParseOptions::default());
    let parse_t = t.elapsed();
    if parsed.rejected > 0 {
        return Err(format!(
            "the generated feed has malformed lines: {:?}",
            parsed.first_rejects
        ));
    }
    let entries = set.len();

    let t = Instant::now();
    let plan = index.plan_set(feed_id, set);
    let plan_t = t.elapsed();

    let t = Instant::now();
    let stats = apply_plan(dp, &plan).ctx(|| "writing the feed maps")?;
    let apply_t = t.elapsed();

    let t = Instant::now();
    index.commit(plan).ctx(|| "committing the plan")?;
    let commit_t = t.elapsed();

    let t = Instant::now();
    cache::store(state_dir, "bench", &source, &bytes, &validators)
        .ctx(|| "keeping the last good copy")?;
    let cache_t = t.elapsed();
    Ok(Load {
        fetch: fetch_t,
        parse: parse_t,
        plan: plan_t,
        apply: apply_t,
        commit: commit_t,
        cache: cache_t,
        entries,
        added: stats.added,
        removed: stats.removed,
    })
}

/// A full load of `v1` into a fresh dataplane, then the refresh to `v2`.
pub struct Round {
    pub full: Load,
    pub refresh: Load,
    /// Heap held by the feed index after the refresh, in MiB.
    pub index_mib: f64,
}

pub fn round(v1: &Path, v2: &Path, state_dir: &Path, verify: bool, compare: bool) -> Res<Round> {
    let mut dp = Dataplane::load(&LoadOptions::default()).ctx(|| "loading the XDP program")?;
    let mut index = FeedIndex::new();
    let full = load(&mut dp, &mut index, 1, v1, state_dir)?;
    let refresh = load(&mut dp, &mut index, 1, v2, state_dir)?;
    if verify {
        let got = dp.feed_entries().ctx(|| "reading the feed maps back")?;
        let want = index.enforced_len();
        let set = index.entries(1).ok_or("feed 1 is not in the index")?;
        if got.len() != want || !got.iter().all(|(c, e)| e.feed_id == 1 && set.contains(c)) {
            return Err(format!(
                "verify: the kernel holds {} entries, the index says {want}",
                got.len()
            ));
        }
        eprintln!("  verify: the kernel holds exactly the {want} entries of the index");
    }
    if compare {
        compare_writes(index.entries(1).ok_or("feed 1 is not in the index")?)?;
    }
    Ok(Round {
        full,
        refresh,
        index_mib: index.heap_bytes() as f64 / (1024.0 * 1024.0),
    })
}

/// Where apply's time goes, and what batching buys: the same entries into
/// fresh dataplanes, hosts batched, hosts one syscall each, and the
/// prefixes batched into the tries.
fn compare_writes(set: &FeedSet) -> Res<()> {
    let e = FeedEntry { feed_id: 1 };
    let hosts = set.v4_hosts();
    let mut dp = Dataplane::load(&LoadOptions::default()).ctx(|| "loading")?;
    let t = Instant::now();
    dp.set_feed_hosts(hosts, &e).ctx(|| "batched insert")?;
    let batched = t.elapsed();
    let t = Instant::now();
    dp.remove_feed_hosts(hosts).ctx(|| "batched delete")?;
    let batched_del = t.elapsed();
    drop(dp);

    let mut dp = Dataplane::load(&LoadOptions::default()).ctx(|| "loading")?;
    let t = Instant::now();
    for h in hosts {
        dp.set_feed_entry(Cidr::host(IpAddr::from(*h)), &e)
            .ctx(|| "insert")?;
    }
    let single = t.elapsed();
    let t = Instant::now();
    let nets: Vec<Cidr> = set.nets().collect();
    dp.set_feed_nets(&nets, &e).ctx(|| "insert")?;
    let tries = t.elapsed();
    let nets = nets.len();
    eprintln!(
        "  compare: {} v4 hosts batched {:.0} ms (delete {:.0} ms) vs one syscall each {:.0} ms; {nets} prefixes into the tries {:.0} ms",
        hosts.len(),
        ms(batched),
        ms(batched_del),
        ms(single),
        ms(tries),
    );
    Ok(())
}

/// The agent's parse against the way it parsed before: streaming
/// `parse_feed_unordered` into a `Vec<Cidr>`, then `FeedSet::from_cidrs`.
#[derive(Clone, Copy, Default)]
pub struct ParseSplit {
    pub streaming: Duration,
    pub into_set: Duration,
}

/// Each is the fastest of three tries: they are tens of milliseconds
/// each, short enough for one burst of another process on these shared
/// cores to double a single try.
pub fn parse_split(body: &[u8]) -> Res<ParseSplit> {
    let o = ParseOptions::default();
    let mut best = ParseSplit {
        streaming: Duration::MAX,
        into_set: Duration::MAX,
    };
    for _ in 0..3 {
        let t = Instant::now();
        let parsed = parse_feed_unordered(body, &o).ctx(|| "parsing")?;
        let old = FeedSet::from_cidrs(&parsed.entries);
        best.streaming = best.streaming.min(t.elapsed());
        drop((parsed, old));
        let t = Instant::now();
        let new = parse_feed_set(body, &o);
        best.into_set = best.into_set.min(t.elapsed());
        drop(new);
    }
    Ok(best)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
