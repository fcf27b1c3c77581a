//! Batched map writes: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH`
//! over any map fd, [`BATCH`] elements per syscall, generic over the key
//! and value types (aya 0.14 has no batch calls). Each function answers
//! where the kernel stopped when it has no batch operation for the map,
//! so the caller writes the rest one element at a time with aya's typed
//! maps (dataplane/typed.rs); the raw `bpf(2)` call lives here and
//! nowhere else.

use std::os::fd::RawFd;

use aya::maps::MapError;

use super::{DataplaneError, Result};

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
pub(super) fn update_batches<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    fd: RawFd,
    keys: &[K],
    value: &V,
) -> Result<Option<usize>> {
    // One batch's worth of the value, shared by every batch.
    let values = vec![*value; keys.len().min(BATCH)];
    for (i, chunk) in keys.chunks(BATCH).enumerate() {
        if let Some(at) = update_pair_batches(name, fd, chunk, &values[..chunk.len()])? {
            return Ok(Some(i * BATCH + at));
        }
    }
    Ok(None)
}

/// Deletes every key in `keys` from the map behind `fd`, [`BATCH`] per
/// syscall; absent keys are skipped (the kernel stops a batch at the first
/// one). `Some(i)` as for [`update_batches`].
pub(super) fn delete_batches<K: aya::Pod>(
    name: &'static str,
    fd: RawFd,
    keys: &[K],
) -> Result<Option<usize>> {
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
pub(super) fn batch_unsupported(e: &std::io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

pub(super) fn batch_err(
    map: &'static str,
    call: &'static str,
    io_error: std::io::Error,
) -> DataplaneError {
    DataplaneError::Map {
        map,
        source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
    }
}

/// Sets `keys[i]` to `values[i]` in the map behind `fd`, [`BATCH`] pairs
/// per syscall. `Some(i)` as for [`update_batches`].
///
/// The caller checked that `K` and `V` are the map's key and value types.
pub(super) fn update_pair_batches<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    fd: RawFd,
    keys: &[K],
    values: &[V],
) -> Result<Option<usize>> {
    let n = keys.len().min(values.len());
    let mut done = 0;
    while done < n {
        let end = n.min(done + BATCH);
        // SAFETY: both slices hold at least `end - done` plain-data keys
        // and values from `done`, of the sizes the map was checked to
        // have, and `fd` is an open map fd.
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
            Err(e) if batch_unsupported(&e) => return Ok(Some(done + sent)),
            Err(e) => return Err(batch_err(name, "BPF_MAP_UPDATE_BATCH", e)),
        }
    }
    Ok(None)
}

/// Whether the map behind `fd` takes batch updates. Asked with a batch of
/// no elements, which changes nothing: a kernel with the operation accepts
/// it, one without refuses it before looking at the count.
///
/// The caller checked that `V` is the map's value type.
pub(super) fn updates_supported<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    fd: RawFd,
    value: &V,
) -> Result<bool> {
    let none: [K; 0] = [];
    // SAFETY: zero keys and values are read; `fd` is an open map fd.
    let (r, _) = unsafe {
        map_batch(
            BPF_MAP_UPDATE_BATCH,
            fd,
            none.as_ptr().cast(),
            std::ptr::from_ref(value).cast(),
            0,
        )
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if batch_unsupported(&e) => Ok(false),
        Err(e) => Err(batch_err(name, "BPF_MAP_UPDATE_BATCH", e)),
    }
}
