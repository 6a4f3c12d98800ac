//! The authentication settings: AUTH, JWT_SECRET, JWT_PUBLIC_KEY, API_KEY
//! and ALLOWED_ORIGINS, checked and turned into the gateway's `AuthConfig`.

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

impl Config {
    /// The gateway's authentication settings, checked.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let tokens = match (&self.jwt_secret, &self.jwt_public_key) {
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
        let mode = match self.auth {
            AuthArg::Off => AuthMode::Off,
            AuthArg::Required if tokens.is_none() => {
                return Err(invalid(
                    "AUTH",
                    "`required` needs JWT_SECRET or JWT_PUBLIC_KEY",
                ));
            }
            AuthArg::Required => AuthMode::Required,
        };
        let allowed_origins = match self.allowed_origins.as_deref().map(str::trim) {
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
        if self.api_key.as_ref().is_some_and(|k| k.0.len() < 16) {
            return Err(invalid("API_KEY", "at least 16 characters"));
        }
        Ok(AuthConfig {
            mode,
            tokens: tokens.map(Arc::new),
            api_key: self.api_key.as_ref().map(|k| k.0.clone()),
            allowed_origins,
        })
    }
}
