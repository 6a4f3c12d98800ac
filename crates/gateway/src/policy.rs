//! Room policies by namespace: what a room stores, shows on join,
//! recovers, tells of its members, and who may join and publish. A room
//! name `ns:rest` is in namespace `ns` when the policy file has a table for
//! it, else under the default. The file is TOML (`CONFIG_FILE`):
//!
//! ```toml
//! [default]
//! history = 50
//!
//! [namespaces.typing]
//! store = false
//! history = 0
//! presence = "off"
//! ```
//!
//! Every field is optional; a namespace's missing fields come from
//! `[default]`, whose missing fields are the node's settings. A file that
//! does not parse, an unknown field or a bad value is a [`PolicyError`]
//! naming the file, the line and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{ErrorCode, FrameError, Payload, RoomName};

/// Namespace names: what may precede the first `:` of a room name.
const NAMESPACE_MAX: usize = 32;

/// Who may join a namespace's rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinRule {
    /// Anyone the token's `rooms` claim (if any) allows, as without policies.
    Anyone,
    /// Only a token whose `rooms` claim names the room.
    Granted,
}

/// Who may send to a namespace's rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishRule {
    /// Every member.
    Members,
    /// Members whose token's `publish` claim names the room.
    Granted,
    /// Nobody over a socket: only the server API.
    Server,
}

/// What members are told of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceRule {
    /// Nothing: `presence` is refused, `joined` has no count.
    Off,
    /// The list and count on request; no events.
    On,
    /// The list, and join and leave events for who asks for them.
    Events,
}

/// One namespace's resolved policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Journaled, archived, in history and recovery; false: every message
    /// is ephemeral (delivered live only, never stored).
    pub store: bool,
    /// Messages a `join` gets when it does not ask (0: none); also its cap.
    pub history: u32,
    /// Whether a `join` with `since` recovers what was missed.
    pub recovery: bool,
    /// Most messages such a join recovers.
    pub recovery_max: u64,
    pub presence: PresenceRule,
    /// Largest message (text, or data's JSON), as it costs on the wire.
    pub max_message_bytes: usize,
    pub join: JoinRule,
    pub publish: PublishRule,
    /// Whether a `send` may carry `data` (a JSON value).
    pub data: bool,
    /// Whether a `send` may ask `ephemeral: true` (always, when `store` is
    /// false).
    pub ephemeral: bool,
}

impl Policy {
    /// Whether a send, `ephemeral` as asked, is live only here: never
    /// journaled, stored or positioned.
    pub fn is_live(&self, ephemeral: bool) -> bool {
        ephemeral || !self.store
    }

    /// Whether a message of `room` under this policy may carry `payload`,
    /// `ephemeral` as asked: `forbidden` for an ephemeral send where only
    /// stored ones are, or data where only text is; `too_large` past the
    /// room's size. Who may publish is the caller's to check.
    pub fn admits(
        &self,
        room: &RoomName,
        payload: &Payload,
        ephemeral: bool,
    ) -> Result<(), FrameError> {
        if ephemeral && self.store && !self.ephemeral {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("ephemeral sends are not allowed in `{room}`"),
            ));
        }
        if payload.data.is_some() && !self.data {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("`{room}` takes text only, not `data`"),
            ));
        }
        if payload.cost() > self.max_message_bytes {
            return Err(FrameError::new(
                ErrorCode::TooLarge,
                format!(
                    "messages in `{room}` are at most {} bytes",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The policies of every namespace, resolved once at start.
#[derive(Debug, Clone)]
pub struct Policies {
    default: Arc<Policy>,
    namespaces: HashMap<String, Arc<Policy>>,
}

/// A policy file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the error has no place in the file.
    pub line: usize,
    /// The field (or table) the error is about, when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// A table as written: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    store: Option<bool>,
    history: Option<u32>,
    recovery: Option<bool>,
    recovery_max: Option<u64>,
    presence: Option<PresenceRule>,
    max_message_bytes: Option<usize>,
    join: Option<JoinRule>,
    publish: Option<PublishRule>,
    data: Option<bool>,
    ephemeral: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default: Table,
    #[serde(default)]
    namespaces: BTreeMap<String, Table>,
}

impl Table {
    /// `base` with this table's fields over it.
    fn over(&self, base: &Policy) -> Policy {
        Policy {
            store: self.store.unwrap_or(base.store),
            history: self.history.unwrap_or(base.history),
            recovery: self.recovery.unwrap_or(base.recovery),
            recovery_max: self.recovery_max.unwrap_or(base.recovery_max),
            presence: self.presence.unwrap_or(base.presence),
            max_message_bytes: self.max_message_bytes.unwrap_or(base.max_message_bytes),
            join: self.join.unwrap_or(base.join),
            publish: self.publish.unwrap_or(base.publish),
            data: self.data.unwrap_or(base.data),
            ephemeral: self.ephemeral.unwrap_or(base.ephemeral),
        }
    }
}

/// The node's settings a policy starts from, and bounds it must keep.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub history_default: u32,
    pub history_max: u32,
    pub recovery_max: u64,
    pub max_message_bytes: usize,
    /// A message must fit a frame.
    pub max_frame_bytes: usize,
}

impl Policies {
    /// Every room under one policy: the node's settings.
    pub fn uniform(bounds: Bounds) -> Self {
        Self {
            default: Arc::new(base(bounds)),
            namespaces: HashMap::new(),
        }
    }

    /// Reads a policy file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str, bounds: Bounds) -> Result<Self, PolicyError> {
        let parsed: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
            PolicyError {
                file: file.to_owned(),
                line,
                field: field_at(text, line),
                message: e.message().trim().to_owned(),
            }
        })?;
        let error = |key: &str, field: &str, message: String| PolicyError {
            file: file.to_owned(),
            line: line_of(text, key, field),
            field: Some(field.to_owned()),
            message,
        };
        let default = parsed.default.over(&base(bounds));
        check(&default, bounds).map_err(|(field, m)| error("default", field, m))?;
        let mut namespaces = HashMap::new();
        for (name, table) in &parsed.namespaces {
            if name.is_empty()
                || name.len() > NAMESPACE_MAX
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                return Err(error(
                    name,
                    name,
                    format!(
                        "a namespace name is 1 to {NAMESPACE_MAX} of A-Z a-z 0-9 _ . - (it is what comes before `:` in a room name)"
                    ),
                ));
            }
            let policy = table.over(&default);
            check(&policy, bounds).map_err(|(field, m)| error(name, field, m))?;
            namespaces.insert(name.clone(), Arc::new(policy));
        }
        Ok(Self {
            default: Arc::new(default),
            namespaces,
        })
    }

    /// The policy of `room`: its namespace's (the part before the first
    /// `:`), or the default.
    pub fn of(&self, room: &str) -> Arc<Policy> {
        room.split_once(':')
            .and_then(|(ns, _)| self.namespaces.get(ns))
            .unwrap_or(&self.default)
            .clone()
    }

    /// The largest message any room takes: what a decoder must let
    /// through before the room's own limit is checked.
    pub fn largest_message(&self) -> usize {
        self.namespaces
            .values()
            .map(|p| p.max_message_bytes)
            .fold(self.default.max_message_bytes, usize::max)
    }

    /// How many namespaces have a policy of their own.
    pub fn namespaces(&self) -> usize {
        self.namespaces.len()
    }

    /// The default policy and every namespace's, for `GET /api/config`.
    pub fn describe(&self) -> serde_json::Value {
        let namespaces: BTreeMap<&str, &Policy> = self
            .namespaces
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        serde_json::json!({ "default": self.default.as_ref(), "namespaces": namespaces })
    }
}

/// The node's settings as a policy.
fn base(bounds: Bounds) -> Policy {
    Policy {
        store: true,
        history: bounds.history_default.min(bounds.history_max),
        recovery: true,
        recovery_max: bounds.recovery_max,
        presence: PresenceRule::Events,
        max_message_bytes: bounds.max_message_bytes,
        join: JoinRule::Anyone,
        publish: PublishRule::Members,
        data: false,
        ephemeral: false,
    }
}

/// A value out of its bounds: the field and why.
fn check(p: &Policy, bounds: Bounds) -> Result<(), (&'static str, String)> {
    if p.history > bounds.history_max {
        return Err((
            "history",
            format!("{} is over HISTORY_MAX ({})", p.history, bounds.history_max),
        ));
    }
    if p.max_message_bytes == 0 || p.max_message_bytes > bounds.max_frame_bytes / 2 {
        return Err((
            "max_message_bytes",
            format!(
                "{} must be from 1 to half of MAX_FRAME_BYTES ({})",
                p.max_message_bytes,
                bounds.max_frame_bytes / 2
            ),
        ));
    }
    if p.recovery_max == 0 || p.recovery_max > 1_000_000 {
        return Err(("recovery_max", "must be from 1 to 1000000".into()));
    }
    Ok(())
}

/// The key of the `key = value` at `line` (1-based), if that is what it is.
fn field_at(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = content.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// The line of `field` in the table of `key` (`default` or a namespace),
/// else of the table's header, else 0.
fn line_of(text: &str, key: &str, field: &str) -> usize {
    let headers = [
        format!("[{key}]"),
        format!("[namespaces.{key}]"),
        format!("[namespaces.\"{key}\"]"),
    ];
    let mut in_table = false;
    let mut header = 0;
    for (i, content) in text.lines().enumerate() {
        let t = content.trim();
        if t.starts_with('[') {
            in_table = headers.iter().any(|h| t.starts_with(h.as_str()));
            if in_table {
                header = i + 1;
            }
            continue;
        }
        if in_table && t.split_once('=').is_some_and(|(k, _)| k.trim() == field) {
            return i + 1;
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        history_default: 50,
        history_max: 500,
        recovery_max: 1000,
        max_message_bytes: 4096,
        max_frame_bytes: 65536,
    };

    fn parse(text: &str) -> Result<Policies, PolicyError> {
        Policies::parse("p.toml", text, BOUNDS)
    }

    #[test]
    fn namespaces_inherit_the_default_which_inherits_the_node() {
        let p = parse(
            "[default]\nhistory = 20\n\n[namespaces.typing]\nstore = false\nhistory = 0\npresence = \"off\"\n\n[namespaces.news]\npublish = \"server\"\n",
        )
        .unwrap();
        let typing = p.of("typing:lobby");
        assert!(!typing.store);
        assert_eq!(typing.history, 0);
        assert_eq!(typing.presence, PresenceRule::Off);
        assert_eq!(typing.max_message_bytes, 4096);
        let news = p.of("news:all");
        assert_eq!(news.publish, PublishRule::Server);
        assert_eq!(news.history, 20, "from [default]");
        // No namespace, an unknown one, or no colon: the default.
        for room in ["lobby", "other:x", "typing"] {
            assert_eq!(p.of(room).history, 20, "{room}");
            assert!(p.of(room).store, "{room}");
        }
        assert_eq!(Policies::uniform(BOUNDS).of("typing:x").history, 50);
        let described = p.describe();
        assert_eq!(described["namespaces"]["typing"]["store"], false);
        assert_eq!(described["default"]["publish"], "members");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let e = parse("[default]\nhistory = 20\n\n[namespaces.a]\nstor = true\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (5, Some("stor")), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.to_string().starts_with("p.toml:5: `stor`: "), "{e}");

        let e = parse("[namespaces.a]\npublish = \"everyone\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("publish")), "{e}");

        let e = parse("[default]\nhistory = \"many\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("history")), "{e}");

        let e = parse("[namespaces.a]\nhistory = 9999\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("history")), "{e}");
        assert!(e.message.contains("HISTORY_MAX"), "{e}");

        let e = parse("[default]\n\n[namespaces.b]\nmax_message_bytes = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (4, Some("max_message_bytes")));

        let e = parse("[namespaces.\"a:b\"]\nstore = false\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (1, Some("a:b")), "{e}");

        let e = parse("[default\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");

        let e = parse("[other]\nx = 1\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
