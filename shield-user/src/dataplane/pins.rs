//! The pinned state under the pin directory: the bpffs mount it lives on,
//! the layout each adopted map must have, and removing it all.
//!
//! Layout: `PIN_DIR/<MAP>` for every map, `PIN_DIR/links/<mode>:<iface>`
//! for the XDP link on each interface (the mode is in the name because the
//! kernel's link info does not say which one the link was made with).
//! bpffs refuses names with dots, which VLAN interfaces (`eth0.100`) have,
//! so a dot is written `%2e`; interface names cannot hold `:` or `%`.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use shield_common::maps::*;

/// Key and value sizes of every map, as this build's program declares them.
/// A pinned map from another build with a different layout must not be
/// adopted: the program would read garbage from it.
pub const MAP_LAYOUT: [(&str, u32, u32); 21] = [
    (MAP_CONFIG, 4, size_of::<GlobalConfig>() as u32),
    (MAP_COUNTERS, 4, size_of::<Counter>() as u32),
    (MAP_SRC_V4, 8, size_of::<SourceClass>() as u32),
    (MAP_SRC_V6, 20, size_of::<SourceClass>() as u32),
    (MAP_BAN_V4, 4, size_of::<Ban>() as u32),
    (MAP_BAN_V6, 16, size_of::<Ban>() as u32),
    (MAP_BAN_NET_V4, 8, size_of::<Ban>() as u32),
    (MAP_BAN_NET_V6, 20, size_of::<Ban>() as u32),
    (MAP_FEED_V4, 4, size_of::<FeedEntry>() as u32),
    (MAP_FEED_V6, 16, size_of::<FeedEntry>() as u32),
    (MAP_FEED_NET_V4, 8, size_of::<FeedEntry>() as u32),
    (MAP_FEED_NET_V6, 20, size_of::<FeedEntry>() as u32),
    (MAP_FEED_HITS, 4, 8),
    (MAP_PORTS, 4, size_of::<PortRule>() as u32),
    (MAP_LIMITS, 4, size_of::<Limits>() as u32),
    (
        MAP_BUCKETS,
        size_of::<BucketKey>() as u32,
        size_of::<Bucket>() as u32,
    ),
    (MAP_EVENTS, 0, 0),
    (MAP_BUCKETS_CREATED, 4, 8),
    (MAP_EVENTS_LOST, 4, 8),
    (MAP_LISTS_GENERATION, 4, 8),
    (MAP_SOURCE_CACHE, 4, size_of::<SourceMemo>() as u32),
];

/// Maps whose contents the agent can lose without losing anything an
/// operator put there: rate state that refills within a second or two. A
/// pinned one with another build's layout is replaced instead of refused,
/// so an upgrade that changes it still goes through.
pub const REBUILDABLE: [&str; 2] = [MAP_BUCKETS, MAP_SOURCE_CACHE];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "pin_dir {0} is not on a bpf filesystem; pins must live under a bpffs mount such as /sys/fs/bpf"
    )]
    NotBpffs(PathBuf),
    #[error(
        "mounting bpffs on {BPFFS_ROOT}: {0} (are we root? try `mount -t bpf bpf /sys/fs/bpf`)"
    )]
    Mount(io::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a bpffs, mounting bpffs on /sys/fs/bpf
/// when it is missing there (a fresh boot without systemd's mount, or a
/// mount namespace such as `ip netns exec` gives).
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), PinError> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root).map_err(io_at(root))? {
        mount_bpffs(root)?;
        tracing::info!("mounted bpffs on {BPFFS_ROOT}");
    }
    let mut existing = pin_dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !is_bpffs(existing).map_err(io_at(existing))? {
        return Err(PinError::NotBpffs(pin_dir.to_path_buf()));
    }
    let links = pin_dir.join("links");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&links)
        .map_err(io_at(&links))?;
    Ok(())
}

fn mount_bpffs(root: &Path) -> Result<(), PinError> {
    let target = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: all pointers are NUL-terminated C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(PinError::Mount(io::Error::last_os_error()));
    }
    Ok(())
}

/// The file name of the link pin for `iface` attached in `mode`.
pub fn link_file_name(iface: &str, mode: &str) -> String {
    format!("{mode}:{}", iface.replace('.', "%2e"))
}

/// The pinned link files: (interface, mode, path).
pub fn pinned_links(pin_dir: &Path) -> Vec<(String, String, PathBuf)> {
    let Ok(rd) = fs::read_dir(pin_dir.join("links")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (mode, iface) = name.split_once(':')?;
            Some((iface.replace("%2e", "."), mode.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

/// What `--detach` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps: usize,
}

/// Removes every link (which detaches the program from its interface once
/// no process holds it) and every map pin, then the directories.
pub fn remove_all(pin_dir: &Path) -> Result<Removed, PinError> {
    let mut removed = Removed::default();
    for (iface, _, path) in pinned_links(pin_dir) {
        fs::remove_file(&path).map_err(io_at(&path))?;
        removed.links.push(iface);
    }
    for (name, _, _) in MAP_LAYOUT {
        let path = pin_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => removed.maps += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
    for dir in [pin_dir.join("links"), pin_dir.to_path_buf()] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Ok(removed)
}

/// Restricts a freshly pinned file to root.
pub(super) fn restrict(path: &Path) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

/// Pins the link with kernel id `id` at `path` through a fresh fd of its
/// own (`BPF_LINK_GET_FD_BY_ID`, then `BPF_OBJ_PIN`), leaving every other
/// handle to the link untouched.
pub fn pin_link_by_id(id: u32, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    #[repr(C)]
    struct ById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut by_id = ById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: a fully initialised attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            &mut by_id as *mut ById,
            size_of::<ById>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just handed us this fd; we own it from here.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut pin = Pin {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&owned) as u32,
        file_flags: 0,
    };
    // SAFETY: `pin` points at a NUL-terminated path that outlives the call
    // and at an open link fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &mut pin as *mut Pin,
            size_of::<Pin>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_have_no_dots_and_round_trip() {
        let n = link_file_name("eth0.100", "native");
        assert_eq!(n, "native:eth0%2e100");
        assert!(!n.contains('.'), "bpffs refuses dots");
        let dir = std::env::temp_dir().join(format!("shield-pins-{}", std::process::id()));
        fs::create_dir_all(dir.join("links")).unwrap();
        fs::write(dir.join("links").join(&n), b"").unwrap();
        let links = pinned_links(&dir);
        assert_eq!(links[0].0, "eth0.100");
        assert_eq!(links[0].1, "native");
        fs::remove_dir_all(&dir).unwrap();
    }
}
