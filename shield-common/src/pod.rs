//! `aya::Pod` for the map types: they are `#[repr(C)]`, padding explicit, and
//! valid for any bit pattern.
use crate::{event::FloodEvent, gcra::Gcra, maps::*};

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: each type is `#[repr(C)]`, plain integers and byte arrays
        // with explicit padding fields (no implicit padding, no pointers),
        // and its size is asserted beside it: any bytes are a valid value.
        unsafe impl aya::Pod for $t {}
    )* };
}
pod!(
    GlobalConfig,
    Counter,
    SourceClass,
    Ban,
    FeedEntry,
    PortRule,
    Limits,
    BucketKey,
    Bucket,
    SourceMemo,
    Gcra,
    FloodEvent
);
