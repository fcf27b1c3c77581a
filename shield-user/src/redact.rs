//! What of a URL may be shown: feed and LAPI URLs carry credentials and API
//! keys, and every log line, error, `feeds list` row and status that names
//! one goes through [`redact_url`]. A leaf module: config, feeds and
//! crowdsec all use it.

/// The URL as it may be shown anywhere (logs, errors, `feeds list`,
/// status): a `user:password@` becomes `***@`, and every query value and
/// the fragment become `***`, because feed services put API keys there
/// (`?token=`, `?key=`, `?apikey=`) under names nobody can list in advance.
/// The scheme, host, path and query keys stay, which is what an operator
/// needs to tell feeds apart.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = head.to_string();
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => (&tail[..i], Some(())),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let parts: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None if kv.is_empty() => String::new(),
                    // A bare value (`?SECRET`) is a value too.
                    None => "***".to_string(),
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if fragment.is_some() {
        out.push_str("#***");
    }
    out
}

/// Whether `url` carries anything [`redact_url`] hides: the one notion of
/// what in a URL is secret, for the checks of who may read the config.
pub fn url_has_secrets(url: &str) -> bool {
    redact_url(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_query_values_are_masked() {
        assert_eq!(
            redact_url("https://user:pw@feeds.example/x?y=1"),
            "https://***@feeds.example/x?y=***"
        );
        assert_eq!(
            redact_url("https://feeds.example/list.txt?format=txt&token=s3cr3t#k=v"),
            "https://feeds.example/list.txt?format=***&token=***#***"
        );
        assert_eq!(
            redact_url("https://feeds.example/x?S3CR3T"),
            "https://feeds.example/x?***"
        );
        assert_eq!(redact_url("https://u:p@h.example"), "https://***@h.example");
        assert_eq!(
            redact_url("https://feeds.example/a@b"),
            "https://feeds.example/a@b"
        );
        assert_eq!(redact_url("no scheme"), "no scheme");
        assert!(url_has_secrets("https://u:p@h.example/x"));
        assert!(url_has_secrets("https://h.example/x?token=t"));
        assert!(!url_has_secrets("https://feeds.example/a@b"));
        assert!(!url_has_secrets("https://www.spamhaus.org/drop/drop.txt"));
    }
}
