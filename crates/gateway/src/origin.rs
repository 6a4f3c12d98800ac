//! The browser origins allowed to open sockets: another site's page must
//! not open a socket with a user's cookies.

use axum::http::{HeaderMap, header};

/// Browser origins allowed to open sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin.
    Any,
    /// Only pages served by this node (`Origin` matches `Host`).
    SameOrigin,
    /// Exactly these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request with these headers may open a socket; `tls` says
    /// whether the client reached us over TLS (through a trusted proxy), so
    /// that same-origin compares the scheme too. Requests without `Origin`
    /// are not from a browser page and pass: the check is there so another
    /// site cannot open a socket with a user's cookies.
    pub fn allows(&self, headers: &HeaderMap, tls: bool) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true;
        };
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::SameOrigin => {
                let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
                    return false;
                };
                let scheme = if tls { "https" } else { "http" };
                let expected = format!("{scheme}://{host}");
                origin.eq_ignore_ascii_case(&expected)
            }
            AllowedOrigins::List(list) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let headers = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        let same = AllowedOrigins::SameOrigin;
        assert!(same.allows(
            &headers(Some("http://chat.example:8000"), "chat.example:8000"),
            false
        ));
        assert!(!same.allows(
            &headers(Some("https://evil.example"), "chat.example:8000"),
            false
        ));
        assert!(
            same.allows(&headers(None, "chat.example:8000"), false),
            "not a browser"
        );
        // The scheme is part of the origin: a plain-HTTP page may not open
        // sockets of the TLS site, and the other way round.
        assert!(!same.allows(
            &headers(Some("https://chat.example:8000"), "chat.example:8000"),
            false
        ));
        assert!(!same.allows(&headers(Some("http://chat.example"), "chat.example"), true));
        assert!(same.allows(&headers(Some("https://chat.example"), "chat.example"), true));
        assert!(!same.allows(&headers(Some("ftp://chat.example"), "chat.example"), false));
        let list = AllowedOrigins::List(vec!["https://app.example".into()]);
        assert!(list.allows(&headers(Some("https://app.example"), "x"), false));
        assert!(!list.allows(&headers(Some("https://app.example.evil"), "x"), false));
        assert!(AllowedOrigins::Any.allows(&headers(Some("https://evil.example"), "x"), false));
    }
}
