//! Tokens for the tests: one HS256 secret and one API key.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

pub const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
pub const API_KEY: &str = "test-api-key-0123456789";

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `claims` signed with [`SECRET`].
pub fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Node settings named `node` with the server API on ([`API_KEY`]) and
/// anonymous clients allowed.
#[allow(dead_code)]
pub fn api_config(node: &str) -> switchboard_gateway::GatewayConfig {
    use switchboard_gateway::{AllowedOrigins, AuthConfig, AuthMode, GatewayConfig};
    GatewayConfig {
        node_id: node.into(),
        auth: AuthConfig {
            mode: AuthMode::Off,
            tokens: None,
            api_key: Some(API_KEY.into()),
            allowed_origins: AllowedOrigins::Any,
        },
        ..GatewayConfig::default()
    }
}
