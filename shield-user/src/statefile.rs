//! Small JSON state files under `state_dir`, written so that a crash at any
//! moment leaves either the old or the new content, never a torn file.

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
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
}

/// Creates `dir` (mode 0700: bans and allow entries are nobody else's
/// business) if it does not exist, and takes group and world access away
/// from one that does.
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
    let mode = fs::metadata(dir).map_err(io_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "state_dir had mode {:04o}; restricted to 0700",
            mode & 0o7777
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700)).map_err(io_err)?;
    }
    Ok(())
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
}
