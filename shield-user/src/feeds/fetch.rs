//! Fetching a feed's body: HTTPS (plain http only when the feed allows it)
//! or a local file, conditional on what the last fetch saw, within a size
//! cap and a time budget.
//!
//! Blocking on purpose: the agent runs it through `spawn_blocking`, and a
//! blocking client with rustls is far smaller than an async stack for
//! something done once an hour per feed. Redirects are followed by hand
//! rather than by the client, so every hop is checked (no https → http
//! downgrade, at most [`MAX_REDIRECTS`], no step from a global URL into
//! non-global space, validators only to their own origin: [`super::hops`])
//! before a connection is made to it.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use ureq::{
    Agent,
    config::AutoHeaderValue,
    http::{StatusCode, Uri},
    tls::{PemItem, RootCerts, TlsConfig, TlsProvider},
    unversioned::transport::DefaultConnector,
};

use super::hops::{self, HopGuard, HopResolver};
use crate::{
    config::{FeedConfig, FeedSource},
    redact::redact_url,
};

/// Redirect hops followed before giving up.
pub const MAX_REDIRECTS: u32 = 3;

/// Longest validator kept. Real ETags and dates are tens of bytes; the cap
/// keeps a hostile server from filling the sidecar or our next request.
const MAX_VALIDATOR: usize = 256;

/// Bytes read per `read` call while streaming a body.
const CHUNK: usize = 64 * 1024;

/// What the last successful fetch saw, for a conditional request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// HTTP `ETag`; for a file, its size and modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// HTTP `Last-Modified`, sent back verbatim as `If-Modified-Since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The origin (`scheme://host:port`) that issued them: they are sent
    /// back to it alone, never across hosts. Absent for files, and in
    /// sidecars written before it was kept (those validators are not sent:
    /// one full download instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// Limits for one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Budget for establishing a connection (DNS, TCP and TLS).
    pub connect_timeout: Duration,
    /// Budget for the whole fetch, redirects and body included.
    pub total_timeout: Duration,
    /// Largest body accepted.
    pub max_bytes: u64,
    /// Accept `http://` URLs (and redirects among them).
    pub allow_http: bool,
}

impl FetchOptions {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

    /// The limits a configured feed asks for, with the default timeouts.
    pub fn for_feed(feed: &FeedConfig) -> FetchOptions {
        FetchOptions {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT.min(feed.timeout),
            total_timeout: feed.timeout,
            max_bytes: feed.max_bytes,
            allow_http: feed.allow_http,
        }
    }
}

/// The outcome of a successful fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The source is unchanged since `prev`: keep what is loaded.
    NotModified,
    /// A new body, and what to send next time.
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{url} uses plain http, which is refused: use https, or set allow_http = true for this feed"
    )]
    PlainHttp { url: String },
    #[error("{url} cannot be fetched: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url} answered HTTP {status}{}", reason_suffix(*.status))]
    Status { url: String, status: u16 },
    #[error("{url} is larger than the feed's limit of {max_bytes} bytes{}", announced_suffix(*.announced))]
    TooLarge {
        url: String,
        max_bytes: u64,
        /// What the server's `Content-Length` said, when that is how it
        /// was caught.
        announced: Option<u64>,
    },
    #[error("{url} timed out after {:.1} s ({phase})", .after.as_secs_f64())]
    Timeout {
        url: String,
        after: Duration,
        phase: &'static str,
    },
    #[error("{url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects { url: String },
    #[error("{url} redirected from https to plain http ({to}), which is refused")]
    InsecureRedirect { url: String, to: String },
    #[error(
        "{url} redirected to {to}, at {addr}, which is not a globally reachable address: refused, because the configured URL is global (a hijacked feed server must not steer the agent into this host's networks); if the feed really lives there, configure its final URL"
    )]
    NonGlobalRedirect {
        url: String,
        to: String,
        addr: std::net::IpAddr,
    },
    #[error("{url} sent a redirect without a usable Location header")]
    BadRedirect { url: String },
    #[error("{url} answered 304 Not Modified to a request that carried no validators")]
    Unexpected304 { url: String },
    #[error("fetching {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("reading {url} failed: {source}")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("feed file {} cannot be read: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("feed file {} is not a regular file", .path.display())]
    NotAFile { path: PathBuf },
}

fn reason_suffix(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

fn announced_suffix(announced: Option<u64>) -> String {
    announced
        .map(|n| format!(" (it announced {n})"))
        .unwrap_or_default()
}

/// Fetches `source`. `prev` holds the validators of the copy the caller
/// already has (empty for none): when the source confirms it unchanged,
/// the answer is [`Fetched::NotModified`] and no body is read.
pub fn fetch(
    source: &FeedSource,
    prev: &Validators,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    match source {
        FeedSource::Path(p) => fetch_file(p, prev, opts),
        FeedSource::Url(u) => fetch_url(u, prev, opts),
    }
}

// ---- files ----

/// Files have no ETag; size plus modification time (to the nanosecond)
/// changes whenever anyone rewrites the file, which is what matters.
fn file_validators(md: &std::fs::Metadata) -> Validators {
    Validators {
        etag: Some(format!(
            "file:{}:{}.{:09}",
            md.len(),
            md.mtime(),
            md.mtime_nsec()
        )),
        last_modified: None,
        origin: None,
    }
}

fn fetch_file(path: &Path, prev: &Validators, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let file_err = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(file_err)?;
    // Metadata of the opened file, not the path: what we read is what the
    // validators describe.
    let md = f.metadata().map_err(file_err)?;
    if !md.is_file() {
        return Err(FetchError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let validators = file_validators(&md);
    if prev.etag.is_some() && prev.etag == validators.etag {
        return Ok(Fetched::NotModified);
    }
    let url = path.display().to_string();
    if md.len() > opts.max_bytes {
        return Err(FetchError::TooLarge {
            url,
            max_bytes: opts.max_bytes,
            announced: Some(md.len()),
        });
    }
    let bytes = read_capped(f, opts.max_bytes, Some(md.len())).map_err(|e| match e {
        CapError::TooLarge => FetchError::TooLarge {
            url,
            max_bytes: opts.max_bytes,
            announced: None,
        },
        CapError::Io(source) => file_err(source),
    })?;
    Ok(Fetched::Body { bytes, validators })
}

// ---- reading with a cap ----

enum CapError {
    TooLarge,
    Io(io::Error),
}

/// Reads `r` to the end, failing as soon as more than `max` bytes arrive.
/// Memory held never exceeds `max` plus one chunk, whatever the source
/// announces or sends: the buffer grows by doubling but never past `max`.
fn read_capped<R: Read>(mut r: R, max: u64, hint: Option<u64>) -> Result<Vec<u8>, CapError> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let first = hint
        .and_then(|h| usize::try_from(h).ok())
        .unwrap_or(CHUNK)
        .min(max);
    let mut buf = Vec::with_capacity(first);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CapError::Io(e)),
        };
        let total = buf.len().saturating_add(n);
        if total > max {
            return Err(CapError::TooLarge);
        }
        if total > buf.capacity() {
            let grown = buf.capacity().saturating_mul(2).clamp(total, max);
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---- URLs ----

fn shown(url: &str) -> String {
    redact_url(url)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Checks that `url` is an absolute http(s) URL with a host.
fn check_url(url: &str) -> Result<(Uri, Scheme), FetchError> {
    let bad = |why: &str| FetchError::BadUrl {
        url: shown(url),
        why: why.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("it is not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(_) => {
            return Err(bad(
                "only https:// (or http:// with allow_http) is supported",
            ));
        }
        None => return Err(bad("it has no scheme; write https://...")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok((uri, scheme))
}

/// Resolves a `Location` header against the URL that sent it. Absolute,
/// scheme-relative, absolute-path and relative-path forms are handled;
/// dot segments are left for the server to interpret.
fn resolve_location(base: &Uri, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if location.contains("://") {
        return Some(location.to_string());
    }
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// The trust anchors for HTTPS: the system's bundle (Debian's
/// `/etc/ssl/certs`, or `SSL_CERT_FILE`), so operators manage trust where
/// they already do, and the compiled-in Mozilla roots when the system has
/// none. Read once per process.
pub(crate) fn root_certs() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let candidates = env.into_iter().chain(
                [
                    "/etc/ssl/certs/ca-certificates.crt",
                    "/etc/pki/tls/certs/ca-bundle.crt",
                    "/etc/ssl/cert.pem",
                ]
                .map(PathBuf::from),
            );
            for path in candidates {
                let Ok(pem) = std::fs::read(&path) else {
                    continue;
                };
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if !certs.is_empty() {
                    return RootCerts::Specific(Arc::new(certs));
                }
            }
            RootCerts::WebPki
        })
        .clone()
}

#[cfg(test)]
thread_local! {
    /// Roots that replace the system's for the tests of this thread, so an
    /// HTTPS test can trust the CA of the server it starts.
    pub(crate) static TEST_ROOTS: std::cell::RefCell<Option<RootCerts>> =
        const { std::cell::RefCell::new(None) };
}

fn agent(opts: &FetchOptions, resolver: HopResolver) -> Agent {
    #[cfg(test)]
    let roots = TEST_ROOTS
        .with(|t| t.borrow().clone())
        .unwrap_or_else(root_certs);
    #[cfg(not(test))]
    let roots = root_certs();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .build();
    let config = Agent::config_builder()
        // Statuses and redirects are judged here, hop by hop.
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .timeout_connect(Some(opts.connect_timeout))
        .user_agent(AutoHeaderValue::Provided(Arc::new(format!(
            "shield/{}",
            env!("CARGO_PKG_VERSION")
        ))))
        .build();
    Agent::with_parts(config, DefaultConnector::new(), resolver)
}

/// A header value fit to keep and send back: short, visible ASCII.
fn validator(v: Option<&ureq::http::HeaderValue>) -> Option<String> {
    let s = v?.to_str().ok()?.trim();
    let ok =
        !s.is_empty() && s.len() <= MAX_VALIDATOR && s.bytes().all(|b| (0x20..0x7f).contains(&b));
    ok.then(|| s.to_string())
}

fn fetch_url(url: &str, prev: &Validators, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let deadline = started + opts.total_timeout;
    let (mut uri, mut scheme) = check_url(url)?;
    if scheme == Scheme::Http && !opts.allow_http {
        return Err(FetchError::PlainHttp { url: shown(url) });
    }
    let configured = uri.clone();
    let guard = HopGuard::default();
    let mut current = url.to_string();
    let mut hops = 0;
    loop {
        let shown_url = shown(&current);
        let timeout = |phase| FetchError::Timeout {
            url: shown_url.clone(),
            after: opts.total_timeout,
            phase,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout("total"));
        }
        let here = hops::origin(&uri);
        // A fresh client per hop: each hop's resolver applies that hop's
        // rule (once an hour per feed, the cost is nothing).
        let rule = guard.rule(&configured, &uri, hops);
        let mut req = agent(opts, HopResolver(rule))
            .get(&current)
            .config()
            .timeout_global(Some(left))
            .build();
        let send_validators = !prev.is_empty() && prev.origin.as_deref() == Some(here.as_str());
        if send_validators {
            if let Some(etag) = &prev.etag {
                req = req.header("If-None-Match", etag.as_str());
            }
            if let Some(lm) = &prev.last_modified {
                req = req.header("If-Modified-Since", lm.as_str());
            }
        }
        let resp = req.call().map_err(|e| match e {
            ureq::Error::Timeout(ureq::Timeout::Connect) => FetchError::Timeout {
                url: shown_url.clone(),
                after: opts.connect_timeout,
                phase: "connect",
            },
            ureq::Error::Timeout(_) => timeout("total"),
            source if hops::refused_address(&source).is_some() => FetchError::NonGlobalRedirect {
                url: shown(url),
                to: shown_url.clone(),
                addr: hops::refused_address(&source).expect("checked"),
            },
            source => FetchError::Http {
                url: shown_url.clone(),
                source,
            },
        })?;
        let status = resp.status().as_u16();
        match status {
            // Only a complete representation is a feed: 206 would be a
            // fragment, 202/204 no feed at all.
            200 | 203 => {}
            304 if !send_validators => {
                return Err(FetchError::Unexpected304 { url: shown_url });
            }
            304 => return Ok(Fetched::NotModified),
            301 | 302 | 303 | 307 | 308 => {
                let to = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| resolve_location(&uri, l))
                    .ok_or_else(|| FetchError::BadRedirect {
                        url: shown_url.clone(),
                    })?;
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects { url: shown(url) });
                }
                let (next_uri, next_scheme) = check_redirect(&current, scheme, &to, opts)?;
                if let Some(addr) = guard.refused_literal(&configured, &next_uri) {
                    return Err(FetchError::NonGlobalRedirect {
                        url: shown(url),
                        to: shown(&to),
                        addr,
                    });
                }
                (uri, scheme, current) = (next_uri, next_scheme, to);
                continue;
            }
            _ => {
                return Err(FetchError::Status {
                    url: shown_url,
                    status,
                });
            }
        }
        let validators = Validators {
            etag: validator(resp.headers().get("etag")),
            last_modified: validator(resp.headers().get("last-modified")),
            origin: Some(here),
        };
        let announced = resp.body().content_length();
        if let Some(n) = announced
            && n > opts.max_bytes
        {
            return Err(FetchError::TooLarge {
                url: shown_url,
                max_bytes: opts.max_bytes,
                announced: Some(n),
            });
        }
        let reader = resp.into_body().into_reader();
        return match read_capped(reader, opts.max_bytes, announced) {
            Ok(bytes) => Ok(Fetched::Body { bytes, validators }),
            Err(CapError::TooLarge) => Err(FetchError::TooLarge {
                url: shown_url,
                max_bytes: opts.max_bytes,
                announced: None,
            }),
            Err(CapError::Io(e)) if is_timeout(&e) => Err(timeout("total")),
            Err(CapError::Io(source)) => Err(FetchError::Read {
                url: shown_url,
                source,
            }),
        };
    }
}

/// Whether a redirect from `from` (with `scheme`) to `to` may be followed:
/// never from https down to plain http (that would hand the feed's content
/// to anyone on the path), and to http only when the feed allows it.
fn check_redirect(
    from: &str,
    scheme: Scheme,
    to: &str,
    opts: &FetchOptions,
) -> Result<(Uri, Scheme), FetchError> {
    let (uri, next) = check_url(to)?;
    if next == Scheme::Http {
        if scheme == Scheme::Https {
            return Err(FetchError::InsecureRedirect {
                url: shown(from),
                to: shown(to),
            });
        }
        if !opts.allow_http {
            return Err(FetchError::PlainHttp { url: shown(to) });
        }
    }
    Ok((uri, next))
}

/// Body reads report ureq's timeouts wrapped in an `io::Error`.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_fetch_resolves_locations() {
        let base: Uri = "https://a.example:8443/dir/feed.txt?x=1".parse().unwrap();
        let r = |l| resolve_location(&base, l).unwrap();
        assert_eq!(r("https://b.example/x"), "https://b.example/x");
        assert_eq!(r("//c.example/y"), "https://c.example/y");
        assert_eq!(r("/abs"), "https://a.example:8443/abs");
        assert_eq!(r("other.txt"), "https://a.example:8443/dir/other.txt");
        assert_eq!(resolve_location(&base, "  "), None);
    }

    #[test]
    fn feeds_fetch_refuses_downgrading_redirects() {
        let mut opts = FetchOptions {
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            max_bytes: 1,
            allow_http: true,
        };
        let from = "https://a.example/x";
        let e = check_redirect(from, Scheme::Https, "http://b.example/y", &opts).unwrap_err();
        assert!(matches!(e, FetchError::InsecureRedirect { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "https://a.example/x redirected from https to plain http (http://b.example/y), which is refused"
        );
        assert!(check_redirect(from, Scheme::Https, "https://b.example/y", &opts).is_ok());
        let from = "http://a.example/x";
        assert!(check_redirect(from, Scheme::Http, "http://b.example/y", &opts).is_ok());
        assert!(check_redirect(from, Scheme::Http, "https://b.example/y", &opts).is_ok());
        opts.allow_http = false;
        let e = check_redirect(from, Scheme::Http, "http://b.example/y", &opts).unwrap_err();
        assert!(matches!(e, FetchError::PlainHttp { .. }), "{e}");
        let e = check_redirect(from, Scheme::Http, "file:///etc/passwd", &opts).unwrap_err();
        assert!(matches!(e, FetchError::BadUrl { .. }), "{e}");
    }

    #[test]
    fn feeds_fetch_checks_urls() {
        assert!(check_url("https://a.example/x").is_ok());
        assert!(check_url("HTTP://a.example/x").is_ok());
        for bad in ["ftp://a.example/x", "a.example/x", "https:///x", "::", ""] {
            let e = check_url(bad).err().unwrap();
            assert!(matches!(e, FetchError::BadUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn feeds_fetch_read_capped_never_exceeds_the_cap() {
        let data = vec![7u8; 300_000];
        let got = read_capped(&data[..], 300_000, None).ok().unwrap();
        assert_eq!(got.len(), 300_000);
        assert!(got.capacity() <= 300_000);
        assert!(matches!(
            read_capped(&data[..], 299_999, Some(10)),
            Err(CapError::TooLarge)
        ));
        // A lying hint cannot make it allocate past the cap.
        let got = read_capped(&data[..10], 100, Some(u64::MAX)).ok().unwrap();
        assert!(got.capacity() <= 100);
        assert!(read_capped(&b""[..], 0, None).ok().unwrap().is_empty());
    }
}
