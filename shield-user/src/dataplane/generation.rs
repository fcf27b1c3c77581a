//! The lists' generation (`LISTS_GENERATION`), mapped into our memory.
//!
//! The program remembers a source's classification per CPU in
//! `SOURCE_CACHE`, stamped with the generation it was looked up at (see
//! `shield_common::maps::SourceMemo` and docs/ARCHITECTURE.md).
//! Every change to the allowlist/tier, ban or feed maps must be followed by
//! a bump, or a source the change concerns keeps its old verdict. A bump is
//! one atomic add on shared memory, not a syscall, so a feed of a million
//! entries can bump after every batch at no cost.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Map, MapData};

/// The mapped page holding the generation.
#[derive(Debug)]
pub struct Generation {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through the atomic.
unsafe impl Send for Generation {}
// SAFETY: as for Send.
unsafe impl Sync for Generation {}

impl Generation {
    /// Maps the array's value page and moves the generation past every
    /// value a stamp can hold: an adopted bucket may carry a stamp from a
    /// previous agent, and if the generation map was lost (pins removed by
    /// hand) it starts again from 0. Starting from the monotonic clock in
    /// nanoseconds is safe because the generation grows far slower than the
    /// clock (one step per change, and each change is a syscall), and both
    /// the clock and the pins reset at boot.
    pub fn map(map: &Map, now_ns: u64) -> io::Result<Self> {
        let data: &MapData = match map {
            Map::Array(d) => d,
            _ => return Err(io::Error::other("LISTS_GENERATION is not an array")),
        };
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        // SAFETY: a fresh shared mapping of the map's one value page; the
        // kernel checks that the map is mmapable and the length fits.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        let g = Generation { ptr, len: page };
        g.atomic().fetch_max(now_ns, Ordering::SeqCst);
        g.bump();
        Ok(g)
    }

    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped for our lifetime and its first eight
        // bytes are the array's u64 value, page-aligned.
        unsafe { self.ptr.as_ref() }
    }

    /// Called after a list change has reached the maps.
    pub fn bump(&self) {
        self.atomic().fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self) -> u64 {
        self.atomic().load(Ordering::SeqCst)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
