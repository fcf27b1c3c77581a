//! `aya::Pod` for the map types: they are `#[repr(C)]`, padding explicit, and
//! valid for any bit pattern.
use crate::{event::FloodEvent, gcra::Gcra, maps::*};

macro_rules! pod {
    ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
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
