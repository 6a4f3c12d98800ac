//! The authentication settings: AUTH, JWT_SECRET, JWT_PUBLIC_KEY,
//! JWT_AUDIENCE, JWT_ISSUER, API_KEY, ALLOWED_ORIGINS and METRICS_PUBLIC,
//! checked and turned into the gateway's `AuthConfig`.

use std::sync::Arc;

use clap::ValueEnum;
use switchboard_gateway::{AllowedOrigins, AuthConfig, AuthMode, TokenVerifier};

use super::{Config, ConfigError, invalid};

/// A setting that must not appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Whether connections need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// Anyone may connect.
    Off,
    /// A valid JWT is required.
    Required,
}

/// Who may connect, read history, publish and scrape metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// `off`: anyone may connect and pick a name (a token, when given, is
    /// still checked); `required`: every connection needs a valid JWT.
    #[arg(long, env = "AUTH", value_enum, default_value = "off", global = true)]
    pub auth: AuthArg,
    /// HS256 secret for connection tokens (at least 32 bytes).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,
    /// RS256 or ES256 public key for connection tokens: the PEM text, or a
    /// path to a PEM file.
    #[arg(long, env = "JWT_PUBLIC_KEY", hide_env_values = true, global = true)]
    pub jwt_public_key: Option<String>,
    /// The `aud` a token must name; unset: `aud` is not checked.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// The `iss` a token must have; unset: `iss` is not checked.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Seconds of clock skew allowed around a token's `exp` and `nbf`; a
    /// connection lasts until its token's `exp` plus this (0..=300).
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30, global = true)]
    pub jwt_leeway_secs: u64,
    /// Milliseconds before its token expires that a connection is sent
    /// `token_expiring` (then `refresh`, or it is closed at expiry).
    #[arg(
        long,
        env = "TOKEN_WARNING_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub token_warning_ms: u64,
    /// Bearer key of `POST /api/rooms/{room}/messages`; unset disables it.
    #[arg(long, env = "API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<Secret>,
    /// Browser origins allowed to open sockets, comma-separated
    /// (`scheme://host[:port]`, or `*`); default any with AUTH=off, the
    /// node's own origin with AUTH=required.
    #[arg(long, env = "ALLOWED_ORIGINS", global = true)]
    pub allowed_origins: Option<String>,
    /// Whether /metrics and /api/stats answer without credentials on the
    /// main listener; default: yes with AUTH=off, no with AUTH=required
    /// (then they need the API key, or METRICS_ADDR).
    #[arg(long, env = "METRICS_PUBLIC", global = true)]
    pub metrics_public: Option<bool>,
    /// The admin console's credential (at least 16 characters); unset or
    /// empty: no console at /admin.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<Secret>,
}

impl Config {
    /// ADMIN_TOKEN, when set and not empty.
    pub fn admin_token(&self) -> Option<switchboard_gateway::AdminToken> {
        self.auth
            .admin_token
            .as_ref()
            .filter(|t| !t.0.is_empty())
            .map(|t| switchboard_gateway::AdminToken(t.0.clone()))
    }

    /// METRICS_PUBLIC, else open only when AUTH is off.
    pub fn metrics_public(&self) -> bool {
        self.auth
            .metrics_public
            .unwrap_or(self.auth.auth == AuthArg::Off)
    }

    /// The gateway's authentication settings, checked.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let auth = &self.auth;
        let tokens = match (&auth.jwt_secret, &auth.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "JWT_SECRET",
                    "either JWT_SECRET or JWT_PUBLIC_KEY, not both",
                ));
            }
            (Some(secret), None) if secret.0.len() < 32 => {
                return Err(invalid("JWT_SECRET", "at least 32 bytes"));
            }
            (Some(secret), None) => Some(TokenVerifier::hs256(secret.0.as_bytes())),
            (None, Some(key)) => {
                let pem = if key.trim_start().starts_with("-----BEGIN") {
                    key.clone().into_bytes()
                } else {
                    std::fs::read(key).map_err(|e| {
                        invalid(
                            "JWT_PUBLIC_KEY",
                            format!("PEM text or a readable PEM file ({e})"),
                        )
                    })?
                };
                Some(
                    TokenVerifier::public_key_pem(&pem)
                        .map_err(|e| invalid("JWT_PUBLIC_KEY", e.to_string()))?,
                )
            }
            (None, None) => None,
        };
        let for_claim = |value: &Option<String>, var| match value.as_deref().map(str::trim) {
            Some("") => Err(invalid(var, "a non-empty string, or unset")),
            other => Ok(other.map(str::to_owned)),
        };
        let audience = for_claim(&auth.jwt_audience, "JWT_AUDIENCE")?;
        let issuer = for_claim(&auth.jwt_issuer, "JWT_ISSUER")?;
        if tokens.is_none() && (audience.is_some() || issuer.is_some()) {
            return Err(invalid(
                if audience.is_some() {
                    "JWT_AUDIENCE"
                } else {
                    "JWT_ISSUER"
                },
                "set only with JWT_SECRET or JWT_PUBLIC_KEY",
            ));
        }
        if auth.jwt_leeway_secs > 300 {
            return Err(invalid("JWT_LEEWAY_SECS", "0 to 300 seconds"));
        }
        let tokens = tokens.map(|mut verifier| {
            verifier = verifier.with_leeway(auth.jwt_leeway_secs);
            if let Some(audience) = &audience {
                verifier = verifier.with_audience(audience);
            }
            if let Some(issuer) = &issuer {
                verifier = verifier.with_issuer(issuer);
            }
            verifier
        });
        let mode = match auth.auth {
            AuthArg::Off => AuthMode::Off,
            AuthArg::Required if tokens.is_none() => {
                return Err(invalid(
                    "AUTH",
                    "`required` needs JWT_SECRET or JWT_PUBLIC_KEY",
                ));
            }
            AuthArg::Required => AuthMode::Required,
        };
        let allowed_origins = match auth.allowed_origins.as_deref().map(str::trim) {
            None | Some("") => match mode {
                AuthMode::Off => AllowedOrigins::Any,
                AuthMode::Required => AllowedOrigins::SameOrigin,
            },
            Some("*") => AllowedOrigins::Any,
            Some(list) => {
                let origins: Vec<String> = list
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .collect();
                let ok = origins.iter().all(|o| {
                    url::Url::parse(o)
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                });
                if !ok {
                    return Err(invalid(
                        "ALLOWED_ORIGINS",
                        "`*` or comma-separated origins like https://chat.example.com",
                    ));
                }
                AllowedOrigins::List(origins)
            }
        };
        if auth.api_key.as_ref().is_some_and(|k| k.0.len() < 16) {
            return Err(invalid("API_KEY", "at least 16 characters"));
        }
        if auth
            .admin_token
            .as_ref()
            .is_some_and(|k| !k.0.is_empty() && k.0.len() < 16)
        {
            return Err(invalid("ADMIN_TOKEN", "at least 16 characters"));
        }
        Ok(AuthConfig {
            mode,
            tokens: tokens.map(Arc::new),
            api_key: auth.api_key.as_ref().map(|k| k.0.clone()),
            allowed_origins,
        })
    }
}
