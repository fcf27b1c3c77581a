//! The last good copy of each feed, kept in `state_dir/feeds/` so the agent
//! can enforce its feeds at start-up while the network (or the feed's
//! server) is down.
//!
//! Each feed has two files: `<name>.cache`, the body exactly as fetched,
//! and `<name>.cache.json`, a small sidecar with the validators for the
//! next conditional request, the fetch time, the source, the byte count
//! and the SHA-256 of the body. The source is kept as a SHA-256 digest (to
//! tell whether the cache is still the feed's) and a redacted label (for
//! people): feed URLs carry credentials and tokens, which have no business
//! on disk.
//!
//! Replacing a copy takes two renames, and a crash can fall between them.
//! So the sidecar is written first describing *both* bodies, the one in
//! place and the one about to replace it; then the body is renamed into
//! place; then the sidecar is rewritten with the new copy alone. Whatever
//! body is on disk, the sidecar names it, and [`load`] picks the copy
//! whose size and digest match: a crash at any point leaves the previous
//! copy or the new one, whole (docs/SECURITY.md, "Feed cache"). Every
//! temporary file has a name of its own, created with `O_EXCL`, and stores
//! within the process take turns, so two writers never share a file.

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::fetch::Validators;
use crate::config::FeedSource;

/// Sidecar format version. Version 1 (no body digest, no previous copy)
/// is still read; anything else is treated as corrupt.
const SIDECAR_VERSION: u32 = 2;

/// Longest feed name used in a file name.
const MAX_NAME: usize = 128;

/// Stores take turns: each cleans up temporaries and rewrites a sidecar
/// that must not interleave with another's. Stores are rare (one per
/// applied refresh) and run off the agent's lock.
static STORES: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "feed name `{0}` cannot name a cache file: use letters, digits, `.`, `_` and `-`, not starting with `.`"
    )]
    BadName(String),
    #[error("feed cache {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The caller treats this as "no cache": the copy is unusable, and the
    /// next successful fetch replaces it.
    #[error("feed cache {path} is unusable ({why}); ignoring it until the next successful fetch")]
    Corrupt { path: PathBuf, why: String },
}

/// A feed's cached body and what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub bytes: Vec<u8>,
    pub validators: Validators,
    /// When the body was fetched (or last confirmed unchanged), Unix seconds.
    pub fetched_unix: u64,
    /// How long ago that was (zero if the clock went backwards).
    pub age: Duration,
    /// The source it was fetched from, as [`source_digest`] writes it. A
    /// cache whose source differs from the feed's current one belongs to
    /// an old configuration and should not be used (nor its validators).
    pub source_sha256: String,
}

impl Cached {
    /// Whether this copy was fetched from `source`.
    pub fn is_from(&self, source: &FeedSource) -> bool {
        self.source_sha256 == source_digest(source)
    }
}

/// What the sidecar says about one body.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Copy {
    validators: Validators,
    fetched_unix: u64,
    /// [`source_text`]: no secrets. Earlier builds wrote the full URL here
    /// (and no digest); [`load`] rewrites such a sidecar.
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_sha256: Option<String>,
    bytes: u64,
    /// SHA-256 of the body, lowercase hex; absent in version 1, where the
    /// byte count is all there is to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_sha256: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Sidecar {
    version: u32,
    /// The copy the body file holds once the last store finished.
    #[serde(flatten)]
    current: Copy,
    /// Set only while a store replaces the body: the copy it replaces,
    /// which is what the body file still holds if the store died before
    /// its rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Copy>,
}

/// The source in full, which is what identifies it (never written).
fn source_label(source: &FeedSource) -> String {
    match source {
        FeedSource::Path(p) => format!("file:{}", p.display()),
        FeedSource::Url(u) => u.clone(),
    }
}

/// The source as the sidecar shows it: URL credentials and query values
/// redacted.
fn source_text(source: &FeedSource) -> String {
    match source {
        FeedSource::Path(_) => source_label(source),
        FeedSource::Url(u) => crate::redact::redact_url(u),
    }
}

/// SHA-256 of the full source, lowercase hex: two URLs that differ only
/// in a token still name different caches.
pub fn source_digest(source: &FeedSource) -> String {
    digest_hex(source_label(source).as_bytes())
}

fn digest_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `state_dir/feeds/<name>.cache` for `name`.
pub fn body_path(state_dir: &Path, name: &str) -> Result<PathBuf, CacheError> {
    if !valid_name(name) {
        return Err(CacheError::BadName(name.to_string()));
    }
    Ok(state_dir.join("feeds").join(format!("{name}.cache")))
}

fn sidecar_path(body: &Path) -> PathBuf {
    with_suffix(body, ".json")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Names become file names: keep them to a safe alphabet so no feed name
/// can climb out of the directory or hide as a dotfile.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Stores `bytes` as the last good copy of feed `name`, fetched now.
pub fn store(
    state_dir: &Path,
    name: &str,
    source: &FeedSource,
    bytes: &[u8],
    validators: &Validators,
) -> Result<(), CacheError> {
    store_with(state_dir, name, source, bytes, validators, &mut |_| false)
}

/// [`store`], with `crash` asked at every point between two durable steps;
/// when it answers true the store stops there, leaving the files as a
/// process killed at that point would (no cleanup), so a test can check
/// that [`load`] finds a usable copy at every step.
fn store_with(
    state_dir: &Path,
    name: &str,
    source: &FeedSource,
    bytes: &[u8],
    validators: &Validators,
    crash: &mut dyn FnMut(&'static str) -> bool,
) -> Result<(), CacheError> {
    let body = body_path(state_dir, name)?;
    let _turn = STORES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_feeds_dir(&body)?;
    remove_temporaries(&body);
    let new = Copy {
        validators: validators.clone(),
        fetched_unix: crate::clock::unix_secs(),
        source: source_text(source),
        source_sha256: Some(source_digest(source)),
        bytes: bytes.len() as u64,
        body_sha256: Some(digest_hex(bytes)),
    };
    // What the body file holds now, if anything usable: it stays
    // described until the new body has replaced it.
    let previous = resolve(&body).ok().flatten().map(|(c, _)| c);
    if crash("before anything") {
        return Ok(());
    }
    let tmp = write_tmp(&body, bytes)?;
    if crash("after the body's temporary") {
        return Ok(());
    }
    if let Some(prev) = previous {
        let both = Sidecar {
            version: SIDECAR_VERSION,
            current: new.clone(),
            previous: Some(prev),
        };
        if let Err(e) = write_sidecar_with(&body, &both, crash) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if crash("after the sidecar naming both copies") {
            return Ok(());
        }
    }
    if let Err(source) = fs::rename(&tmp, &body) {
        let _ = fs::remove_file(&tmp);
        return Err(CacheError::Io { path: tmp, source });
    }
    sync_dir(&body);
    if crash("after the body rename") {
        return Ok(());
    }
    let only = Sidecar {
        version: SIDECAR_VERSION,
        current: new,
        previous: None,
    };
    write_sidecar_with(&body, &only, crash)?;
    sync_dir(&body);
    Ok(())
}

/// Records that the cached copy was confirmed unchanged now (a 304), so
/// its age starts again. Does nothing when there is no usable cache.
pub fn refreshed(state_dir: &Path, name: &str) -> Result<(), CacheError> {
    let body = body_path(state_dir, name)?;
    let _turn = STORES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(meta) = read_sidecar(&body)? else {
        return Ok(());
    };
    // After a crash in the middle of a store, which copy is on disk has to
    // be read from the body; otherwise the sidecar says it.
    let mut current = match meta.previous {
        None => meta.current,
        Some(_) => match resolve(&body)? {
            Some((c, _)) => c,
            None => return Ok(()),
        },
    };
    current.fetched_unix = crate::clock::unix_secs();
    write_sidecar(
        &body,
        &Sidecar {
            version: SIDECAR_VERSION,
            current,
            previous: None,
        },
    )?;
    sync_dir(&body);
    Ok(())
}

/// The last good copy of feed `name`: `Ok(None)` when there is none, and
/// [`CacheError::Corrupt`] when what is there cannot be trusted (never a
/// panic, whatever the files hold).
pub fn load(state_dir: &Path, name: &str) -> Result<Option<Cached>, CacheError> {
    let body = body_path(state_dir, name)?;
    let Some((copy, bytes)) = resolve(&body)? else {
        return Ok(None);
    };
    let source_sha256 = match copy.source_sha256.clone() {
        Some(d) => d,
        None => {
            // An older build's sidecar: its `source` is the full label,
            // secrets and all. Take the digest from it and rewrite the
            // sidecar without it; if the rewrite fails, the next fetch
            // replaces the file anyway.
            let digest = digest_hex(copy.source.as_bytes());
            let mut fixed = copy.clone();
            fixed.source = crate::redact::redact_url(&copy.source);
            fixed.source_sha256 = Some(digest.clone());
            let _turn = STORES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let meta = Sidecar {
                version: SIDECAR_VERSION,
                current: fixed,
                previous: None,
            };
            if write_sidecar(&body, &meta).is_ok() {
                sync_dir(&body);
            }
            digest
        }
    };
    let now = crate::clock::unix_secs();
    Ok(Some(Cached {
        bytes,
        validators: copy.validators,
        fetched_unix: copy.fetched_unix,
        age: Duration::from_secs(now.saturating_sub(copy.fetched_unix)),
        source_sha256,
    }))
}

/// The copy the body file holds, with its bytes: the sidecar's current
/// copy, or its previous one when a store died before its rename.
fn resolve(body: &Path) -> Result<Option<(Copy, Vec<u8>)>, CacheError> {
    let corrupt = |why: String| CacheError::Corrupt {
        path: body.to_path_buf(),
        why,
    };
    let Some(meta) = read_sidecar(body)? else {
        return match fs::metadata(body) {
            Ok(_) => Err(corrupt("its sidecar is missing".into())),
            Err(_) => Ok(None),
        };
    };
    // Check the size before reading, so a file that grew by accident is
    // not pulled into memory whole.
    let on_disk = match fs::metadata(body) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt("the body is missing".into()));
        }
        Err(source) => {
            return Err(CacheError::Io {
                path: body.to_path_buf(),
                source,
            });
        }
    };
    let candidates: Vec<Copy> = std::iter::once(meta.current)
        .chain(meta.previous)
        .filter(|c| c.bytes == on_disk)
        .collect();
    let Some(first) = candidates.first() else {
        return Err(corrupt(format!(
            "the body has {on_disk} bytes, the sidecar says {}",
            // The current copy's count: what a reader expects to see.
            read_sidecar(body)?.map_or(0, |m| m.current.bytes)
        )));
    };
    let bytes = fs::read(body).map_err(|source| CacheError::Io {
        path: body.to_path_buf(),
        source,
    })?;
    if bytes.len() as u64 != first.bytes {
        return Err(corrupt("the body changed while it was read".into()));
    }
    let digest = digest_hex(&bytes);
    let found = candidates
        .into_iter()
        .find(|c| c.body_sha256.as_ref().is_none_or(|d| *d == digest));
    match found {
        Some(c) => Ok(Some((c, bytes))),
        None => Err(corrupt(
            "the body's SHA-256 matches no copy its sidecar describes".into(),
        )),
    }
}

/// Deletes feed `name`'s cache (the feed left the configuration).
pub fn remove(state_dir: &Path, name: &str) -> Result<(), CacheError> {
    let body = body_path(state_dir, name)?;
    let _turn = STORES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    remove_temporaries(&body);
    for p in [sidecar_path(&body), body.clone()] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(CacheError::Io { path: p, source }),
        }
    }
    sync_dir(&body);
    Ok(())
}

fn read_sidecar(body: &Path) -> Result<Option<Sidecar>, CacheError> {
    let path = sidecar_path(body);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Io { path, source }),
    };
    let corrupt = |why: String| CacheError::Corrupt {
        path: path.clone(),
        why,
    };
    let meta: Sidecar = serde_json::from_slice(&text)
        .map_err(|e| corrupt(format!("its sidecar does not parse: {e}")))?;
    if !(1..=SIDECAR_VERSION).contains(&meta.version) {
        return Err(corrupt(format!(
            "its sidecar has version {}, this build reads 1 to {SIDECAR_VERSION}",
            meta.version
        )));
    }
    Ok(Some(meta))
}

fn write_sidecar(body: &Path, meta: &Sidecar) -> Result<(), CacheError> {
    write_sidecar_with(body, meta, &mut |_| false)
}

fn write_sidecar_with(
    body: &Path,
    meta: &Sidecar,
    crash: &mut dyn FnMut(&'static str) -> bool,
) -> Result<(), CacheError> {
    let path = sidecar_path(body);
    let mut json = serde_json::to_vec_pretty(meta).map_err(|e| CacheError::Io {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    json.push(b'\n');
    let tmp = write_tmp(&path, &json)?;
    if crash("after a sidecar's temporary") {
        return Ok(());
    }
    fs::rename(&tmp, &path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        CacheError::Io { path: tmp, source }
    })
}

/// Creates `state_dir/feeds` with mode 0700 (and `state_dir` if needed):
/// what a host blocks is nobody else's business.
fn ensure_feeds_dir(body: &Path) -> Result<(), CacheError> {
    let Some(dir) = body.parent() else {
        return Ok(());
    };
    let io_err = |source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)
}

/// The marker between a file's name and a temporary's random part.
const TMP: &str = ".tmp-";

/// Whether `file` is a temporary of `base` (`base.tmp-<16 hex>`), or the
/// fixed `base.tmp` that earlier builds used.
fn is_tmp_of(file: &str, base: &str) -> bool {
    let Some(rest) = file.strip_prefix(base) else {
        return false;
    };
    rest == ".tmp"
        || rest.strip_prefix(TMP).is_some_and(|r| {
            r.len() == 16
                && r.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
}

/// Removes what a crash in the middle of a store left behind for this
/// feed's two files. Only exact temporary names match, so no other feed's
/// files (whose names always end in `.cache` or `.json`) can.
fn remove_temporaries(body: &Path) {
    let (Some(dir), Some(base)) = (body.parent(), body.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let side = format!("{base}.json");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_tmp_of(name, base) || is_tmp_of(name, &side) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to a new temporary next to `path` (a name of its own,
/// created with `O_EXCL`, mode 0600) and fsyncs it. The caller renames it.
fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf, CacheError> {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut r)
        .map_err(|_| CacheError::Io {
            path: path.to_path_buf(),
            source: io::Error::other("no randomness for a temporary file name"),
        })?;
    let tmp = with_suffix(path, &format!("{TMP}{:016x}", u64::from_le_bytes(r)));
    let result = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(source) => {
            // Only a file this call created is removed: with create_new,
            // an existing one made the open fail before anything was ours.
            if source.kind() != io::ErrorKind::AlreadyExists {
                let _ = fs::remove_file(&tmp);
            }
            Err(CacheError::Io { path: tmp, source })
        }
    }
}

/// Makes the renames durable. Best effort: the data itself is already
/// synced, and failing here would only lose the newest copy on power loss.
fn sync_dir(body: &Path) {
    if let Some(dir) = body.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> FeedSource {
        FeedSource::Url("https://feeds.example/drop.txt".into())
    }

    fn v(etag: &str) -> Validators {
        Validators {
            etag: Some(etag.into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            origin: Some("https://feeds.example:443".into()),
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn feeds_cache_round_trips_with_private_modes_and_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(load(&state, "drop").unwrap(), None);
        store(&state, "drop", &src(), b"192.0.2.1\n", &v("\"a\"")).unwrap();
        let c = load(&state, "drop").unwrap().unwrap();
        assert_eq!(c.bytes, b"192.0.2.1\n");
        assert_eq!(c.validators, v("\"a\""));
        assert!(c.is_from(&src()));
        assert!(!c.is_from(&FeedSource::Url("https://feeds.example/edrop.txt".into())));
        // Just stored: seconds at most on a loaded host; an hour of room
        // still tells it from a copy of any real age.
        assert!(c.age < Duration::from_secs(3600));
        assert!(c.fetched_unix > 1_600_000_000);

        let feeds = state.join("feeds");
        assert_eq!(mode(&feeds), 0o700);
        assert_eq!(mode(&feeds.join("drop.cache")), 0o600);
        assert_eq!(mode(&feeds.join("drop.cache.json")), 0o600);

        // A second store replaces both files and leaves no temporaries.
        store(&state, "drop", &src(), b"198.51.100.0/24\n", &v("\"b\"")).unwrap();
        let c = load(&state, "drop").unwrap().unwrap();
        assert_eq!(c.bytes, b"198.51.100.0/24\n");
        assert_eq!(c.validators.etag.as_deref(), Some("\"b\""));
        let mut names: Vec<String> = fs::read_dir(&feeds)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["drop.cache", "drop.cache.json"]);

        remove(&state, "drop").unwrap();
        assert_eq!(load(&state, "drop").unwrap(), None);
        remove(&state, "drop").unwrap();
    }

    #[test]
    fn feeds_cache_keeps_url_secrets_off_disk_but_tells_tokens_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        let url = |token: &str| {
            FeedSource::Url(format!(
                "https://feeduser:S3cretPass@feeds.example/drop.txt?token={token}&list=drop"
            ))
        };
        store(s, "f", &url("T0kenValue42"), b"10.0.0.1\n", &v("x")).unwrap();
        let side = fs::read_to_string(s.join("feeds/f.cache.json")).unwrap();
        for secret in ["feeduser", "S3cretPass", "T0kenValue42", "drop&"] {
            assert!(!side.contains(secret), "{secret} in {side}");
        }
        assert!(
            side.contains("https://***@feeds.example/drop.txt?token=***&list=***"),
            "{side}"
        );
        let c = load(s, "f").unwrap().unwrap();
        assert!(c.is_from(&url("T0kenValue42")));
        assert!(
            !c.is_from(&url("an0therToken")),
            "a new token, a new source"
        );
    }

    #[test]
    fn feeds_cache_rewrites_an_older_sidecar_without_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        let secret = "https://u:S3cretPass@feeds.example/x?token=T0kenValue42";
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        // What an earlier build wrote: the full URL, no digest.
        let side = s.join("feeds/f.cache.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("source_sha256");
        meta["source"] = secret.into();
        fs::write(&side, serde_json::to_vec(&meta).unwrap()).unwrap();

        let c = load(s, "f").unwrap().unwrap();
        assert!(c.is_from(&FeedSource::Url(secret.into())));
        assert!(!c.is_from(&src()));
        let text = fs::read_to_string(&side).unwrap();
        assert!(
            !text.contains("S3cretPass") && !text.contains("T0kenValue42"),
            "{text}"
        );
        assert_eq!(load(s, "f").unwrap().unwrap(), c, "the rewrite is stable");
    }

    #[test]
    fn feeds_cache_ignores_a_leftover_tmp_and_tightens_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let feeds = dir.path().join("feeds");
        fs::create_dir_all(&feeds).unwrap();
        fs::set_permissions(&feeds, fs::Permissions::from_mode(0o755)).unwrap();
        // What a crash in the middle of a write leaves behind.
        fs::write(feeds.join("x.cache.tmp"), b"half a bo").unwrap();
        fs::set_permissions(feeds.join("x.cache.tmp"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(dir.path(), "x").unwrap(), None);
        store(
            dir.path(),
            "x",
            &src(),
            b"10.0.0.1\n",
            &Validators::default(),
        )
        .unwrap();
        assert_eq!(mode(&feeds), 0o700);
        assert!(!feeds.join("x.cache.tmp").exists());
        assert_eq!(load(dir.path(), "x").unwrap().unwrap().bytes, b"10.0.0.1\n");
    }

    #[test]
    fn feeds_cache_corrupt_sidecar_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        let side = s.join("feeds/f.cache.json");
        for junk in [
            &b"{not json"[..],
            b"",
            b"\xff\xfe\x00",
            b"[1,2,3]",
            b"{\"version\":99,\"validators\":{},\"fetched_unix\":0,\"source\":\"\",\"bytes\":9}",
        ] {
            fs::write(&side, junk).unwrap();
            let e = load(s, "f").unwrap_err();
            assert!(matches!(e, CacheError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains("f.cache.json"), "{e}");
        }
        // A sidecar that disagrees with the body (crash between renames).
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        fs::write(s.join("feeds/f.cache"), b"10.0.0.1\n10.0.0.2\n").unwrap();
        let e = load(s, "f").unwrap_err();
        assert!(e.to_string().contains("sidecar says 9"), "{e}");
        // A body of the right size but other bytes (two writers torn into
        // one file): the digest tells.
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        fs::write(s.join("feeds/f.cache"), b"10.0.0.9\n").unwrap();
        let e = load(s, "f").unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        // Body without sidecar, sidecar without body.
        fs::remove_file(&side).unwrap();
        assert!(matches!(load(s, "f"), Err(CacheError::Corrupt { .. })));
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        fs::remove_file(s.join("feeds/f.cache")).unwrap();
        assert!(matches!(load(s, "f"), Err(CacheError::Corrupt { .. })));
        // And a good store repairs it.
        store(s, "f", &src(), b"10.0.0.3\n", &v("y")).unwrap();
        assert_eq!(load(s, "f").unwrap().unwrap().bytes, b"10.0.0.3\n");
    }

    #[test]
    fn feeds_cache_refreshed_restarts_the_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        refreshed(s, "f").unwrap();
        store(s, "f", &src(), b"10.0.0.1\n", &v("x")).unwrap();
        let side = s.join("feeds/f.cache.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
        meta["fetched_unix"] = 1000.into();
        fs::write(&side, serde_json::to_vec(&meta).unwrap()).unwrap();
        assert!(load(s, "f").unwrap().unwrap().age > Duration::from_secs(86400));
        refreshed(s, "f").unwrap();
        let c = load(s, "f").unwrap().unwrap();
        // Restarted: seconds at most, against the day-plus above.
        assert!(c.age < Duration::from_secs(3600));
        assert_eq!(c.validators, v("x"));
    }

    /// A kill at every point of a store leaves the old copy or the new one,
    /// whole, for `load` (and the next store cleans up after it).
    #[test]
    fn feeds_cache_a_kill_at_any_step_leaves_the_old_or_the_new_copy() {
        let old: &[u8] = b"192.0.2.1\n192.0.2.2\n";
        let new: &[u8] = b"198.51.100.0/24\n";
        let mut k = 0;
        loop {
            let dir = tempfile::tempdir().unwrap();
            let s = dir.path();
            store(s, "f", &src(), old, &v("old")).unwrap();
            let mut n = 0;
            let mut at = "";
            store_with(s, "f", &src(), new, &v("new"), &mut |step| {
                n += 1;
                at = step;
                n > k
            })
            .unwrap();
            let crashed = n > k;
            let got = load(s, "f")
                .unwrap_or_else(|e| panic!("kill {at}: no usable copy: {e}"))
                .unwrap_or_else(|| panic!("kill {at}: no copy at all"));
            let ok = (got.bytes == old && got.validators == v("old"))
                || (got.bytes == new && got.validators == v("new"));
            assert!(ok, "kill {at}: a mixed copy {got:?}");
            if !crashed {
                assert_eq!(got.bytes, new);
                break;
            }
            // The next store succeeds and leaves only the pair.
            store(s, "f", &src(), b"203.0.113.9\n", &v("next")).unwrap();
            assert_eq!(load(s, "f").unwrap().unwrap().bytes, b"203.0.113.9\n");
            let mut names: Vec<String> = fs::read_dir(s.join("feeds"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["f.cache", "f.cache.json"], "kill {at}");
            k += 1;
        }
        assert!(k >= 3, "only {k} steps");
    }

    #[test]
    fn feeds_cache_refuses_names_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b", "é", &"x".repeat(200)] {
            assert!(
                matches!(load(dir.path(), bad), Err(CacheError::BadName(_))),
                "{bad}"
            );
            assert!(store(dir.path(), bad, &src(), b"", &Validators::default()).is_err());
        }
        assert!(body_path(dir.path(), "spamhaus-drop_v4.1").is_ok());
    }
}
