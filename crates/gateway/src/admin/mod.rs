//! The admin console at `/admin`, on when ADMIN_TOKEN is set (every
//! `/admin` path answers 404 otherwise).
//!
//! The page logs in once with the token (`POST /admin/login`), which sets
//! the session cookie ([`session`]); every other console endpoint refuses
//! a request without a valid session (401). Wrong tokens are counted
//! (`switchboard_admin_logins_total{result="refused"}`) and each client
//! address gets 10 attempts a minute (then 429). The page follows the
//! cluster over one Server-Sent Events stream (`GET /admin/live`, a
//! snapshot a second, [`live`]; at most [`MAX_VIEWERS`] streams per node)
//! and acts through the same code as the server API: a room's presence
//! and last messages, disconnecting a name everywhere, deleting a
//! message everywhere.

pub(crate) mod live;
mod session;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::peer::Client;
use crate::{Gateway, http};

pub(crate) use live::{SLOW_CUTS, Tally};

/// Live streams one node serves at once.
pub(crate) const MAX_VIEWERS: usize = 32;
/// Login attempts per client address per minute.
const LOGINS_PER_MINUTE: u32 = 10;
/// Addresses the login limiter remembers at most.
const LIMITER_ADDRESSES: usize = 10_000;
/// The largest login body read.
const LOGIN_BODY_MAX: usize = 1_024;
/// Messages a room lookup shows.
const LOOKUP_MESSAGES: u32 = 20;
/// Names a room lookup lists.
const LOOKUP_NAMES: usize = 100;

const PAGE: &str = include_str!("../../web/admin/index.html");
const CSS: &str = include_str!("../../web/admin/admin.css");
const SCRIPTS: &[(&str, &str)] = &[
    ("admin.js", include_str!("../../web/admin/admin.js")),
    ("chart.js", include_str!("../../web/admin/chart.js")),
];

/// The console's state on a node.
pub(crate) struct Admin {
    pub tally: Arc<Tally>,
    /// The latest snapshot; its receivers are the live streams.
    live: watch::Sender<Arc<str>>,
    viewers: Arc<AtomicUsize>,
    logins: Mutex<DefaultKeyedRateLimiter<IpAddr>>,
    /// Where this node listens, once it does.
    pub address: OnceLock<SocketAddr>,
    /// When this node started (Unix ms).
    pub started_at: i64,
}

impl Admin {
    pub fn new() -> Self {
        Self {
            tally: Arc::default(),
            live: watch::Sender::new(Arc::from("{}")),
            viewers: Arc::default(),
            logins: Mutex::new(login_limiter()),
            address: OnceLock::new(),
            started_at: crate::now_ms(),
        }
    }

    /// Whether `client` may try a token now (and counts the attempt).
    fn may_try(&self, client: IpAddr) -> bool {
        let mut logins = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
        // A bounded table: addresses whose budget is whole again go first;
        // a flood from more addresses than that starts the table over.
        if logins.len() > LIMITER_ADDRESSES {
            logins.retain_recent();
            if logins.len() > LIMITER_ADDRESSES {
                *logins = login_limiter();
            }
        }
        logins.check_key(&client).is_ok()
    }

    /// Starts the task that writes this node's status and the snapshot.
    pub fn start(gateway: &Arc<Gateway>) {
        tokio::spawn(live::run(Arc::downgrade(gateway)));
    }
}

fn login_limiter() -> DefaultKeyedRateLimiter<IpAddr> {
    let per_minute = NonZeroU32::new(LOGINS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(per_minute))
}

/// The console's routes, merged into the node's router.
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/admin.css", get(css))
        .route("/admin/js/{file}", get(script))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/api/session", get(check_session))
        .route("/admin/live", get(live_stream))
        .route("/admin/api/rooms/{room}", get(room))
        .route("/admin/api/users/{name}/disconnect", post(disconnect))
        .route(
            "/admin/api/rooms/{room}/messages/{id}",
            delete(delete_message),
        )
}

/// The token, or 404 when the console is off.
fn token(gateway: &Gateway) -> Result<&str, ApiError> {
    gateway
        .config
        .admin_token
        .as_ref()
        .map(|t| t.0.as_str())
        .ok_or_else(ApiError::not_found)
}

/// A request of a logged-in console, else 401 (404 when the console is off).
fn signed_in(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = token(gateway)?;
    // The cookie is SameSite=Strict; a browser that says the request came
    // from another site is refused even so.
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the console does not take requests from other sites",
        ));
    }
    match session::presented(headers) {
        Some(value) if session::valid(token, value) => Ok(()),
        _ => {
            metrics::counter!("switchboard_auth_refusals_total", "reason" => "admin").increment(1);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in to the console first: POST /admin/login",
            ))
        }
    }
}

async fn page(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    token(&gateway)?;
    Ok(http::asset(http::HTML, PAGE))
}

async fn css(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    token(&gateway)?;
    Ok(http::asset(http::CSS, CSS))
}

async fn script(
    State(gateway): State<Arc<Gateway>>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    token(&gateway)?;
    Ok(http::asset(http::JAVASCRIPT, http::find(SCRIPTS, file)?))
}

fn login_result(result: &'static str) {
    metrics::counter!("switchboard_admin_logins_total", "result" => result).increment(1);
}

/// `POST /admin/login` with `{"token": "..."}`: 204 and the session
/// cookie; 401 `bad_token`; 429 `too_many_attempts` past the address's
/// attempts; 400 for a body that is not that.
async fn login(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = token(&gateway)?;
    let client = Client::resolve(peer, &headers, &gateway.config.trusted_proxies);
    if !gateway.admin.may_try(client.rate_key()) {
        login_result("limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("at most {LOGINS_PER_MINUTE} login attempts a minute from one address"),
        ));
    }
    let presented = (body.len() <= LOGIN_BODY_MAX)
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is {{\"token\": \"...\"}}, at most {LOGIN_BODY_MAX} bytes"),
            )
        })?;
    if !bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
        login_result("refused");
        tracing::warn!(client = %client.ip, "admin console: a wrong token was presented");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "that is not the admin token",
        ));
    }
    login_result("accepted");
    tracing::info!(client = %client.ip, "admin console: logged in");
    let cookie = session::set_cookie(&session::issue(token), client.tls);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// `POST /admin/logout`: clears the cookie.
async fn logout(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    token(&gateway)?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie())],
    )
        .into_response())
}

/// `GET /admin/api/session`: 204 with a valid session, else 401.
async fn check_session(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    signed_in(&gateway, &headers)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A live stream's place among the node's viewers, given back when the
/// stream ends.
struct Viewer(Arc<AtomicUsize>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /admin/live`: Server-Sent Events, a `snapshot` event a second
/// until the node stops; 429 `too_many_viewers` past [`MAX_VIEWERS`].
async fn live_stream(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_in(&gateway, &headers)?;
    let admin = &gateway.admin;
    if admin
        .viewers
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_VIEWERS).then_some(n + 1)
        })
        .is_err()
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_viewers",
            format!("at most {MAX_VIEWERS} consoles follow one node at once"),
        ));
    }
    let viewer = Viewer(admin.viewers.clone());
    let receiver = admin.live.subscribe();
    let shutdown = gateway.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (receiver, viewer, shutdown),
        |(mut receiver, viewer, shutdown)| async move {
            tokio::select! {
                changed = receiver.changed() => changed.ok()?,
                () = shutdown.cancelled() => return None,
            }
            let data = receiver.borrow_and_update().clone();
            let event = Event::default().event("snapshot").data(&*data);
            Some((Ok::<_, Infallible>(event), (receiver, viewer, shutdown)))
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /admin/api/rooms/{room}`: its names (across the cluster), its
/// members here, and its last messages.
async fn room(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_in(&gateway, &headers)?;
    let room = crate::api::room_of(path)?;
    let presence = gateway.presence.members(&room).await.map_err(|e| {
        tracing::warn!(error = %e, %room, "admin console: presence read failed");
        ApiError::unavailable("presence is unavailable; retry later")
    })?;
    let messages = gateway
        .bounded(gateway.store.history(&room, LOOKUP_MESSAGES, None))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, %room, "admin console: history read failed");
            ApiError::unavailable("the store is unavailable; retry later")
        })?;
    let mut members = presence.members;
    let truncated = presence.truncated || members.len() > LOOKUP_NAMES;
    members.truncate(LOOKUP_NAMES);
    Ok(axum::Json(json!({
        "room": room.as_str(),
        "count": presence.count,
        "members": members,
        "truncated": truncated,
        "connections_here": gateway.registry.names(&room).iter().map(|m| m.connections).sum::<u64>(),
        "messages": messages,
    }))
    .into_response())
}

/// `POST /admin/api/users/{name}/disconnect`: as the server API's.
async fn disconnect(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_in(&gateway, &headers)?;
    crate::moderation::disconnect_at(&gateway, path, "the admin console")
}

/// `DELETE /admin/api/rooms/{room}/messages/{id}`: as the server API's.
async fn delete_message(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_in(&gateway, &headers)?;
    crate::moderation::delete_at(&gateway, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_limiter_holds_a_bounded_table() {
        let admin = Admin::new();
        let limited = IpAddr::from([203, 0, 113, 1]);
        for _ in 0..LOGINS_PER_MINUTE {
            assert!(admin.may_try(limited));
        }
        assert!(!admin.may_try(limited), "past its attempts");
        // A flood from more addresses than the table holds...
        for n in 0..=LIMITER_ADDRESSES as u32 {
            admin.may_try(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
            let len = admin.logins.lock().unwrap().len();
            assert!(len <= LIMITER_ADDRESSES + 1, "{len} addresses held");
        }
        // ...starts it over (the table never outgrows its bound).
        admin.may_try(IpAddr::from([198, 51, 100, 1]));
        assert!(admin.logins.lock().unwrap().len() <= 2);
    }
}
