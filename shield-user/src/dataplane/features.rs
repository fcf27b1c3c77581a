//! The kernel features shield's program needs, asked of the kernel itself
//! (aya's feature probes: a tiny map or program of each kind), so that a
//! kernel without one gets a sentence naming it instead of a verifier log
//! (docs/OPERATIONS.md, "Kernels tested").

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// A feature of the kernel, and since when Linux has it.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub name: &'static str,
    pub since: &'static str,
    probe: Probe,
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    Program(ProgramType),
    Map(MapType),
    XdpHelper(BpfHelper),
    XdpHelpers(&'static [BpfHelper]),
}

/// What the program cannot load without.
pub const REQUIRED: &[Feature] = &[
    Feature {
        name: "XDP programs",
        since: "Linux 4.8",
        probe: Probe::Program(ProgramType::Xdp),
    },
    Feature {
        name: "LPM trie maps",
        since: "Linux 4.11",
        probe: Probe::Map(MapType::LpmTrie),
    },
    Feature {
        name: "LRU hash maps",
        since: "Linux 4.10",
        probe: Probe::Map(MapType::LruHash),
    },
    Feature {
        name: "the BPF ring buffer",
        since: "Linux 5.8",
        probe: Probe::Map(MapType::RingBuf),
    },
    Feature {
        name: "the coarse clock helper for XDP (bpf_ktime_get_coarse_ns)",
        since: "Linux 5.11",
        probe: Probe::XdpHelper(BpfHelper::BPF_FUNC_ktime_get_coarse_ns),
    },
];

/// What SYN cookies in XDP would need, which shield does not do yet:
/// probed for the kernel table (docs/OPERATIONS.md), not needed to load.
pub const RAW_SYNCOOKIES: Feature = Feature {
    name: "the raw syncookie helpers for XDP",
    since: "Linux 6.0",
    probe: Probe::XdpHelpers(&[
        BpfHelper::BPF_FUNC_tcp_raw_gen_syncookie_ipv4,
        BpfHelper::BPF_FUNC_tcp_raw_gen_syncookie_ipv6,
        BpfHelper::BPF_FUNC_tcp_raw_check_syncookie_ipv4,
        BpfHelper::BPF_FUNC_tcp_raw_check_syncookie_ipv6,
    ]),
};

impl Feature {
    /// Whether this kernel has it. A probe that cannot tell (a syscall
    /// refused for another reason) counts as present: the load that follows
    /// then says what is wrong, in the kernel's words.
    pub fn present(&self) -> bool {
        let xdp_helper = |h: BpfHelper| is_helper_supported(ProgramType::Xdp, h).unwrap_or(true);
        match self.probe {
            Probe::Program(t) => is_program_supported(t).unwrap_or(true),
            Probe::Map(t) => is_map_supported(t).unwrap_or(true),
            Probe::XdpHelper(h) => xdp_helper(h),
            Probe::XdpHelpers(hs) => hs.iter().all(|h| xdp_helper(*h)),
        }
    }
}

/// The first required feature this kernel lacks, if any.
pub fn first_missing() -> Option<&'static Feature> {
    REQUIRED.iter().find(|f| !f.present())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_feature_names_its_kernel() {
        for f in REQUIRED.iter().chain([&RAW_SYNCOOKIES]) {
            assert!(f.since.starts_with("Linux "), "{f:?}");
            assert!(!f.name.is_empty());
        }
    }
}
