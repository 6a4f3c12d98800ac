//! The one admission step every connection goes through, whatever its
//! protocol: the browser origin, the per-address connect rate, a slot under
//! the node's connection cap, and the client's identity, in that order.
//! `/ws` runs it before the upgrade, Socket.IO before it answers the
//! namespace CONNECT, and the HTTP API runs its identity part.

use std::net::SocketAddr;

use axum::http::HeaderMap;

use crate::Gateway;
use crate::auth::{AuthMode, Identity, anonymous_name};
use crate::error::ApiError;
use crate::limits::ConnectionSlot;
use crate::peer::Client;

/// What a connecting client presents.
pub(crate) struct Handshake<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The request's headers (`Origin`, `Host`, forwarding headers).
    pub headers: &'a HeaderMap,
    /// Its connection token, if it gave one.
    pub token: Option<&'a str>,
    /// The display name it asked for, if any.
    pub name: Option<&'a str>,
}

/// An admitted connection: who it is, and its place under the cap (given
/// back when dropped).
#[derive(Debug)]
pub(crate) struct Admitted {
    pub identity: Identity,
    pub slot: ConnectionSlot,
}

/// Who may read a room's history over HTTP.
pub(crate) enum Reader {
    /// The API key: any room.
    Server,
    /// A token's holder, or anyone when tokens are not required.
    Client(Identity),
}

impl Gateway {
    /// Runs every admission check, counting each refusal.
    pub(crate) fn admit(&self, h: &Handshake<'_>) -> Result<Admitted, ApiError> {
        let slot = self.admit_transport(h.peer, h.headers)?;
        let identity = self.identify(h.token, h.name)?;
        Ok(Admitted { identity, slot })
    }

    /// The transport's part of admission: the origin, the per-address
    /// connect rate and a slot. Socket.IO runs it when an engine.io session
    /// opens (before any namespace CONNECT: the session is what holds
    /// memory), and its identity part when the namespace CONNECT arrives.
    pub(crate) fn admit_transport(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<ConnectionSlot, ApiError> {
        let client = self.client_of(peer, headers);
        self.origin_allowed(client, headers)?;
        self.admission.admit(client.rate_key())
    }

    /// `forbidden_origin` unless the browser origin may open sockets here.
    pub(crate) fn check_origin(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        self.origin_allowed(self.client_of(peer, headers), headers)
    }

    fn origin_allowed(&self, client: Client, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.config.auth.allowed_origins.allows(headers, client.tls) {
            return Ok(());
        }
        auth_refused("origin");
        Err(ApiError::forbidden_origin())
    }

    /// The client behind a request, through the trusted proxies.
    pub(crate) fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> Client {
        Client::resolve(peer, headers, &self.config.trusted_proxies)
    }

    /// The identity of a client presenting `token` and asking for `name`:
    /// the token's when it is verified (a bad requested name does not
    /// matter then, the token names the client), else anonymous under
    /// `name` (with `AUTH=off` and no keys configured a token is not
    /// checked, and the name asked for stands).
    pub(crate) fn identify(
        &self,
        token: Option<&str>,
        name: Option<&str>,
    ) -> Result<Identity, ApiError> {
        let requested = match (name.map(switchboard_protocol::validate_name), token) {
            (Some(Err(e)), None) => return Err(ApiError::bad_name(e)),
            (Some(Ok(name)), _) => Some(name),
            _ => None,
        };
        self.config
            .auth
            .identify(token, || requested.unwrap_or_else(anonymous_name))
            .map_err(|e| {
                auth_refused("token");
                tracing::info!(reason = %e, "token refused");
                ApiError::unauthorized(&e)
            })
    }

    /// Who is asking to read history: the API key, a token, or (with
    /// `AUTH=off` and no credentials) anyone.
    pub(crate) fn reader(&self, token: Option<&str>) -> Result<Reader, ApiError> {
        let auth = &self.config.auth;
        if let Some(token) = token
            && auth.api_key_matches(token)
        {
            return Ok(Reader::Server);
        }
        match (token, auth.mode) {
            (None, AuthMode::Required) => {
                auth_refused("token");
                Err(ApiError::credentials_required(
                    "a token or the API key is required: Authorization: Bearer <token>",
                ))
            }
            _ => self.identify(token, None).map(Reader::Client),
        }
    }
}

fn auth_refused(reason: &'static str) {
    metrics::counter!("switchboard_auth_refusals_total", "reason" => reason).increment(1);
}
