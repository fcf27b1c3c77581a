//! The config file decides what shield blocks and allows, so whoever can
//! write it controls the host's filter; and it may hold feed credentials,
//! so whoever can read it holds those. These checks say who that is.

use std::{os::unix::fs::MetadataExt, path::Path};

use crate::{
    config::{Config, FeedSource},
    control::server::{CONTROL_GROUP, lookup_group},
    redact::url_has_secrets,
};

/// Who besides root could rewrite the policy through the config file.
/// A world-writable config lets any local user unblock themselves or
/// black-hole the host at the next reload; group write is fine for root's
/// group and for the control group (whose members can change the policy
/// over the socket anyway), and a warning for any other group. A config
/// `cfg` (what `path` holds) whose URLs carry credentials (what
/// `redact_url` hides: `user:password@`, query values) must not be
/// readable by every user (docs/SECURITY.md, "Files").
pub fn config_file_warnings(path: &Path, cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(md) = std::fs::metadata(path) else {
        return out;
    };
    let mode = md.mode() & 0o7777;
    let shown = path.display();
    if mode & 0o002 != 0 {
        out.push(format!(
            "{shown} is world-writable (mode {mode:04o}): any local user can change what shield blocks and allows; run `chmod o-w {shown}`"
        ));
    }
    if mode & 0o004 != 0 && holds_credentials(cfg) {
        out.push(format!(
            "{shown} is readable by every user (mode {mode:04o}) and holds credentials (a feed or LAPI URL with a password or query values): run `chown root:{CONTROL_GROUP} {shown} && chmod 0640 {shown}`"
        ));
    }
    if mode & 0o020 != 0 && md.gid() != 0 {
        let control = lookup_group(CONTROL_GROUP).ok().flatten();
        if control != Some(md.gid()) {
            out.push(format!(
                "{shown} is writable by group {} (mode {mode:04o}), which is neither root nor `{}`: its members can change the policy; run `chmod g-w {shown}`",
                md.gid(),
                CONTROL_GROUP
            ));
        }
    }
    if md.uid() != 0 {
        out.push(format!(
            "{shown} is owned by uid {}, not root: that user can change the policy; run `chown root {shown}`",
            md.uid()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::metadata(dir)
        && d.mode() & 0o002 != 0
        && d.mode() & 0o1000 == 0
    {
        out.push(format!(
            "{} (the config's directory) is world-writable: any local user can replace {shown}",
            dir.display()
        ));
    }
    out
}

/// Whether a URL in `cfg` carries a secret.
fn holds_credentials(cfg: &Config) -> bool {
    let feeds = cfg.feeds.iter().filter_map(|f| match &f.source {
        FeedSource::Url(u) => Some(u.as_str()),
        FeedSource::Path(_) => None,
    });
    let lapi = cfg.crowdsec.iter().map(|c| c.lapi_url.as_str());
    feeds.chain(lapi).any(url_has_secrets)
}
