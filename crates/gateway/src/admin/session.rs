//! The console's session: a cookie signed with the admin token, so every
//! node that shares ADMIN_TOKEN accepts it (a load balancer may send the
//! next request elsewhere) and changing the token ends every session.
//!
//! The value is `{expires}.{nonce}.{signature}`: the expiry in Unix
//! seconds, 16 random bytes, and the HMAC-SHA256 of `expires.nonce` keyed
//! with the token, all hex. The cookie is HttpOnly (no script reads it),
//! SameSite=Strict (no other site's page sends it, which is what stands
//! against cross-site requests), on `/admin` only, and Secure when the
//! client came over TLS through a trusted proxy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub(crate) const COOKIE: &str = "switchboard_admin";
/// How long a session lasts.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sign(token: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(b"switchboard-admin-session:");
    mac.update(payload.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new session's cookie value.
pub(crate) fn issue(token: &str) -> String {
    let expires = now_secs() + LIFETIME.as_secs();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let payload = format!("{expires}.{nonce}");
    let signature = sign(token, &payload);
    format!("{payload}.{signature}")
}

/// Whether `value` is a session this token signed that has not expired.
pub(crate) fn valid(token: &str, value: &str) -> bool {
    let Some((payload, signature)) = value.rsplit_once('.') else {
        return false;
    };
    let Some(expires) = payload
        .split_once('.')
        .and_then(|(e, _)| e.parse::<u64>().ok())
    else {
        return false;
    };
    expires > now_secs() && bool::from(sign(token, payload).as_bytes().ct_eq(signature.as_bytes()))
}

/// The session cookie of a request, if any.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` of a new session.
pub(crate) fn set_cookie(value: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    );
    HeaderValue::try_from(cookie).unwrap_or_else(|_| unreachable!("hex and digits only"))
}

/// The `Set-Cookie` that ends the session in the browser.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "switchboard_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_for_its_token_only_and_not_once_altered() {
        let value = issue("token-0123456789abcdef");
        assert!(valid("token-0123456789abcdef", &value));
        assert!(!valid("another-token-0123456789", &value));
        let (payload, signature) = value.rsplit_once('.').unwrap();
        let (expires, nonce) = payload.split_once('.').unwrap();
        let later = format!(
            "{}.{nonce}.{signature}",
            expires.parse::<u64>().unwrap() + 1
        );
        assert!(!valid("token-0123456789abcdef", &later));
        for bad in ["", "x", "1.2", "..", "99999999999.a.b"] {
            assert!(!valid("token-0123456789abcdef", bad), "{bad}");
        }
        let past = format!("1.{nonce}");
        let expired = format!("{past}.{}", sign("token-0123456789abcdef", &past));
        assert!(!valid("token-0123456789abcdef", &expired));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; switchboard_admin=v.w.x; b=2"),
        );
        assert_eq!(presented(&headers), Some("v.w.x"));
        assert!(presented(&HeaderMap::new()).is_none());
    }
}
