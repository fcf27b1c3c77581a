//! The program's maps. Names and value types come from shield-common; the
//! agent may resize the big ones at load time.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use shield_common::{maps::*, reason::COUNTER_SLOTS};

#[map(name = "CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "SRC_V4")]
pub static SRC_V4: LpmTrie<[u8; 4], SourceClass> =
    LpmTrie::with_max_entries(SRC_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "SRC_V6")]
pub static SRC_V6: LpmTrie<[u8; 16], SourceClass> =
    LpmTrie::with_max_entries(SRC_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "BAN_V4")]
pub static BAN_V4: HashMap<[u8; 4], Ban> = HashMap::with_max_entries(BAN_CAPACITY, 0);
#[map(name = "BAN_V6")]
pub static BAN_V6: HashMap<[u8; 16], Ban> = HashMap::with_max_entries(BAN_CAPACITY, 0);
#[map(name = "BAN_NET_V4")]
pub static BAN_NET_V4: LpmTrie<[u8; 4], Ban> =
    LpmTrie::with_max_entries(BAN_NET_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "BAN_NET_V6")]
pub static BAN_NET_V6: LpmTrie<[u8; 16], Ban> =
    LpmTrie::with_max_entries(BAN_NET_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "FEED_V4")]
pub static FEED_V4: HashMap<[u8; 4], FeedEntry> =
    HashMap::with_max_entries(FEED_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FEED_V6")]
pub static FEED_V6: HashMap<[u8; 16], FeedEntry> =
    HashMap::with_max_entries(FEED_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FEED_NET_V4")]
pub static FEED_NET_V4: LpmTrie<[u8; 4], FeedEntry> =
    LpmTrie::with_max_entries(FEED_NET_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FEED_NET_V6")]
pub static FEED_NET_V6: LpmTrie<[u8; 16], FeedEntry> =
    LpmTrie::with_max_entries(FEED_NET_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FEED_HITS")]
pub static FEED_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_FEEDS, 0);

#[map(name = "PORTS")]
pub static PORTS: Array<PortRule> = Array::with_max_entries(PORT_SLOTS, 0);
#[map(name = "LIMITS")]
pub static LIMITS: Array<Limits> = Array::with_max_entries(LIMIT_SLOTS, 0);

#[map(name = "BUCKETS")]
pub static BUCKETS: LruHashMap<BucketKey, Bucket> =
    LruHashMap::with_max_entries(BUCKET_CAPACITY, 0);

#[map(name = "BUCKETS_CREATED")]
pub static BUCKETS_CREATED: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(BUCKETS_CREATED_SLOTS, 0);

#[map(name = "EVENTS_LOST")]
pub static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENTS_LOST_SLOTS, 0);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Mapped into the agent's memory so that it can bump the generation with
/// one atomic add after every list change instead of a syscall.
#[map(name = "LISTS_GENERATION")]
pub static LISTS_GENERATION: Array<u64> =
    Array::with_max_entries(LISTS_GENERATION_SLOTS, BPF_F_MMAPABLE);

#[map(name = "SOURCE_CACHE")]
pub static SOURCE_CACHE: PerCpuArray<SourceMemo> =
    PerCpuArray::with_max_entries(SOURCE_CACHE_SLOTS, 0);
