//! Credentials on disk, read when they are used: a key or password file
//! that other users can read is a leaked credential, so it is refused
//! rather than used (the rule itself: config/secrets.rs).

use std::{fs, io, os::unix::fs::PermissionsExt, path::Path};

use crate::config::secret_mode_ok;

/// The credential in `path`, trimmed: the file must exist, be owner-only
/// and hold one non-empty line of visible characters.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let f = fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("{} cannot be read: {e}", path.display()),
    })?;
    let md = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    secret_mode_ok(path, md.permissions().mode())?;
    let mut text = String::new();
    io::Read::take(f, 4096)
        .read_to_string_lossy(&mut text)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if s.len() > 1024 || s.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one line of visible ASCII (the key or password alone)",
            path.display()
        ));
    }
    Ok(s.to_string())
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, out: &mut String) -> io::Result<()>;
}

impl<R: io::Read> ReadLossy for R {
    fn read_to_string_lossy(&mut self, out: &mut String) -> io::Result<()> {
        let mut buf = Vec::new();
        self.read_to_end(&mut buf)?;
        out.push_str(&String::from_utf8_lossy(&buf));
        Ok(())
    }
}
