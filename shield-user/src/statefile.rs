//! Small JSON state files under `state_dir`, written so that a crash at any
//! moment leaves either the old or the new content, never a torn file.

use std::{
    fmt,
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not valid: {source}; it was moved to {moved} and ignored")]
    Corrupt {
        path: PathBuf,
        moved: PathBuf,
        source: serde_json::Error,
    },
    /// `state_dir` or something in it that another user owns or could
    /// write: the agent refuses to start on it (docs/SECURITY.md, "Files").
    #[error(
        "{path} {why}, so whoever owns or can write it decides the allow entries, bans and limit overrides shield-agent loads; {fix}"
    )]
    Untrusted {
        path: PathBuf,
        why: Exposure,
        fix: String,
    },
}

/// Why a path under `state_dir` is not the agent's alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Owned by this uid, not by the agent's effective uid `agent`.
    Owner { uid: u32, agent: u32 },
    /// Writable by its group or by every user (its mode).
    Writable { mode: u32 },
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::Owner { uid, agent } => write!(
                f,
                "is owned by uid {uid}, not by uid {agent} that shield-agent runs as"
            ),
            Exposure::Writable { mode } => write!(
                f,
                "is writable by {} (mode {mode:04o})",
                if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                }
            ),
        }
    }
}

/// Creates `dir` (mode 0700: bans and allow entries are nobody else's
/// business) if it does not exist, and takes group and world read access
/// away from one that does. Refuses ([`StateFileError::Untrusted`]) a
/// `dir`, or anything below it, that another user owns or that its group
/// or every user may write: whoever can write there decides what the agent
/// loads at start (a runtime allow entry for themselves, bans on others).
/// systemd's `StateDirectory=` makes /var/lib/shield root's on every start;
/// this is what vouches for it outside systemd, or for another `state_dir`.
pub fn ensure_dir(dir: &Path) -> Result<(), StateFileError> {
    let io_err = |source| StateFileError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    // `state_dir` itself may be a symlink to where the state lives: what
    // counts is the directory it names.
    let md = fs::metadata(dir).map_err(io_err)?;
    check_private(dir, &md)?;
    let mode = md.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "state_dir had mode {:04o}; restricted to 0700",
            mode & 0o7777
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700)).map_err(io_err)?;
    }
    check_contents(dir)
}

/// Every entry below `dir`, without following symlinks (a symlink is
/// judged by its owner; its own mode means nothing).
fn check_contents(dir: &Path) -> Result<(), StateFileError> {
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let io_err = |source| StateFileError::Io {
            path: d.clone(),
            source,
        };
        for entry in fs::read_dir(&d).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let md = fs::symlink_metadata(&path).map_err(|source| StateFileError::Io {
                path: path.clone(),
                source,
            })?;
            check_private(&path, &md)?;
            if md.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(())
}

fn check_private(path: &Path, md: &fs::Metadata) -> Result<(), StateFileError> {
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let writable = !md.file_type().is_symlink() && md.mode() & 0o022 != 0;
    let why = if md.uid() != euid {
        Exposure::Owner {
            uid: md.uid(),
            agent: euid,
        }
    } else if writable {
        Exposure::Writable {
            mode: md.mode() & 0o7777,
        }
    } else {
        return Ok(());
    };
    let owner = if euid == 0 {
        "root:root".to_string()
    } else {
        format!("{euid}:{egid}")
    };
    let p = path.display();
    let fix = if md.is_dir() {
        format!("run `chown {owner} {p} && chmod 0700 {p}`")
    } else {
        format!(
            "run `chown {owner} {p} && chmod 0600 {p}`, or remove it if shield-agent did not write it"
        )
    };
    Err(StateFileError::Untrusted {
        path: path.to_path_buf(),
        why,
        fix,
    })
}

/// Reads `path`; `Ok(None)` when it does not exist. A file that does not
/// parse is moved aside (never deleted: it may be the only copy of
/// something) and reported.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(source) => {
            let mut moved = path.as_os_str().to_owned();
            moved.push(format!(".corrupt-{}", crate::clock::unix_secs()));
            let moved = PathBuf::from(moved);
            let _ = fs::rename(path, &moved);
            Err(StateFileError::Corrupt {
                path: path.to_path_buf(),
                moved,
                source,
            })
        }
    }
}

/// Writes `value` to `path` through a temporary file, fsync and rename.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    let io_err = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(value).map_err(|e| io_err(io::Error::other(e)))?;
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    // A tmp file left by an older process keeps its mode through `open`.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err)?;
    f.write_all(&body).map_err(io_err)?;
    f.write_all(b"\n").map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_moves_corrupt_files_aside() {
        let dir = std::env::temp_dir().join(format!("shield-statefile-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let p = dir.join("x.json");
        assert_eq!(read::<Vec<u32>>(&p).unwrap(), None);
        write(&p, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(read::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2, 3]));
        fs::write(&p, b"{not json").unwrap();
        let err = read::<Vec<u32>>(&p).unwrap_err();
        let StateFileError::Corrupt { moved, .. } = &err else {
            panic!("{err}")
        };
        assert!(!p.exists());
        assert_eq!(fs::read(moved).unwrap(), b"{not json");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dir_or_file_others_could_write_is_refused_and_a_readable_dir_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o730)).unwrap();
        let err = ensure_dir(&dir).unwrap_err();
        assert!(
            matches!(
                &err,
                StateFileError::Untrusted { path, why: Exposure::Writable { mode: 0o730 }, .. } if path == &dir
            ),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 0700"), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

        let sub = dir.join("feeds");
        fs::create_dir(&sub).unwrap();
        let f = sub.join("x.cache");
        fs::write(&f, b"").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o602)).unwrap();
        let err = ensure_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, StateFileError::Untrusted { path, .. } if path == &f),
            "{err}"
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        // A symlink's own mode (0777) means nothing; its owner is us.
        std::os::unix::fs::symlink("/nonexistent", dir.join("link")).unwrap();
        ensure_dir(&dir).unwrap();
    }
}
