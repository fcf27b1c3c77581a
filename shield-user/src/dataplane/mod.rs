//! Loading the XDP program, attaching it, and typed access to its maps.
//!
//! This is the only module that touches aya. Everything above it speaks in
//! [`Cidr`]s and shield-common types.

use std::{net::IpAddr, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key,
    },
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use shield_common::{maps::*, reason::COUNTER_SLOTS};

use crate::net::Cidr;

mod attach;
mod batch;
mod counters;
pub mod features;
mod generation;
pub mod pins;
mod placement;
mod read;
mod typed;

pub use attach::{AttachMode, Attached, detach_others, link_live, pinned_link_ids};
pub use aya_log::Level as KernelLogLevel;
pub use batch::BATCH;
pub use counters::Counters;
pub use placement::{Placement, ban_placement, ban_slot_of, bucket_key, feed_placement};
use typed::trie_keys;

/// The XDP object this build of shield carries.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shield"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program `{PROGRAM_NAME}`: {0}")]
    Program(#[from] ProgramError),
    #[error("map `{map}`: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("map `{0}` is missing from the object")]
    MissingMap(&'static str),
    #[error("program `{PROGRAM_NAME}` is missing from the object")]
    MissingProgram,
    #[error("{0} is out of range")]
    OutOfRange(String),
    #[error("interface `{0}` does not exist (list interfaces with `ip link`)")]
    NoSuchInterface(String),
    #[error("attaching to `{iface}` in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        source: Box<ProgramError>,
    },
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error(
        "pinned map {path} does not match this build ({detail}); it was left by an incompatible shield version. `shield-agent --detach` removes the old pins (bans come back from the journal)"
    )]
    Incompatible { path: PathBuf, detail: String },
    #[error("removing the outdated pin {path}: {source}")]
    Unpin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mapping map `{0}` into memory: {1}")]
    Mmap(&'static str, std::io::Error),
    #[error(
        "this kernel lacks {} ({} and later), which shield's XDP program needs, so shield does not start and filters nothing on this host; the oldest kernel it is tested on is 6.1 (docs/OPERATIONS.md, \"Kernels tested\")",
        .0.name,
        .0.since
    )]
    MissingFeature(&'static features::Feature),
}

/// The program's log could not be read (aya-log's own error).
#[derive(Debug, thiserror::Error)]
#[error("reading the XDP program's log: {0}")]
pub struct KernelLogError(#[source] aya_log::Error);

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// `e`, or the missing kernel feature that explains it.
fn explain_refusal(e: impl Into<DataplaneError>) -> DataplaneError {
    match features::first_missing() {
        Some(f) => DataplaneError::MissingFeature(f),
        None => e.into(),
    }
}

/// How to load the program.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin (or adopt already pinned) maps under this bpffs directory. `None`
    /// creates private maps, which is what tests want.
    pub pin_dir: Option<PathBuf>,
    /// Override the capacity of resizable maps (`BUCKETS`, `FEED_V4`, ...).
    pub capacities: Vec<(&'static str, u32)>,
    /// The most verbose level the program logs its rare paths at
    /// (shield-ebpf/src/rare.rs, all at debug); `None` logs nothing. Set
    /// before the program is verified, so a level that leaves them out
    /// leaves them out of the program itself.
    pub kernel_log: Option<KernelLogLevel>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    /// Our own reference to each interface's XDP link, besides its pin:
    /// if the pins go (bpffs unmounted or remounted under us), the links,
    /// and so enforcement, live on as long as this process does.
    links: std::collections::BTreeMap<String, (AttachMode, aya::programs::links::FdLink)>,
    /// Bumped after every list change; see [`generation`].
    generation: generation::Generation,
    /// The level the program was loaded to log at ([`LoadOptions`]).
    kernel_log: Option<aya_log::Level>,
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

impl Dataplane {
    /// Loads [`OBJECT`] into the kernel (maps created or adopted, program
    /// verified) without attaching it anywhere.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        Self::load_object(OBJECT, opts)
    }

    /// As [`Dataplane::load`], from another build of the program.
    pub fn load_object(object: &[u8], opts: &LoadOptions) -> Result<Self> {
        if let Some(dir) = &opts.pin_dir {
            check_pinned_layout(dir)?;
        }
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        for (name, cap) in &opts.capacities {
            loader.map_max_entries(name, *cap);
        }
        // aya-log's own default, when not overridden, is every level. An
        // object built before the program logged (`--bpf-object`, an
        // upgrade drill) has no such global, and needs none.
        let log_level: u8 = opts.kernel_log.map_or(0, |l| l as u8);
        loader.override_global(aya_log::LEVEL, &log_level, false);
        // A kernel without a feature the program needs refuses the maps or
        // the program with errno and a verifier log; say which feature
        // instead (probed only then: a load that works needs no probe).
        let mut ebpf = loader.load(object).map_err(explain_refusal)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        prog.load().map_err(explain_refusal)?;
        let gen_map = ebpf
            .map(MAP_LISTS_GENERATION)
            .ok_or(DataplaneError::MissingMap(MAP_LISTS_GENERATION))?;
        let generation = generation::Generation::map(gen_map, crate::clock::monotonic_ns())
            .map_err(|e| DataplaneError::Mmap(MAP_LISTS_GENERATION, e))?;
        let mut dp = Dataplane {
            ebpf,
            links: Default::default(),
            generation,
            kernel_log: opts.kernel_log,
        };
        // A fresh CONFIG array reads as all zeroes; make it a valid config.
        if dp.config()?.ipv6_prefix == 0 {
            dp.set_config(&GlobalConfig::default())?;
        }
        Ok(dp)
    }

    pub fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?)
    }

    /// Loads the object's empty baseline program (for benchmarks) and returns it.
    pub fn noop_program(&mut self) -> Result<&mut Xdp> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(NOOP_PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        Ok(p)
    }

    /// Attaches to `iface` in `mode`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<XdpLinkId> {
        Ok(self.program()?.attach(iface, mode)?)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    // ---- CONFIG ----

    pub fn config(&self) -> Result<GlobalConfig> {
        let a: Array<&MapData, GlobalConfig> =
            Array::try_from(self.map(MAP_CONFIG)?).map_err(map_err(MAP_CONFIG))?;
        a.get(&0, 0).map_err(map_err(MAP_CONFIG))
    }

    pub fn set_config(&mut self, cfg: &GlobalConfig) -> Result<()> {
        if cfg.ipv6_prefix > 128 {
            return Err(DataplaneError::OutOfRange(format!(
                "ipv6_prefix {}",
                cfg.ipv6_prefix
            )));
        }
        let mut a: Array<&mut MapData, GlobalConfig> =
            Array::try_from(self.map_mut(MAP_CONFIG)?).map_err(map_err(MAP_CONFIG))?;
        a.set(0, cfg, 0).map_err(map_err(MAP_CONFIG))
    }

    // ---- SRC (allowlist, tiers, ACL sets) ----

    pub fn set_source_class(&mut self, net: Cidr, class: &SourceClass) -> Result<()> {
        let r = self.trie_insert(MAP_SRC_V4, MAP_SRC_V6, net, class);
        self.lists_changed(r)
    }

    pub fn remove_source_class(&mut self, net: Cidr) -> Result<()> {
        let r = self.trie_remove::<SourceClass>(MAP_SRC_V4, MAP_SRC_V6, net);
        self.lists_changed(r)
    }

    // ---- bans ----

    /// Bans `net` until `ban.expires_ns`, in the entry [`ban_placement`]
    /// gives it. This writes the entry as it is: when several bans share
    /// it, the caller passes their union (the agent's ban book does).
    pub fn set_ban(&mut self, net: Cidr, ban: &Ban) -> Result<()> {
        let r = match ban_placement(net, self.config()?.ipv6_prefix) {
            Placement::ExactV4(k) => self.hash_insert(MAP_BAN_V4, k, ban),
            Placement::ExactV6(k) => self.hash_insert(MAP_BAN_V6, k, ban),
            Placement::Trie => self.set_trie_ban(net, ban),
        };
        self.lists_changed(r)
    }

    /// A CIDR-trie ban, always with its prefix length in the value: the
    /// program needs it to look below an expired match (see
    /// [`Ban::prefix_len`]), so no path may write a trie ban without it.
    fn set_trie_ban(&mut self, net: Cidr, ban: &Ban) -> Result<()> {
        let value = ban.in_trie(net.prefix_len());
        self.trie_insert(MAP_BAN_NET_V4, MAP_BAN_NET_V6, net, &value)
    }

    /// Many bans at once, each with its own value: exact entries go in
    /// batches ([`BATCH`] per syscall), prefixes one by one. What a
    /// CrowdSec resync of 100k decisions needs to be quick.
    pub fn set_bans(&mut self, bans: &[(Cidr, Ban)]) -> Result<()> {
        let r = (|| {
            let prefix = self.config()?.ipv6_prefix;
            let (mut k4, mut v4, mut k6, mut v6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (net, ban) in bans {
                match ban_placement(*net, prefix) {
                    Placement::ExactV4(k) => {
                        k4.push(k);
                        v4.push(*ban);
                    }
                    Placement::ExactV6(k) => {
                        k6.push(k);
                        v6.push(*ban);
                    }
                    Placement::Trie => self.set_trie_ban(*net, ban)?,
                }
            }
            self.hash_update_pairs(MAP_BAN_V4, &k4, &v4)?;
            self.hash_update_pairs(MAP_BAN_V6, &k6, &v6)
        })();
        self.lists_changed(r)
    }

    pub fn remove_ban(&mut self, net: Cidr) -> Result<()> {
        let r = match ban_placement(net, self.config()?.ipv6_prefix) {
            Placement::ExactV4(k) => self.hash_remove::<[u8; 4], Ban>(MAP_BAN_V4, k),
            Placement::ExactV6(k) => self.hash_remove::<[u8; 16], Ban>(MAP_BAN_V6, k),
            Placement::Trie => self.trie_remove::<Ban>(MAP_BAN_NET_V4, MAP_BAN_NET_V6, net),
        };
        self.lists_changed(r)
    }

    /// `max_entries` of map `name`, as the kernel made it (a load may
    /// override the default; see [`LoadOptions::capacities`]).
    pub fn capacity(&self, name: &'static str) -> Result<u32> {
        let (Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::Array(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data)) = self.map(name)?
        else {
            return Err(DataplaneError::MissingMap(name));
        };
        Ok(data.info().map_err(map_err(name))?.max_entries())
    }

    /// The keys of the exact v6 ban map (networks at the configured prefix).
    pub fn v6_exact_ban_keys(&self) -> Result<Vec<[u8; 16]>> {
        let m: HashMap<&MapData, [u8; 16], Ban> =
            HashMap::try_from(self.map(MAP_BAN_V6)?).map_err(map_err(MAP_BAN_V6))?;
        m.keys().map(|k| k.map_err(map_err(MAP_BAN_V6))).collect()
    }

    pub fn remove_v6_exact_ban(&mut self, key: [u8; 16]) -> Result<()> {
        let r = self.hash_remove::<[u8; 16], Ban>(MAP_BAN_V6, key);
        self.lists_changed(r)
    }

    // ---- feeds ----

    /// Hosts (/32, /128) go to the exact maps, prefixes to the tries.
    pub fn set_feed_entry(&mut self, net: Cidr, entry: &FeedEntry) -> Result<()> {
        let r = match feed_placement(net) {
            Placement::ExactV4(k) => self.hash_insert(MAP_FEED_V4, k, entry),
            Placement::ExactV6(k) => self.hash_insert(MAP_FEED_V6, k, entry),
            Placement::Trie => self.trie_insert(MAP_FEED_NET_V4, MAP_FEED_NET_V6, net, entry),
        };
        self.lists_changed(r)
    }

    pub fn remove_feed_entry(&mut self, net: Cidr) -> Result<()> {
        let r = match feed_placement(net) {
            Placement::ExactV4(k) => self.hash_remove::<[u8; 4], FeedEntry>(MAP_FEED_V4, k),
            Placement::ExactV6(k) => self.hash_remove::<[u8; 16], FeedEntry>(MAP_FEED_V6, k),
            Placement::Trie => self.trie_remove::<FeedEntry>(MAP_FEED_NET_V4, MAP_FEED_NET_V6, net),
        };
        self.lists_changed(r)
    }

    /// Writes `entry` for every host in `keys`: v4 hosts (`N == 4`) to
    /// `FEED_V4`, v6 hosts (`N == 16`) to `FEED_V6`. Batched (one syscall per
    /// [`BATCH`] keys instead of one per key: a million-entry feed loads in
    /// a fraction of the time), falling back to single updates on kernels
    /// without batch operations for hash maps.
    pub fn set_feed_hosts<const N: usize>(
        &mut self,
        keys: &[[u8; N]],
        entry: &FeedEntry,
    ) -> Result<()> {
        let r = (|| {
            let name = feed_host_map::<N>()?;
            self.hash_update_many(name, keys, entry)
        })();
        self.lists_changed(r)
    }

    /// Deletes every host in `keys` from `FEED_V4` (`N == 4`) or `FEED_V6`
    /// (`N == 16`); keys already absent are fine. Batched like
    /// [`Dataplane::set_feed_hosts`].
    pub fn remove_feed_hosts<const N: usize>(&mut self, keys: &[[u8; N]]) -> Result<()> {
        let r = (|| {
            let name = feed_host_map::<N>()?;
            self.hash_delete_many::<[u8; N], FeedEntry>(name, keys)
        })();
        self.lists_changed(r)
    }

    /// Writes `entry` for every prefix in `nets` (none of them a host):
    /// batched into the v4 and v6 tries.
    pub fn set_feed_nets(&mut self, nets: &[Cidr], entry: &FeedEntry) -> Result<()> {
        let r = (|| {
            let (v4, v6) = trie_keys(nets)?;
            self.trie_update_many(MAP_FEED_NET_V4, &v4, entry)?;
            self.trie_update_many(MAP_FEED_NET_V6, &v6, entry)
        })();
        self.lists_changed(r)
    }

    /// Deletes every prefix in `nets` (none of them a host) from the tries;
    /// prefixes already absent are fine.
    pub fn remove_feed_nets(&mut self, nets: &[Cidr]) -> Result<()> {
        let r = (|| {
            let (v4, v6) = trie_keys(nets)?;
            self.trie_delete_many::<[u8; 4], FeedEntry>(MAP_FEED_NET_V4, &v4)?;
            self.trie_delete_many::<[u8; 16], FeedEntry>(MAP_FEED_NET_V6, &v6)
        })();
        self.lists_changed(r)
    }

    /// What the program finds for a packet from `addr`: the exact host
    /// entry, else the longest matching prefix. The same two lookups, in the
    /// same order, as the XDP program.
    pub fn feed_match(&self, addr: IpAddr) -> Result<Option<FeedEntry>> {
        fn found<T>(
            r: std::result::Result<T, MapError>,
        ) -> std::result::Result<Option<T>, MapError> {
            match r {
                Ok(v) => Ok(Some(v)),
                Err(MapError::KeyNotFound) => Ok(None),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        match addr {
            IpAddr::V4(a) => {
                let m: HashMap<&MapData, [u8; 4], FeedEntry> =
                    HashMap::try_from(self.map(MAP_FEED_V4)?).map_err(map_err(MAP_FEED_V4))?;
                if let Some(e) = found(m.get(&a.octets(), 0)).map_err(map_err(MAP_FEED_V4))? {
                    return Ok(Some(e));
                }
                let t: LpmTrie<&MapData, [u8; 4], FeedEntry> =
                    LpmTrie::try_from(self.map(MAP_FEED_NET_V4)?)
                        .map_err(map_err(MAP_FEED_NET_V4))?;
                found(t.get(&Key::new(32, a.octets()), 0)).map_err(map_err(MAP_FEED_NET_V4))
            }
            IpAddr::V6(a) => {
                let m: HashMap<&MapData, [u8; 16], FeedEntry> =
                    HashMap::try_from(self.map(MAP_FEED_V6)?).map_err(map_err(MAP_FEED_V6))?;
                if let Some(e) = found(m.get(&a.octets(), 0)).map_err(map_err(MAP_FEED_V6))? {
                    return Ok(Some(e));
                }
                let t: LpmTrie<&MapData, [u8; 16], FeedEntry> =
                    LpmTrie::try_from(self.map(MAP_FEED_NET_V6)?)
                        .map_err(map_err(MAP_FEED_NET_V6))?;
                found(t.get(&Key::new(128, a.octets()), 0)).map_err(map_err(MAP_FEED_NET_V6))
            }
        }
    }

    /// Packets dropped because of `feed_id`, summed over CPUs.
    pub fn feed_hits(&self, feed_id: u32) -> Result<u64> {
        let a: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(MAP_FEED_HITS)?).map_err(map_err(MAP_FEED_HITS))?;
        Ok(a.get(&feed_id, 0)
            .map_err(map_err(MAP_FEED_HITS))?
            .iter()
            .sum())
    }

    // ---- ports and limits ----

    pub fn set_port_rule(&mut self, proto: u8, port: u16, rule: &PortRule) -> Result<()> {
        let slot = port_slot(proto, port)
            .ok_or_else(|| DataplaneError::OutOfRange(format!("protocol {proto} has no ports")))?;
        let mut a: Array<&mut MapData, PortRule> =
            Array::try_from(self.map_mut(MAP_PORTS)?).map_err(map_err(MAP_PORTS))?;
        a.set(slot, rule, 0).map_err(map_err(MAP_PORTS))
    }

    pub fn set_limits(&mut self, tier: u16, class: u16, limits: &Limits) -> Result<()> {
        if u32::from(tier) >= MAX_TIERS || u32::from(class) >= MAX_CLASSES {
            return Err(DataplaneError::OutOfRange(format!(
                "tier {tier} / class {class}"
            )));
        }
        let mut a: Array<&mut MapData, Limits> =
            Array::try_from(self.map_mut(MAP_LIMITS)?).map_err(map_err(MAP_LIMITS))?;
        a.set(limits_slot(tier, class), limits, 0)
            .map_err(map_err(MAP_LIMITS))
    }

    // ---- buckets ----

    pub fn bucket(&self, key: &BucketKey) -> Result<Option<Bucket>> {
        let m: HashMap<&MapData, BucketKey, Bucket> =
            HashMap::try_from(self.map(MAP_BUCKETS)?).map_err(map_err(MAP_BUCKETS))?;
        match m.get(key, 0) {
            Ok(b) => Ok(Some(b)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_BUCKETS)(e)),
        }
    }

    pub fn set_bucket(&mut self, key: &BucketKey, b: &Bucket) -> Result<()> {
        let mut m: HashMap<&mut MapData, BucketKey, Bucket> =
            HashMap::try_from(self.map_mut(MAP_BUCKETS)?).map_err(map_err(MAP_BUCKETS))?;
        m.insert(key, b, 0).map_err(map_err(MAP_BUCKETS))
    }

    /// Buckets the program has created since the map was made, summed over
    /// CPUs. Buckets are only ever removed by LRU eviction, so
    /// `buckets_created() - bucket_keys().len()` is the number evicted.
    pub fn buckets_created(&self) -> Result<u64> {
        let a: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(MAP_BUCKETS_CREATED)?)
            .map_err(map_err(MAP_BUCKETS_CREATED))?;
        Ok(a.get(&0, 0)
            .map_err(map_err(MAP_BUCKETS_CREATED))?
            .iter()
            .sum())
    }

    /// Flood events the program could not put in the full ring buffer,
    /// summed over CPUs.
    pub fn events_lost(&self) -> Result<u64> {
        let a: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(MAP_EVENTS_LOST)?).map_err(map_err(MAP_EVENTS_LOST))?;
        Ok(a.get(&0, 0).map_err(map_err(MAP_EVENTS_LOST))?.iter().sum())
    }

    /// Every live bucket's key: one syscall per entry, so for tests and
    /// diagnostics, not for every scrape.
    pub fn bucket_keys(&self) -> Result<Vec<BucketKey>> {
        let m: HashMap<&MapData, BucketKey, Bucket> =
            HashMap::try_from(self.map(MAP_BUCKETS)?).map_err(map_err(MAP_BUCKETS))?;
        m.keys().map(|k| k.map_err(map_err(MAP_BUCKETS))).collect()
    }

    /// The bucket key the kernel uses for `src`, `class` and `tier`.
    pub fn bucket_key(&self, src: IpAddr, class: u16, tier: u16) -> Result<BucketKey> {
        let cfg = self.config()?;
        Ok(bucket_key(src, class, tier, &cfg.ipv6_mask))
    }

    // ---- counters ----

    /// Packet and byte counters per (verdict, reason), summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let a: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.map(MAP_COUNTERS)?).map_err(map_err(MAP_COUNTERS))?;
        let mut out = Counters {
            slots: [Counter::default(); COUNTER_SLOTS as usize],
        };
        for i in 0..COUNTER_SLOTS {
            let per_cpu: PerCpuValues<Counter> = a.get(&i, 0).map_err(map_err(MAP_COUNTERS))?;
            for c in per_cpu.iter() {
                out.slots[i as usize].packets += c.packets;
                out.slots[i as usize].bytes += c.bytes;
            }
        }
        Ok(out)
    }

    /// The ring buffer of flood events, for the agent's event loop.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let m = self
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or(DataplaneError::MissingMap(MAP_EVENTS))?;
        aya::maps::RingBuf::try_from(m).map_err(map_err(MAP_EVENTS))
    }

    /// Publishes a list change to the program (whether or not `r` says it
    /// went through: a failed batch may have written part of it).
    fn lists_changed<T>(&self, r: Result<T>) -> Result<T> {
        self.generation.bump();
        r
    }

    /// The reader of the program's log records (shield-ebpf/src/rare.rs),
    /// handing each to `logger`; `None` when the program was loaded with
    /// its log off. Taken once.
    pub fn take_kernel_log<L: log::Log>(
        &mut self,
        logger: L,
    ) -> Result<Option<aya_log::EbpfLogger<L>>, KernelLogError> {
        if self.kernel_log.is_none() {
            return Ok(None);
        }
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .map(Some)
            .map_err(KernelLogError)
    }

    /// The lists' current generation (see [`generation`]).
    pub fn lists_generation(&self) -> u64 {
        self.generation.get()
    }
}

/// The exact feed map for hosts of `N` bytes.
fn feed_host_map<const N: usize>() -> Result<&'static str> {
    match N {
        4 => Ok(MAP_FEED_V4),
        16 => Ok(MAP_FEED_V6),
        _ => Err(DataplaneError::OutOfRange(format!(
            "a {N}-byte feed host key"
        ))),
    }
}

fn check_pinned_layout(dir: &std::path::Path) -> Result<()> {
    for (name, key, value) in pins::MAP_LAYOUT {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path).map_err(map_err(name))?;
        if (key, value) != (0, 0) && (info.key_size(), info.value_size()) != (key, value) {
            if pins::REBUILDABLE.contains(&name) {
                // The old program keeps its own copy until the new one
                // replaces it on the link; only the pin goes.
                tracing::warn!(
                    "pinned map {} has another build's layout (key/value sizes {}/{}, now {key}/{value}); replacing it, so rate limits start afresh",
                    path.display(),
                    info.key_size(),
                    info.value_size()
                );
                std::fs::remove_file(&path).map_err(|source| DataplaneError::Unpin {
                    path: path.clone(),
                    source,
                })?;
                continue;
            }
            return Err(DataplaneError::Incompatible {
                path,
                detail: format!(
                    "key/value sizes {}/{}, expected {key}/{value}",
                    info.key_size(),
                    info.value_size()
                ),
            });
        }
    }
    Ok(())
}
