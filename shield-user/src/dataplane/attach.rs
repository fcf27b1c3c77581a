//! Attaching through pinned XDP links: adopt and atomically replace when a
//! link is already pinned, attach and pin when not.

use std::path::Path;

use aya::programs::{
    ProgramError,
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpMode},
};

use super::{Dataplane, DataplaneError, Result, pins};
use shield_common::maps::ALL_MAPS;

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before an skb exists.
    Native,
    /// Generic XDP, after the skb is built; works on every interface.
    Skb,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }

    fn from_suffix(s: &str) -> Option<AttachMode> {
        match s {
            "native" => Some(AttachMode::Native),
            "skb" => Some(AttachMode::Skb),
            _ => None,
        }
    }

    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// The outcome of attaching to one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: String,
    pub mode: AttachMode,
    pub link_id: u32,
    pub program_id: u32,
    /// An existing link was adopted and its program swapped atomically.
    pub replaced: bool,
}

impl Dataplane {
    /// Puts this program on `iface`. When a pinned link for `iface` exists
    /// (a previous agent, a crash, an upgrade) its program is replaced in
    /// one `BPF_LINK_UPDATE`: packets see either the old or the new program,
    /// never none. Otherwise the modes in `modes` are tried in order and the
    /// new link is pinned, so it outlives this process.
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        modes: &[AttachMode],
        pin_dir: &Path,
    ) -> Result<Attached> {
        if let Some((_, suffix, path)) = pins::pinned_links(pin_dir)
            .into_iter()
            .find(|(i, _, _)| i == iface)
        {
            match self.replace_on_link(iface, &suffix, &path) {
                Ok((link_id, program_id)) => {
                    return Ok(Attached {
                        iface: iface.to_string(),
                        mode: AttachMode::from_suffix(&suffix).unwrap_or(AttachMode::Skb),
                        link_id,
                        program_id,
                        replaced: true,
                    });
                }
                // The interface went away and came back: the old link is
                // defunct. Drop its pin and attach afresh.
                Err(e) => {
                    tracing::warn!(iface, error = %e, "pinned link unusable; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let mut last = None;
        for mode in modes {
            match self.attach_new(iface, *mode, pin_dir) {
                Ok(a) => return Ok(a),
                Err(e @ DataplaneError::NoSuchInterface(_)) => return Err(e),
                Err(e) => {
                    tracing::info!(iface, mode = mode.as_str(), error = %e, "attach failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| DataplaneError::OutOfRange("empty mode list".into())))
    }

    fn replace_on_link(&mut self, iface: &str, suffix: &str, path: &Path) -> Result<(u32, u32)> {
        let pinned = PinnedLink::from_pin(path).map_err(DataplaneError::Link)?;
        let fd: FdLink = pinned.into();
        let link_id = fd.info().map_err(DataplaneError::Link)?.id();
        let xdp_link = XdpLink::try_from(fd).map_err(DataplaneError::Link)?;
        let prog = self.program()?;
        let id = prog.attach_to_link(xdp_link)?;
        let owned = prog.take_link(id)?;
        let held = FdLink::try_from(owned).map_err(DataplaneError::Link)?;
        let mode = AttachMode::from_suffix(suffix).unwrap_or(AttachMode::Skb);
        self.links.insert(iface.to_string(), (mode, held));
        let program_id = self.program()?.info()?.id();
        if self.link_program_id(path)? != program_id {
            return Err(DataplaneError::OutOfRange(format!(
                "link {link_id} did not take program {program_id}"
            )));
        }
        Ok((link_id, program_id))
    }

    fn attach_new(&mut self, iface: &str, mode: AttachMode, pin_dir: &Path) -> Result<Attached> {
        let prog = self.program()?;
        let id = prog.attach(iface, mode.flags()).map_err(|e| match e {
            ProgramError::UnknownInterface { name } => DataplaneError::NoSuchInterface(name),
            other => DataplaneError::Attach {
                iface: iface.to_string(),
                mode: mode.as_str(),
                source: Box::new(other),
            },
        })?;
        let link = prog.take_link(id)?;
        let fd = FdLink::try_from(link).map_err(DataplaneError::Link)?;
        let link_id = fd.info().map_err(DataplaneError::Link)?.id();
        let path = pin_dir
            .join("links")
            .join(pins::link_file_name(iface, mode.as_str()));
        let pinned = fd.pin(&path).map_err(|e| DataplaneError::Pin {
            path: path.clone(),
            source: e,
        })?;
        pins::restrict(&path);
        self.links
            .insert(iface.to_string(), (mode, FdLink::from(pinned)));
        let program_id = self.program()?.info()?.id();
        Ok(Attached {
            iface: iface.to_string(),
            mode,
            link_id,
            program_id,
            replaced: false,
        })
    }

    /// Lets go of the links of interfaces not in `keep` (their pins are
    /// removed separately), so they detach.
    pub fn release_links(&mut self, keep: &[String]) {
        self.links.retain(|iface, _| keep.contains(iface));
    }

    /// Which of our links and maps have no pin under `pin_dir` (bpffs
    /// unmounted, remounted or cleared under a running agent).
    pub fn missing_pins(&self, pin_dir: &Path) -> Vec<String> {
        let mut missing: Vec<String> = self
            .links
            .iter()
            .map(|(iface, (mode, _))| {
                pin_dir
                    .join("links")
                    .join(pins::link_file_name(iface, mode.as_str()))
            })
            .chain(
                self.ebpf
                    .maps()
                    .filter(|(name, _)| ALL_MAPS.contains(name))
                    .map(|(name, _)| pin_dir.join(name)),
            )
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        missing.sort();
        missing
    }

    /// Pins again whatever [`Dataplane::missing_pins`] reports, so a
    /// restarted agent adopts this state instead of starting empty.
    /// `pin_dir` must already be on a bpffs.
    pub fn repin(&mut self, pin_dir: &Path) -> Result<usize> {
        let mut n = 0;
        for (name, map) in self.ebpf.maps().filter(|(n, _)| ALL_MAPS.contains(n)) {
            let path = pin_dir.join(name);
            if !path.exists() {
                map.pin(&path).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    source: e,
                })?;
                pins::restrict(&path);
                n += 1;
            }
        }
        let ifaces: Vec<String> = self.links.keys().cloned().collect();
        for iface in ifaces {
            let Some((mode, fd)) = self.links.remove(&iface) else {
                continue;
            };
            let path = pin_dir
                .join("links")
                .join(pins::link_file_name(&iface, mode.as_str()));
            if path.exists() {
                self.links.insert(iface, (mode, fd));
                continue;
            }
            let id = fd.info().map_err(DataplaneError::Link)?.id();
            self.links.insert(iface, (mode, fd));
            // aya's FdLink::pin consumes our handle, and a failed pin would
            // then drop the link: pin a second reference instead.
            pins::pin_link_by_id(id, &path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: aya::pin::PinError::SyscallError(aya::sys::SyscallError {
                    call: "BPF_OBJ_PIN",
                    io_error: e,
                }),
            })?;
            pins::restrict(&path);
            n += 1;
        }
        Ok(n)
    }

    fn link_program_id(&self, path: &Path) -> Result<u32> {
        let fd: FdLink = PinnedLink::from_pin(path)
            .map_err(DataplaneError::Link)?
            .into();
        Ok(fd.info().map_err(DataplaneError::Link)?.program_id())
    }
}

/// Removes the pinned links of interfaces not in `keep` (a reload or a
/// restart that dropped an interface from the config).
pub fn detach_others(pin_dir: &Path, keep: &[String]) -> Vec<String> {
    let mut gone = Vec::new();
    for (iface, _, path) in pins::pinned_links(pin_dir) {
        if !keep.contains(&iface) && std::fs::remove_file(&path).is_ok() {
            gone.push(iface);
        }
    }
    gone
}

/// The link and program ids pinned for `iface`, if any.
pub fn pinned_link_ids(pin_dir: &Path, iface: &str) -> Option<(u32, u32)> {
    let (_, _, path) = pins::pinned_links(pin_dir)
        .into_iter()
        .find(|(i, _, _)| i == iface)?;
    let fd: FdLink = PinnedLink::from_pin(path).ok()?.into();
    let info = fd.info().ok()?;
    Some((info.id(), info.program_id()))
}

/// Whether the pinned link for `iface` still holds the program on that
/// interface. A link stays pinned when its interface is deleted or someone
/// detaches it (`bpftool link detach`), but the kernel then reports it on
/// no interface (ifindex 0): the interface is unfiltered.
pub fn link_live(pin_dir: &Path, iface: &str) -> bool {
    let Some((_, _, path)) = pins::pinned_links(pin_dir)
        .into_iter()
        .find(|(i, _, _)| i == iface)
    else {
        return false;
    };
    xdp_link_ifindex(&path).is_some_and(|i| i != 0)
}

/// The ifindex an XDP link is attached to, from the kernel's link info.
fn xdp_link_ifindex(pin: &Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;

    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).ok()?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut get = [0u64; 2];
    get[0] = path.as_ptr() as u64;
    // SAFETY: the attr points at a live NUL-terminated path; the size is
    // what the kernel reads for this command.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            get.as_mut_ptr(),
            std::mem::size_of_val(&get),
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as libc::c_int;
    // struct bpf_link_info: type, id, prog_id, then (8-aligned, at byte 16)
    // a union whose xdp member starts with ifindex. Zeroed room for the
    // rest of the union, as the kernel requires.
    let mut info = [0u32; 32];
    // union bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len, info.
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd as u32) | (u64::try_from(std::mem::size_of_val(&info)).ok()? << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: attr points at a buffer of the length it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    (rc == 0 && info[0] == BPF_LINK_TYPE_XDP).then_some(info[4])
}
