//! Loading the XDP program, attaching it, and typed access to its maps.
//!
//! This is the only module that touches aya. Everything above it speaks in
//! [`Cidr`]s and shield-common types.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key,
    },
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use shield_common::{
    addr::apply_mask,
    maps::*,
    reason::{COUNTER_SLOTS, REASON_COUNT, Reason, Verdict, counter_index},
};

use crate::net::Cidr;

mod attach;
pub mod features;
mod generation;
pub mod pins;
mod read;

pub use attach::{AttachMode, Attached, detach_others, link_live, pinned_link_ids};

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

    /// The lists' current generation (see [`generation`]).
    pub fn lists_generation(&self) -> u64 {
        self.generation.get()
    }

    // ---- generic helpers ----

    fn hash_insert<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        key: K,
        value: &V,
    ) -> Result<()> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.insert(key, value, 0).map_err(map_err(name))
    }

    fn hash_remove<K: aya::Pod, V: aya::Pod>(&mut self, name: &'static str, key: K) -> Result<()> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        ignore_missing(m.remove(&key)).map_err(map_err(name))
    }

    /// The fd of hash map `name`, after checking its key and value sizes.
    fn hash_fd<K: aya::Pod, V: aya::Pod>(&self, name: &'static str) -> Result<RawFd> {
        let map = self.map(name)?;
        let _: HashMap<&MapData, K, V> = HashMap::try_from(map).map_err(map_err(name))?;
        match map {
            Map::HashMap(d) => Ok(d.fd().as_fd().as_raw_fd()),
            _ => Err(DataplaneError::MissingMap(name)),
        }
    }

    /// Sets every key in `keys` to `value`, [`BATCH`] keys per syscall.
    fn hash_update_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
        value: &V,
    ) -> Result<()> {
        let fd = self.hash_fd::<K, V>(name)?;
        if let Some(from) = update_batches(name, fd, keys, value)? {
            for k in &keys[from..] {
                self.hash_insert(name, *k, value)?;
            }
        }
        Ok(())
    }

    /// Sets `keys[i]` to `values[i]`, [`BATCH`] pairs per syscall.
    fn hash_update_pairs<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        debug_assert_eq!(keys.len(), values.len());
        let n = keys.len().min(values.len());
        if n == 0 {
            return Ok(());
        }
        let fd = self.hash_fd::<K, V>(name)?;
        let mut done = 0;
        while done < n {
            let end = n.min(done + BATCH);
            // SAFETY: both slices hold at least `end - done` plain-data keys
            // and values from `done`, of the sizes the map was checked to
            // have, and `fd` is a map fd owned by `self`.
            let (r, sent) = unsafe {
                map_batch(
                    BPF_MAP_UPDATE_BATCH,
                    fd,
                    keys[done..end].as_ptr().cast(),
                    values[done..end].as_ptr().cast(),
                    end - done,
                )
            };
            match r {
                Ok(()) => done = end,
                Err(e) if batch_unsupported(&e) => {
                    for i in done + sent..n {
                        self.hash_insert(name, keys[i], &values[i])?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(batch_err(name, "BPF_MAP_UPDATE_BATCH", e)),
            }
        }
        Ok(())
    }

    /// Deletes every key in `keys`, [`BATCH`] per syscall; absent keys are
    /// skipped.
    fn hash_delete_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
    ) -> Result<()> {
        let fd = self.hash_fd::<K, V>(name)?;
        if let Some(from) = delete_batches(name, fd, keys)? {
            for k in &keys[from..] {
                self.hash_remove::<K, V>(name, *k)?;
            }
        }
        Ok(())
    }

    /// The fd of LPM trie `name`, after checking its key and value sizes.
    fn trie_fd<K: aya::Pod, V: aya::Pod>(&self, name: &'static str) -> Result<RawFd> {
        let map = self.map(name)?;
        let _: LpmTrie<&MapData, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
        match map {
            Map::LpmTrie(d) => Ok(d.fd().as_fd().as_raw_fd()),
            _ => Err(DataplaneError::MissingMap(name)),
        }
    }

    /// Whether this kernel has batch updates for LPM tries (without them,
    /// every feed prefix costs a syscall of its own). Asked with a batch of
    /// no elements, which changes nothing: a kernel with the operation
    /// accepts it, one without refuses it before looking at the count.
    pub fn lpm_batches_supported(&self) -> Result<bool> {
        let fd = self.trie_fd::<[u8; 4], FeedEntry>(MAP_FEED_NET_V4)?;
        let none: [Key<[u8; 4]>; 0] = [];
        let value = FeedEntry::default();
        // SAFETY: zero keys and values are read; `fd` is a map fd owned by
        // `self`.
        let (r, _) = unsafe {
            map_batch(
                BPF_MAP_UPDATE_BATCH,
                fd,
                none.as_ptr().cast(),
                (&raw const value).cast(),
                0,
            )
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if batch_unsupported(&e) => Ok(false),
            Err(e) => Err(batch_err(MAP_FEED_NET_V4, "BPF_MAP_UPDATE_BATCH", e)),
        }
    }

    /// Sets every prefix in `keys` to `value` in trie `name`, batched like
    /// the hash maps: the kernel has batch operations for LPM tries too (a
    /// generic loop over its single-element ones, which saves a syscall per
    /// prefix). Kernels without them get one syscall each.
    fn trie_update_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
        value: &V,
    ) -> Result<()> {
        let fd = self.trie_fd::<K, V>(name)?;
        if let Some(from) = update_batches(name, fd, keys, value)? {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for k in &keys[from..] {
                t.insert(k, value, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Deletes every prefix in `keys` from trie `name`, batched; absent
    /// prefixes are skipped.
    fn trie_delete_many<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
    ) -> Result<()> {
        let fd = self.trie_fd::<K, V>(name)?;
        if let Some(from) = delete_batches(name, fd, keys)? {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for k in &keys[from..] {
                ignore_missing(t.remove(k)).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    fn trie_insert<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
        value: &V,
    ) -> Result<()> {
        self.trie_op(v4, v6, net, TrieOp::Insert(value))
    }

    fn trie_remove<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
    ) -> Result<()> {
        self.trie_op::<V>(v4, v6, net, TrieOp::Remove)
    }

    /// Picks the v4 or v6 trie by `net`'s family and applies `op` to it.
    fn trie_op<V: aya::Pod>(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        net: Cidr,
        op: TrieOp<'_, V>,
    ) -> Result<()> {
        fn apply<K: aya::Pod, V: aya::Pod>(
            map: &mut Map,
            name: &'static str,
            key: Key<K>,
            op: TrieOp<'_, V>,
        ) -> Result<()> {
            let mut t: LpmTrie<&mut MapData, K, V> =
                LpmTrie::try_from(map).map_err(map_err(name))?;
            match op {
                TrieOp::Insert(v) => t.insert(&key, v, 0),
                TrieOp::Remove => ignore_missing(t.remove(&key)),
            }
            .map_err(map_err(name))
        }
        let len = u32::from(net.prefix_len());
        match (net.v4_octets(), net.v6_octets()) {
            (Some(a), _) => apply(self.map_mut(v4)?, v4, Key::new(len, a), op),
            (_, Some(a)) => apply(self.map_mut(v6)?, v6, Key::new(len, a), op),
            _ => unreachable!("a Cidr is v4 or v6"),
        }
    }
}

/// Keys per batch syscall: large enough that the syscall cost vanishes,
/// small enough that the values buffer stays at a few tens of KiB.
pub const BATCH: usize = 8192;

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr` as the `BPF_MAP_*_BATCH` commands read it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One batch command over `count` keys (and values, for updates). Returns
/// the outcome and how many elements the kernel processed, which on error
/// is the index of the element that failed.
///
/// # Safety
/// `keys` (and `values` unless null) must point to `count` elements of the
/// map's key (value) size, and `fd` must be an open map fd.
unsafe fn map_batch(
    cmd: libc::c_long,
    fd: RawFd,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> (std::io::Result<()>, usize) {
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        map_fd: fd as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised batch attribute whose
    // pointers the caller vouches for; the kernel writes back only `count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    let done = (attr.count as usize).min(count);
    if r < 0 {
        (Err(std::io::Error::last_os_error()), done)
    } else {
        (Ok(()), done)
    }
}

/// Sets every key in `keys` to `value` in the map behind `fd`, [`BATCH`]
/// keys per syscall. `Some(i)` when the kernel has no batch updates for
/// this map: keys from `i` on are not written yet, for the caller to write
/// one by one.
///
/// The caller checked that `K` and `V` are the map's key and value types.
fn update_batches<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    fd: RawFd,
    keys: &[K],
    value: &V,
) -> Result<Option<usize>> {
    let values = vec![*value; keys.len().min(BATCH)];
    let mut done = 0;
    while done < keys.len() {
        let chunk = &keys[done..keys.len().min(done + BATCH)];
        // SAFETY: `chunk` and `values` are arrays of at least `chunk.len()`
        // plain-data keys and values of the sizes the map was checked to
        // have, and `fd` is an open map fd.
        let (r, n) = unsafe {
            map_batch(
                BPF_MAP_UPDATE_BATCH,
                fd,
                chunk.as_ptr().cast(),
                values.as_ptr().cast(),
                chunk.len(),
            )
        };
        match r {
            Ok(()) => done += chunk.len(),
            Err(e) if batch_unsupported(&e) => return Ok(Some(done + n)),
            Err(e) => return Err(batch_err(name, "BPF_MAP_UPDATE_BATCH", e)),
        }
    }
    Ok(None)
}

/// Deletes every key in `keys` from the map behind `fd`, [`BATCH`] per
/// syscall; absent keys are skipped (the kernel stops a batch at the first
/// one). `Some(i)` as for [`update_batches`].
fn delete_batches<K: aya::Pod>(name: &'static str, fd: RawFd, keys: &[K]) -> Result<Option<usize>> {
    let mut done = 0;
    while done < keys.len() {
        let chunk = &keys[done..keys.len().min(done + BATCH)];
        // SAFETY: as in `update_batches`; delete takes no values.
        let (r, n) = unsafe {
            map_batch(
                BPF_MAP_DELETE_BATCH,
                fd,
                chunk.as_ptr().cast(),
                std::ptr::null(),
                chunk.len(),
            )
        };
        match r {
            Ok(()) => done += chunk.len(),
            // Key `done + n` was absent: skip it and go on after it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => done += n + 1,
            Err(e) if batch_unsupported(&e) => return Ok(Some(done + n)),
            Err(e) => return Err(batch_err(name, "BPF_MAP_DELETE_BATCH", e)),
        }
    }
    Ok(None)
}

/// Kernels (or map types) without batch support answer one of these.
fn batch_unsupported(e: &std::io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

fn batch_err(map: &'static str, call: &'static str, io_error: std::io::Error) -> DataplaneError {
    DataplaneError::Map {
        map,
        source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
    }
}

/// The trie keys of `nets`, v4 and v6 apart. A host has no place in a
/// trie here (feeds keep them in the exact maps): refused.
#[allow(clippy::type_complexity)]
fn trie_keys(nets: &[Cidr]) -> Result<(Vec<Key<[u8; 4]>>, Vec<Key<[u8; 16]>>)> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for net in nets {
        if net.is_host() {
            return Err(DataplaneError::OutOfRange(format!(
                "{net} is a host; feed hosts go to the exact maps"
            )));
        }
        let len = u32::from(net.prefix_len());
        match (net.v4_octets(), net.v6_octets()) {
            (Some(a), _) => v4.push(Key::new(len, a)),
            (_, Some(a)) => v6.push(Key::new(len, a)),
            _ => unreachable!("a Cidr is v4 or v6"),
        }
    }
    Ok((v4, v6))
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

/// Refuses pinned maps whose type of key or value differs from this build's.
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

enum TrieOp<'a, V> {
    Insert(&'a V),
    Remove,
}

/// Removing what is not there is success: the goal state holds.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Counters per (verdict, reason).
#[derive(Clone, Debug)]
pub struct Counters {
    slots: [Counter; COUNTER_SLOTS as usize],
}

impl Counters {
    pub fn get(&self, v: Verdict, r: Reason) -> Counter {
        self.slots[counter_index(v, r) as usize]
    }

    pub fn packets(&self, v: Verdict, r: Reason) -> u64 {
        self.get(v, r).packets
    }

    /// All packets counted, whatever the verdict.
    pub fn total_packets(&self) -> u64 {
        self.slots.iter().map(|c| c.packets).sum()
    }

    /// (verdict, reason, counter) for every slot.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, Reason, Counter)> + '_ {
        Verdict::ALL
            .into_iter()
            .flat_map(move |v| Reason::ALL.into_iter().map(move |r| (v, r, self.get(v, r))))
    }
}

const _: () = assert!(REASON_COUNT as usize == Reason::ALL.len());

/// Where a list entry lives in the kernel.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    ExactV4([u8; 4]),
    ExactV6([u8; 16]),
    Trie,
}

/// The kernel entry of a ban on `net` ([`shield_common::maps::ban_slot`]).
pub fn ban_slot_of(net: Cidr, ipv6_prefix: u32) -> BanSlot {
    let prefix = u8::try_from(ipv6_prefix.min(128)).unwrap_or(128);
    ban_slot(!net.is_v4(), net.prefix_len(), prefix)
}

/// Bans, by [`ban_slot_of`]: v4 hosts exact; v6 networks at least
/// `ipv6_prefix` long exact at that prefix (that is what the kernel looks
/// up); the rest in the trie.
pub fn ban_placement(net: Cidr, ipv6_prefix: u32) -> Placement {
    let slot = ban_slot_of(net, ipv6_prefix);
    match (slot.map, net.v4_octets(), net.v6_octets()) {
        (BanMap::ExactV4, Some(a), _) => Placement::ExactV4(a),
        (BanMap::ExactV6, _, Some(a)) => Placement::ExactV6(apply_mask(
            a,
            &shield_common::addr::v6_mask(slot.len.into()),
        )),
        _ => Placement::Trie,
    }
}

/// Feeds: hosts exact, prefixes in the trie.
pub fn feed_placement(net: Cidr) -> Placement {
    match (net.v4_octets(), net.v6_octets()) {
        (Some(a), _) if net.is_host() => Placement::ExactV4(a),
        (_, Some(a)) if net.is_host() => Placement::ExactV6(a),
        _ => Placement::Trie,
    }
}

/// The kernel's bucket key for a source and class.
pub fn bucket_key(src: IpAddr, class: u16, tier: u16, v6_mask: &[u8; 16]) -> BucketKey {
    match src {
        IpAddr::V4(a) => BucketKey::v4(a.octets(), class, tier),
        IpAddr::V6(a) => BucketKey::v6(a.octets(), v6_mask, class, tier),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ban_placement_follows_the_kernel_lookups() {
        assert_eq!(
            ban_placement(c("192.0.2.1"), 64),
            Placement::ExactV4([192, 0, 2, 1])
        );
        assert_eq!(ban_placement(c("192.0.2.0/24"), 64), Placement::Trie);
        let Placement::ExactV6(k) = ban_placement(c("2001:db8::1"), 64) else {
            panic!()
        };
        assert_eq!(k, c("2001:db8::/64").v6_octets().unwrap());
        assert!(matches!(
            ban_placement(c("2001:db8::/64"), 64),
            Placement::ExactV6(_)
        ));
        assert_eq!(ban_placement(c("2001:db8::/48"), 64), Placement::Trie);
    }

    #[test]
    fn feed_placement_keeps_hosts_out_of_tries() {
        assert!(matches!(
            feed_placement(c("198.51.100.9")),
            Placement::ExactV4(_)
        ));
        assert!(matches!(
            feed_placement(c("2001:db8::9")),
            Placement::ExactV6(_)
        ));
        assert_eq!(feed_placement(c("198.51.100.0/31")), Placement::Trie);
        assert_eq!(feed_placement(c("2001:db8::/127")), Placement::Trie);
    }

    #[test]
    fn bucket_keys_separate_families_and_mask_v6() {
        let m = shield_common::addr::v6_mask(64);
        let a = bucket_key("2001:db8::1".parse().unwrap(), 3, 0, &m);
        let b = bucket_key("2001:db8::ffff".parse().unwrap(), 3, 0, &m);
        assert_eq!(a, b);
        let v4 = bucket_key("10.0.0.1".parse().unwrap(), 3, 0, &m);
        assert_eq!(v4.family, 4);
        assert_ne!(v4, a);
        // Each tier has its own bucket; an out-of-range tier is tier 0's.
        let tier1 = bucket_key("10.0.0.1".parse().unwrap(), 3, 1, &m);
        assert_ne!(tier1, v4);
        assert_eq!(bucket_key("10.0.0.1".parse().unwrap(), 3, 999, &m), v4);
    }
}
