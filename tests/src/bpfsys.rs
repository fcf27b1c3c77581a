//! The few bpf(2) calls the benchmarks make on programs aya did not load:
//! the running agent's program (found by id through its pinned link) and a
//! packet generator assembled here, which is too small to deserve an eBPF
//! crate of its own.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 2;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// `union bpf_attr`, as bytes: every command here fills a prefix of it.
#[repr(C, align(8))]
struct Attr([u8; 160]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 160])
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A file descriptor of the loaded program `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A hash map with the given key and value sizes, pinned at `path`: a pin
/// as another build of shield might have left it.
pub fn pin_hash_map(path: &std::path::Path, key: u32, value: u32, max: u32) -> io::Result<()> {
    use std::os::{fd::AsRawFd, unix::ffi::OsStrExt};
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_HASH);
    a.u32(4, key);
    a.u32(8, value);
    a.u32(12, max);
    let fd = bpf(BPF_MAP_CREATE, &mut a)?;
    // SAFETY: the kernel just gave us this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a NUL in the pin path"))?;
    let mut a = Attr::new();
    a.u64(0, cpath.as_ptr() as u64);
    a.u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut a)?;
    Ok(())
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub retval: u32,
    /// Kernel-measured average per repetition, in ns.
    pub duration_ns: u32,
}

/// BPF_PROG_TEST_RUN of `fd` on `data`. `flags` and `batch` are for live
/// frames (0 otherwise).
pub fn test_run(fd: &OwnedFd, data: &[u8], repeat: u32, flags: u32, batch: u32) -> io::Result<Run> {
    use std::os::fd::AsRawFd;
    let mut a = Attr::new();
    a.u32(0, fd.as_raw_fd() as u32);
    a.u32(8, data.len() as u32);
    a.u64(16, data.as_ptr() as u64);
    a.u32(32, repeat);
    a.u32(64, flags);
    a.u32(72, batch);
    bpf(BPF_PROG_TEST_RUN, &mut a)?;
    Ok(Run {
        retval: a.get_u32(4),
        duration_ns: a.get_u32(36),
    })
}

/// One eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// Offsets in the generator's frame: Ethernet (14) + IPv4 without options.
const IP_ID: i16 = 14 + 4;
const IP_SRC_LOW: i16 = 14 + 14;

/// Loads the packet generator: an XDP program that redirects every frame
/// to `ifindex` (`bpf_redirect`), and before that sets the low 16 bits of
/// the IPv4 source to a random number below `sources` (a power of two),
/// with the IP id set so that id + source is `id_plus_src`: their sum, and
/// so the header checksum, stays what the frame was built with. Run under
/// BPF_F_TEST_XDP_LIVE_FRAMES, every frame goes out with its own source.
pub fn load_generator(ifindex: u32, sources: u32, id_plus_src: u16) -> io::Result<OwnedFd> {
    assert!(sources.is_power_of_two() && sources <= 0x8000);
    let mask = (sources - 1) as i32;
    #[rustfmt::skip]
    let prog: Vec<u64> = vec![
        insn(0x61, 6, 1, 0, 0),           // r6 = ctx->data
        insn(0x61, 7, 1, 4, 0),           // r7 = ctx->data_end
        insn(0xbf, 8, 6, 0, 0),           // r8 = r6
        insn(0x07, 8, 0, 0, 34),          // r8 += 34 (end of the IPv4 header)
        insn(0x2d, 8, 7, 8, 0),           // if r8 > r7 goto redirect
        insn(0x85, 0, 0, 0, 7),           // r0 = bpf_get_prandom_u32()
        insn(0x57, 0, 0, 0, mask),        // r0 &= sources - 1
        insn(0xb7, 3, 0, 0, i32::from(id_plus_src)), // r3 = id + source
        insn(0x1f, 3, 0, 0, 0),           // r3 -= r0
        insn(0xdc, 0, 0, 0, 16),          // both to network order
        insn(0xdc, 3, 0, 0, 16),
        insn(0x6b, 6, 0, IP_SRC_LOW, 0),  // store the source
        insn(0x6b, 6, 3, IP_ID, 0),       // store the id
        insn(0xb7, 1, 0, 0, ifindex as i32), // redirect: r1 = ifindex
        insn(0xb7, 2, 0, 0, 0),           // r2 = flags
        insn(0x85, 0, 0, 0, 23),          // call bpf_redirect
        insn(0x95, 0, 0, 0, 0),           // exit
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_XDP);
    a.u32(4, prog.len() as u32);
    a.u64(8, prog.as_ptr() as u64);
    a.u64(16, license.as_ptr() as u64);
    a.u32(24, 1);
    a.u32(28, log.len() as u32);
    a.u64(32, log.as_mut_ptr() as u64);
    a.0[48..56].copy_from_slice(b"shgen\0\0\0");
    match bpf(BPF_PROG_LOAD, &mut a) {
        // SAFETY: the kernel just gave us this descriptor.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(io::Error::new(
                e.kind(),
                format!(
                    "loading the generator: {e}: {}",
                    String::from_utf8_lossy(&log[..end])
                ),
            ))
        }
    }
}
