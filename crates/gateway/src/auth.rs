//! Who may connect and what they may do: JWT connection tokens and the API
//! key of the server-side publish endpoint (the browser origins allowed to
//! open sockets are in `origin.rs`).
//!
//! A token is checked before the WebSocket upgrade (or, for Socket.IO, before
//! the namespace CONNECT is answered). Its claims become the connection's
//! [`Identity`]: `name` replaces whatever name the client asked for, so the
//! `from` of its messages cannot be forged, and `rooms` bounds what it may
//! join. Errors name what was wrong with the token, never the key.

use std::sync::Arc;

use axum::http::{HeaderMap, header};

pub use crate::origin::AllowedOrigins;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use switchboard_protocol::{ErrorCode, FrameError, RoomName, validate_name};

use crate::policy::{JoinRule, PublishRule};

/// Whether connections need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may connect and pick a display name; a token, when given, is
    /// still checked and used.
    Off,
    /// Every connection needs a valid token.
    Required,
}

/// The node's authentication settings.
#[derive(Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// How tokens are checked; required when `mode` is `Required`.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// The bearer key of `POST /api/rooms/{room}/messages`; the endpoint
    /// does not exist without one.
    pub api_key: Option<String>,
    pub allowed_origins: AllowedOrigins,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the secret.
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("tokens", &self.tokens.as_ref().map(|t| t.algorithm))
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            tokens: None,
            api_key: None,
            allowed_origins: AllowedOrigins::Any,
        }
    }
}

/// Checks connection tokens signed with one key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl TokenVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Requires the `aud` claim to name `audience` (`JWT_AUDIENCE`). Without
    /// it, an `aud` claim is tolerated and not checked.
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.require("aud");
        self
    }

    /// Requires the `iss` claim to be `issuer` (`JWT_ISSUER`).
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.require("iss");
        self
    }

    /// Seconds of clock skew allowed around `exp` and `nbf`
    /// (`JWT_LEEWAY_SECS`, 30 by default); a connection lasts until its
    /// token's `exp` plus this.
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    fn require(&mut self, claim: &str) {
        self.validation
            .required_spec_claims
            .insert(claim.to_owned());
    }

    /// RS256 or ES256 (P-256), whichever the PEM public key is.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        Err(KeyError("not a PEM RSA or EC (P-256) public key".into()))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        // One algorithm only: a token cannot pick another (or `none`).
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token valid from later is not valid now.
        validation.validate_nbf = true;
        // Checked only when an audience is configured (`with_audience`).
        validation.validate_aud = false;
        validation.leeway = 30;
        Self {
            key,
            validation,
            algorithm,
        }
    }

    /// The identity a token stands for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Algorithm
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Claims(format!("the `{claim}` claim is required"))
                }
                ErrorKind::Json(_) => AuthError::Claims("claims of the wrong type".into()),
                _ => AuthError::Malformed,
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Claims("`sub` must not be empty".into()));
        }
        let name = validate_name(claims.name.as_deref().unwrap_or(&claims.sub))
            .map_err(|e| AuthError::Claims(format!("`name`: {e}")))?;
        Ok(Identity {
            user: Some(claims.sub),
            name,
            rooms: claims.rooms.map(Into::into),
            publish: claims.publish.map(Into::into),
            exp: Some(claims.exp),
            expires_at: Some(claims.exp.saturating_add(self.validation.leeway)),
        })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
    exp: u64,
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

/// Why a token was refused. The messages say what was wrong with the token,
/// never anything about the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: pass ?token= or Authorization: Bearer")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("the token's `aud` does not name this server")]
    Audience,
    #[error("the token's `iss` is not the accepted issuer")]
    Issuer,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token is not signed with the algorithm this server accepts")]
    Algorithm,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    #[error("tokens are not configured on this server")]
    NotConfigured,
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`; `None` for anonymous connections.
    pub user: Option<String>,
    /// The display name that becomes the `from` of its messages.
    pub name: String,
    /// Rooms it may join (exact names, or prefixes ending in `*`); `None`
    /// for any room (of a namespace that does not ask for a grant).
    pub rooms: Option<Arc<[String]>>,
    /// Rooms it may send to, the same way; `None` for any it joined (of a
    /// namespace that does not ask for a grant).
    pub publish: Option<Arc<[String]>>,
    /// The token's `exp` (Unix seconds); `None` without a token.
    pub exp: Option<u64>,
    /// When the connection must end unless refreshed (Unix seconds): `exp`
    /// plus the clock-skew leeway a token is accepted with.
    pub expires_at: Option<u64>,
}

/// The name of a client that gave none: `anon-` and six hex digits.
pub(crate) fn anonymous_name() -> String {
    format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

impl Identity {
    /// An anonymous connection with the name it asked for.
    pub fn anonymous(name: String) -> Self {
        Self {
            user: None,
            name,
            rooms: None,
            publish: None,
            exp: None,
            expires_at: None,
        }
    }

    /// `forbidden` unless it may join `room`, whose namespace asks `rule`.
    pub fn check_join(&self, room: &RoomName, rule: JoinRule) -> Result<(), FrameError> {
        if self.may_join(room, rule) {
            return Ok(());
        }
        Err(FrameError::new(
            ErrorCode::Forbidden,
            format!("your token does not allow joining `{room}`"),
        ))
    }

    /// Whether it may join `room`: the `rooms` claim names it, or there is
    /// no claim and the namespace lets anyone in.
    pub fn may_join(&self, room: &RoomName, rule: JoinRule) -> bool {
        match &self.rooms {
            Some(patterns) => matches(patterns, room),
            None => rule == JoinRule::Anyone,
        }
    }

    /// `forbidden` unless it may send to `room`, whose namespace asks
    /// `rule`: the `publish` claim names it, or there is no claim and the
    /// namespace lets members send; never where only the server publishes.
    pub fn check_publish(&self, room: &RoomName, rule: PublishRule) -> Result<(), FrameError> {
        let allowed = match (rule, &self.publish) {
            (PublishRule::Server, _) => false,
            (_, Some(patterns)) => matches(patterns, room),
            (PublishRule::Members, None) => true,
            (PublishRule::Granted, None) => false,
        };
        if allowed {
            return Ok(());
        }
        let why = if rule == PublishRule::Server {
            format!("only the server publishes to `{room}`")
        } else {
            format!("your token does not allow sending to `{room}`")
        };
        Err(FrameError::new(ErrorCode::Forbidden, why))
    }
}

/// Whether a claim's patterns (exact names, or prefixes ending in `*`)
/// name `room`.
fn matches(patterns: &[String], room: &RoomName) -> bool {
    let room = room.as_str();
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

impl AuthConfig {
    /// The identity of a connecting client: from `token` when there is one
    /// (or when tokens are required), else anonymous with `name`.
    pub fn identify(
        &self,
        token: Option<&str>,
        name: impl FnOnce() -> String,
    ) -> Result<Identity, AuthError> {
        match (token, &self.tokens, self.mode) {
            (Some(token), Some(verifier), _) => verifier.verify(token),
            (None, _, AuthMode::Required) => Err(AuthError::Missing),
            (Some(_), None, AuthMode::Required) => Err(AuthError::NotConfigured),
            (_, _, AuthMode::Off) => Ok(Identity::anonymous(name())),
        }
    }

    /// The identity of a `refresh`'s token for the connection of `user`
    /// that lasts until `expires_at`: the same user and a later expiry,
    /// else `forbidden` and nothing changes.
    pub fn refresh(
        &self,
        user: Option<&str>,
        expires_at: u64,
        token: &str,
    ) -> Result<Identity, FrameError> {
        let forbidden = |why: String| FrameError::new(ErrorCode::Forbidden, why);
        let (Some(verifier), Some(user)) = (&self.tokens, user) else {
            return Err(forbidden("this connection has no token to refresh".into()));
        };
        let fresh = verifier
            .verify(token)
            .map_err(|e| forbidden(format!("the new token is refused: {e}")))?;
        if fresh.user.as_deref() != Some(user) {
            return Err(forbidden("the new token is for another user".into()));
        }
        if fresh.expires_at.unwrap_or(0) <= expires_at {
            return Err(forbidden(
                "the new token does not expire later than the current one".into(),
            ));
        }
        Ok(fresh)
    }

    /// Whether `presented` is the API key, compared in constant time.
    pub fn api_key_matches(&self, presented: &str) -> bool {
        match &self.api_key {
            Some(key) => bool::from(key.as_bytes().ct_eq(presented.as_bytes())),
            None => false,
        }
    }
}

/// The token of an upgrade request: `?token=` or `Authorization: Bearer`.
pub fn request_token<'a>(query_token: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    query_token.or_else(|| bearer(headers))
}

/// The `Authorization: Bearer` credential, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

#[cfg(test)]
mod tests;
