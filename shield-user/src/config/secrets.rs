//! Files that hold a credential (`[crowdsec]`'s `api_key_file` and
//! `password_file`) must be readable by their owner only: one that others
//! can read is a leaked credential. [`super::load`] checks the files a
//! config names as it loads it; [`super::parse`] reads nothing but its text
//! (the `config_parse` fuzz target runs it), and the agent checks again
//! each time it reads one (crowdsec/secret.rs).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::error::{Report, Span};

/// Where a config names a credential file.
pub(super) struct SecretSite {
    pub key: &'static str,
    pub path: PathBuf,
    pub at: Span,
}

/// Each named file that exists now and that others can read, reported at
/// its key.
pub(super) fn check(sites: &[SecretSite], r: &mut Report<'_>) {
    for s in sites {
        if let Err(why) = check_secret_mode(&s.path) {
            r.at(&s.at, format!("`{}`: {why}", s.key));
        }
    }
}

/// `Ok` when `path` is missing (it may be provisioned later) or readable
/// by its owner only; the error says what to do.
pub fn check_secret_mode(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(md) => secret_mode_ok(path, md.permissions().mode()),
        Err(_) => Ok(()),
    }
}

/// `mode` (of the file at `path`) gives group and others nothing.
pub fn secret_mode_ok(path: &Path, mode: u32) -> Result<(), String> {
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:04o}); it holds a credential: chmod 600 it",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}
