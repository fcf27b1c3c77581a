//! Where a feed download may go once its server starts redirecting
//! (docs/SECURITY.md, "Feeds"):
//!
//! - **Address class.** A redirect may not lead from a globally reachable
//!   configured URL into non-global space (loopback, RFC 1918, link-local
//!   cloud metadata, ...): otherwise a hijacked feed server could make the
//!   agent fetch from the host's own network and show the answer in
//!   `feeds list`. Names are judged by every address they resolve to, at
//!   the moment of connecting (a resolver hook), so a name that changes
//!   its answer between a check and the connection gains nothing. A
//!   configured URL that is itself non-global (an intranet mirror) may
//!   redirect anywhere.
//! - **Validators.** An `ETag` or `Last-Modified` is sent back only to the
//!   origin (scheme, host, port) that issued it, never across hosts.

use std::{
    fmt, io,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use shield_common::special::{is_global_v4, is_global_v6};
use ureq::{
    config::Config,
    http::Uri,
    unversioned::{
        resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
        transport::NextTimeout,
    },
};

/// Whether `ip` is globally reachable (IANA's special-purpose registries).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_global_v4(a.octets()),
        IpAddr::V6(a) => is_global_v6(a.octets()),
    }
}

/// `scheme://host:port` of `uri` (port made explicit, host lowercased):
/// the origin a validator belongs to.
pub fn origin(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    format!("{scheme}://{host}:{port}")
}

/// The host of `uri` when it is an IP literal (`[v6]` unbracketed).
fn literal(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A resolver hook's refusal, carried through ureq's `Error::Io` and
/// recognised by type (see [`refused_address`]).
#[derive(Debug)]
pub struct NonGlobal(pub IpAddr);

impl fmt::Display for NonGlobal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a globally reachable address", self.0)
    }
}

impl std::error::Error for NonGlobal {}

/// The address a failed request was refused for, if that is why it failed.
pub fn refused_address(e: &ureq::Error) -> Option<IpAddr> {
    match e {
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NonGlobal>())
            .map(|n| n.0),
        _ => None,
    }
}

/// What one hop's resolver does with the addresses of the hop's host.
#[derive(Debug)]
pub enum HopRule {
    /// The configured URL: anything goes, and its addresses are noted to
    /// decide the rule for the redirects that follow.
    Configured(Arc<Mutex<Vec<IpAddr>>>),
    /// A redirect from a non-global configured URL: anything goes.
    Any,
    /// A redirect from a global configured URL: every address of the
    /// hop's host must be global. `host` is the hop's authority, so that a
    /// proxy's own address (also resolved here) is not judged.
    GlobalOnly { host: String },
}

/// ureq's resolver with a [`HopRule`] applied to what it returns.
#[derive(Debug)]
pub struct HopResolver(pub HopRule);

impl Resolver for HopResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        match &self.0 {
            HopRule::Configured(seen) => {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(addrs.iter().map(std::net::SocketAddr::ip));
            }
            HopRule::Any => {}
            HopRule::GlobalOnly { host } => {
                let is_target = uri.host().is_some_and(|h| h.eq_ignore_ascii_case(host));
                if let Some(bad) = addrs
                    .iter()
                    .map(std::net::SocketAddr::ip)
                    .find(|ip| !is_global(*ip))
                    && is_target
                {
                    return Err(ureq::Error::Io(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        NonGlobal(bad),
                    )));
                }
            }
        }
        Ok(addrs)
    }
}

/// The rule for one fetch's redirects, settled by its first hop.
#[derive(Debug, Default)]
pub struct HopGuard {
    first: Arc<Mutex<Vec<IpAddr>>>,
}

impl HopGuard {
    /// The rule for hop number `hop` (0: the configured URL) to `uri`.
    pub fn rule(&self, configured: &Uri, uri: &Uri, hop: u32) -> HopRule {
        if hop == 0 {
            HopRule::Configured(self.first.clone())
        } else if self.configured_is_local(configured) {
            HopRule::Any
        } else {
            HopRule::GlobalOnly {
                host: uri.host().unwrap_or("").to_string(),
            }
        }
    }

    /// Whether redirects may lead into non-global space: only when the
    /// configured URL itself is non-global, that is its host is a
    /// non-global literal or every address it resolved to is non-global.
    /// Behind a proxy nothing was resolved here, and the strict rule holds.
    pub fn configured_is_local(&self, configured: &Uri) -> bool {
        if let Some(ip) = literal(configured) {
            return !is_global(ip);
        }
        let seen = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !seen.is_empty() && seen.iter().all(|ip| !is_global(*ip))
    }

    /// A redirect target whose host is a non-global literal, refused
    /// before any connection (names are judged when they resolve).
    pub fn refused_literal(&self, configured: &Uri, to: &Uri) -> Option<IpAddr> {
        let ip = literal(to)?;
        (!is_global(ip) && !self.configured_is_local(configured)).then_some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn feeds_origin_makes_the_port_explicit_and_ignores_case_and_path() {
        assert_eq!(
            origin(&uri("https://Feeds.Example/x?y")),
            "https://feeds.example:443"
        );
        assert_eq!(
            origin(&uri("http://feeds.example/x")),
            "http://feeds.example:80"
        );
        assert_eq!(origin(&uri("http://[::1]:8080/x")), "http://[::1]:8080");
        assert_ne!(
            origin(&uri("https://a.example/")),
            origin(&uri("http://a.example:443/"))
        );
    }

    #[test]
    fn feeds_redirect_literals_are_judged_against_the_configured_url() {
        let g = HopGuard::default();
        let global = uri("https://11.0.0.1/feed");
        let local = uri("http://127.0.0.1:8080/feed");
        for to in [
            "http://127.0.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:192.168.0.1]/x",
        ] {
            assert!(g.refused_literal(&global, &uri(to)).is_some(), "{to}");
            assert_eq!(g.refused_literal(&local, &uri(to)), None, "{to}");
        }
        assert_eq!(g.refused_literal(&global, &uri("https://8.8.8.8/x")), None);
        // A name is judged when it resolves, not here.
        assert_eq!(g.refused_literal(&global, &uri("http://localhost/x")), None);
    }
}
