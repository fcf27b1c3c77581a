//! Just enough HTTP/1.x to answer a scrape: finding the end of a request
//! head and routing its request line. Pure functions over bytes, so every
//! hostile input can be tested without a socket.

/// What a request asks for, once its head is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `GET` or `HEAD` of a known path; `head` means no body in the reply.
    Route { route: Route, head: bool },
    /// A method other than `GET` or `HEAD`.
    MethodNotAllowed,
    /// An HTTP version other than 1.0 or 1.1.
    VersionNotSupported,
    /// Not an HTTP/1.x request line.
    Bad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics,
    Index,
    NotFound,
}

/// The length of the head (request line and headers, with the empty line
/// that ends them) at the start of `buf`, if it is all there. `from` is how
/// much of `buf` an earlier call already searched, so a client that sends a
/// byte at a time costs linear time, not quadratic.
///
/// Lines may end in CRLF or, leniently, a bare LF. Empty lines before the
/// request line (which RFC 9112 asks servers to ignore) do not end the head.
pub(crate) fn head_len(buf: &[u8], from: usize) -> Option<usize> {
    let start = leading_empty_lines(buf);
    // Back up over a line ending that an earlier search saw half of.
    let from = from.saturating_sub(3).max(start);
    let mut i = from;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + off;
        // The line that ends at `lf` is empty if it began right after the
        // previous LF (or after one with a CR before this LF). An empty line
        // at the very start was skipped above, so the head has a request
        // line before it.
        if lf > start {
            match (buf.get(lf - 1), lf.checked_sub(2).and_then(|j| buf.get(j))) {
                (Some(b'\n'), _) => return Some(lf + 1),
                (Some(b'\r'), Some(b'\n')) if lf - 1 > start => return Some(lf + 1),
                _ => {}
            }
        }
        i = lf + 1;
    }
    None
}

/// How many bytes of empty lines come before the request line.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match (buf.get(i), buf.get(i + 1)) {
            (Some(b'\n'), _) => i += 1,
            (Some(b'\r'), Some(b'\n')) => i += 2,
            _ => return i,
        }
    }
}

/// Routes a complete head. Headers are not looked at: with one request per
/// connection and no body read, none of them changes the answer.
pub(crate) fn parse(head: &[u8]) -> Request {
    let head = head.get(leading_empty_lines(head)..).unwrap_or_default();
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(n) => head.get(..n).unwrap_or_default(),
        None => head,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Request::Bad;
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if is_http_version(v) => return Request::VersionNotSupported,
        _ => return Request::Bad,
    }
    let Some(path) = path_of(target) else {
        return Request::Bad;
    };
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => Route::NotFound,
    };
    Request::Route { route, head }
}

/// The path of an origin-form (`/metrics?x`) or absolute-form
/// (`http://host/metrics`) target, without query or fragment.
fn path_of(target: &str) -> Option<&str> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let after_scheme = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))?;
        match after_scheme.find('/') {
            Some(i) => after_scheme.get(i..)?,
            None => "/",
        }
    };
    if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    rest.get(..end)
}

/// `HTTP/<digit>.<digit>` (or `HTTP/2`): a well-formed version we do not speak.
fn is_http_version(v: &str) -> bool {
    let Some(n) = v.strip_prefix("HTTP/") else {
        return false;
    };
    let b = n.as_bytes();
    match b {
        [d] => d.is_ascii_digit(),
        [d, b'.', e] => d.is_ascii_digit() && e.is_ascii_digit(),
        _ => false,
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(line: &str) -> Request {
        parse(format!("{line}\r\nHost: x\r\n\r\n").as_bytes())
    }

    #[test]
    fn routes() {
        let get = |route| Request::Route { route, head: false };
        assert_eq!(route("GET /metrics HTTP/1.1"), get(Route::Metrics));
        assert_eq!(route("GET /metrics HTTP/1.0"), get(Route::Metrics));
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1"), get(Route::Metrics));
        assert_eq!(
            route("GET http://h:9964/metrics HTTP/1.1"),
            get(Route::Metrics)
        );
        assert_eq!(route("GET http://h:9964 HTTP/1.1"), get(Route::Index));
        assert_eq!(route("GET / HTTP/1.1"), get(Route::Index));
        assert_eq!(route("GET /metrics/ HTTP/1.1"), get(Route::NotFound));
        assert_eq!(route("GET /metricsx HTTP/1.1"), get(Route::NotFound));
        assert_eq!(
            route("HEAD /metrics HTTP/1.1"),
            Request::Route {
                route: Route::Metrics,
                head: true
            }
        );
        assert_eq!(route("POST /metrics HTTP/1.1"), Request::MethodNotAllowed);
        assert_eq!(route("get /metrics HTTP/1.1"), Request::MethodNotAllowed);
        assert_eq!(route("GET /metrics HTTP/2.0"), Request::VersionNotSupported);
        assert_eq!(route("GET /metrics HTTP/2"), Request::VersionNotSupported);
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 x",
            "GET metrics HTTP/1.1",
            "GET ftp://h/metrics HTTP/1.1",
            "G(T /metrics HTTP/1.1",
            "GET /metrics FOO/1.1",
            "GET /met\u{1}rics HTTP/1.1",
        ] {
            assert_eq!(route(bad), Request::Bad, "{bad:?}");
        }
        assert_eq!(parse(b"GET /\xff HTTP/1.1\r\n\r\n"), Request::Bad);
    }

    #[test]
    fn bare_lf_and_leading_empty_lines() {
        let get = Request::Route {
            route: Route::Metrics,
            head: false,
        };
        assert_eq!(parse(b"GET /metrics HTTP/1.1\n\n"), get);
        assert_eq!(parse(b"\r\n\nGET /metrics HTTP/1.1\r\n\r\n"), get);
    }

    #[test]
    fn head_end() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\n", 0), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\n\r\n", 0), Some(23));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(head_len(b"", 0), None);
        // Empty lines before the request line do not end the head.
        assert_eq!(head_len(b"\r\n\r\n", 0), None);
        assert_eq!(head_len(b"\n\n\r\n", 0), None);
        assert_eq!(head_len(b"\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(20));
        assert_eq!(head_len(b"\r\r\n\r\n", 0), Some(5));
    }

    #[test]
    fn incremental_search_agrees_with_whole() {
        let req = b"\r\nGET /metrics HTTP/1.1\r\nHost: a\r\nX: y\n\r\n";
        let whole = head_len(req, 0);
        assert!(whole.is_some());
        // Fed one byte at a time, each search resuming where the last ended.
        let mut found = None;
        for n in 1..=req.len() {
            if let Some(len) = head_len(&req[..n], n - 1) {
                found = Some(len);
                break;
            }
        }
        assert_eq!(found, whole);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_agrees(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), split in 0usize..200) {
            let whole = head_len(&bytes, 0);
            let split = split.min(bytes.len());
            // Searching in two steps finds the same end as in one, unless the
            // end was already complete in the first part.
            let two = head_len(&bytes[..split], 0).or_else(|| head_len(&bytes, split));
            proptest::prop_assert_eq!(whole, two);
            let _ = parse(&bytes);
            if let Some(n) = whole {
                proptest::prop_assert!(n <= bytes.len());
                let _ = parse(&bytes[..n]);
            }
        }
    }
}
