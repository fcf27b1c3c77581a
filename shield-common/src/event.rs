//! Records the kernel sends to the agent through the ring buffer.

/// `FloodEvent::kind`: which bucket ran dry.
pub const FLOOD_PACKETS: u8 = 1;
pub const FLOOD_SYNS: u8 = 2;

/// A source went over a limit. Sent when it first goes over, then at most once
/// per second per (source, class) while it stays over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodEvent {
    /// Source at the bucket's granularity: IPv4-mapped for v4, masked at
    /// `ipv6_prefix` for v6.
    pub addr: [u8; 16],
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the event was raised.
    pub ts_ns: u64,
    pub class: u16,
    pub tier: u16,
    /// 4 or 6.
    pub family: u8,
    /// [`FLOOD_PACKETS`] or [`FLOOD_SYNS`].
    pub kind: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FloodEvent>() == 32);
