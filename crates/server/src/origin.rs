//! Who may talk to the server from a browser: the `Host` a request names (DNS
//! rebinding: a page on `evil.example` whose name is made to resolve to 127.0.0.1
//! reaches the server with `Host: evil.example`) and the `Origin` a page sends (a page
//! on another site calling the API). Both are refused unless the operator allowed
//! them (`--allowed-hosts`, `--cors`); clients that are not browsers send no `Origin`
//! and name the address they connect to, so they are not affected.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The host part of a `Host` header value (`name:port`, `[v6]:port`), lower-cased,
/// without a trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets out: `[::1]:8080` → `::1`.
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request may name `host` (the `Host` header's value): a loopback name, an
/// IP address (DNS rebinding needs a domain name: a literal address can only be the
/// server's own), the address the server listens on, or one of `allowed` (`*`: any).
pub(crate) fn host_allowed(host: &str, listen_host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    if name.is_empty() {
        return false;
    }
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok()
        || name == host_name(listen_host)
        || allowed.iter().any(|a| a == "*" || host_name(a) == name)
}

/// What to do with a request's `Origin`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OriginCheck {
    /// No `Origin` (not a browser, or a same-origin GET): nothing to add.
    Absent,
    /// The page is served by this server (the chat page): no CORS headers needed.
    SameOrigin,
    /// Allowed by `--cors`: answer with `Access-Control-Allow-Origin` set to this.
    Allowed(String),
    /// Another site's page: refused.
    Refused(String),
}

/// Checks the request's `Origin` against its `Host` and the `--cors` list.
pub(crate) fn check_origin(headers: &HeaderMap, cors: &[String]) -> OriginCheck {
    let Some(origin) = headers.get("origin") else {
        return OriginCheck::Absent;
    };
    let origin = String::from_utf8_lossy(origin.as_bytes())
        .trim()
        .to_string();
    let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
    if cors.iter().any(|c| c == "*") {
        return OriginCheck::Allowed("*".into());
    }
    if cors
        .iter()
        .any(|c| c.trim_end_matches('/').to_ascii_lowercase() == normalized)
    {
        return OriginCheck::Allowed(origin);
    }
    // Same origin: the origin's `host[:port]` is what the request names in `Host`.
    let authority = normalized
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase());
    if !authority.is_empty() && host.as_deref() == Some(authority) {
        return OriginCheck::SameOrigin;
    }
    OriginCheck::Refused(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_parsed_with_and_without_ports() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn hosts_are_loopback_literal_listen_or_allowed() {
        let none: &[String] = &[];
        for ok in [
            "localhost:1",
            "127.0.0.1:8080",
            "[::1]:9",
            "10.1.2.3",
            "a.localhost",
        ] {
            assert!(host_allowed(ok, "127.0.0.1", none), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_allowed(bad, "127.0.0.1", none), "{bad}");
        }
        assert!(host_allowed("box.lan:8080", "box.lan", none));
        assert!(host_allowed("Box.Lan", "0.0.0.0", &["box.lan".into()]));
        assert!(host_allowed("evil.example", "0.0.0.0", &["*".into()]));
    }

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("origin", origin.parse().unwrap());
        h.insert("host", host.parse().unwrap());
        h
    }

    #[test]
    fn origins_are_same_allowed_or_refused() {
        assert_eq!(check_origin(&HeaderMap::new(), &[]), OriginCheck::Absent);
        assert_eq!(
            check_origin(&headers("http://127.0.0.1:8080", "127.0.0.1:8080"), &[]),
            OriginCheck::SameOrigin
        );
        assert_eq!(
            check_origin(&headers("http://evil.example", "127.0.0.1:8080"), &[]),
            OriginCheck::Refused("http://evil.example".into())
        );
        assert_eq!(
            check_origin(&headers("null", "127.0.0.1:8080"), &[]),
            OriginCheck::Refused("null".into())
        );
        let cors = ["https://app.example/".to_string()];
        assert_eq!(
            check_origin(&headers("https://app.example", "127.0.0.1:8080"), &cors),
            OriginCheck::Allowed("https://app.example".into())
        );
        assert_eq!(
            check_origin(&headers("https://other.example", "127.0.0.1:8080"), &cors),
            OriginCheck::Refused("https://other.example".into())
        );
        assert_eq!(
            check_origin(&headers("https://any.example", "x"), &["*".into()]),
            OriginCheck::Allowed("*".into())
        );
    }
}
