use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a channel's messages are delivered (see the brief's two delivery classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Latest value wins: snapshot on subscribe, conflated for slow clients.
    State,
    /// Every message, durable before delivery, ordered, resumable by offset.
    Stream,
}

/// What a publication's `data` must look like in a namespace. Market-data namespaces check
/// that prices and sizes are exact decimals so no float ever enters the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// Any JSON value.
    #[default]
    Any,
    /// An L1 quote: an object with at least one of `bid`, `ask`, `last`; all price/size fields decimal strings.
    Quote,
    /// A trade: an object with `price` (decimal string) and optional `size`.
    Trade,
}

/// Who may subscribe to (read) or publish on a namespace's channels, when the server has
/// identities configured (`[auth]`); a server without any lets everyone do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Everyone, anonymous clients included.
    Anyone,
    /// Any authenticated principal: a JWT user or an API key.
    Authenticated,
    /// The user the channel belongs to: `<ns>.<sub>` (and `<ns>.<sub>.…`) for the JWT `sub`.
    Owner,
    /// Only what the token's `channels` (subscribe) or `publish` claim patterns allow.
    Claim,
    /// Only API keys (with the `publish` scope, for publishing).
    ApiKey,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Anyone => "anyone",
            Permission::Authenticated => "authenticated",
            Permission::Owner => "owner",
            Permission::Claim => "claim",
            Permission::ApiKey => "api_key",
        }
    }
}

/// A namespace's configuration, resolved (defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub name: String,
    pub class: Class,
    pub schema: Schema,
    /// Largest `data` accepted, in bytes.
    pub max_message_bytes: usize,
    /// Delete whole log segments once the namespace holds more than this.
    pub retention_bytes: Option<u64>,
    /// Delete whole log segments whose newest message is older than this.
    pub retention_age: Option<Duration>,
    /// Whether clients (WebSocket, MQTT) may publish, or only holders of an API key. The
    /// default of `publish` when that is not set: `authenticated` if true, `api_key` if not.
    pub client_publish: bool,
    /// Who may subscribe and read (WebSocket, SSE, MQTT, history, latest, listings).
    pub subscribe: Permission,
    /// Who may publish.
    pub publish: Permission,
    /// Derived data the server builds for itself (live candles): its writer threads run at a
    /// lower CPU priority, so bursts of it never delay the namespaces clients wait on.
    pub background: bool,
    /// Clients may edit and delete their messages here (`$edit` / `$delete` records, applied in
    /// history and search). Stream namespaces only.
    pub edits: bool,
    /// Messages are indexed for full-text search.
    pub search: bool,
    /// Who is subscribed to a channel is tracked, and told to subscribers that ask.
    pub presence: bool,
}

impl NamespaceSpec {
    /// The defaults for the namespaces every server has.
    pub fn defaults() -> Vec<NamespaceSpec> {
        let day = Duration::from_secs(86_400);
        let ns = |name: &str, class, schema, age_days: u64, client_publish| NamespaceSpec {
            name: name.to_string(),
            class,
            schema,
            max_message_bytes: 64 * 1024,
            retention_bytes: Some(8 * 1024 * 1024 * 1024),
            retention_age: Some(day * age_days as u32),
            client_publish,
            subscribe: default_subscribe(name),
            publish: default_publish(name, client_publish),
            background: false,
            edits: matches!(name, "chat" | "user"),
            search: matches!(name, "chat" | "user"),
            presence: name == "chat",
        };
        vec![
            ns("quotes", Class::State, Schema::Quote, 7, false),
            // Every live bar is republished each flush (12 series per symbol each time); at
            // normal priority those bursts were the p99 of quote fan-out (bench/results).
            NamespaceSpec {
                background: true,
                ..ns("candles", Class::State, Schema::Any, 7, false)
            },
            ns("trades", Class::Stream, Schema::Trade, 30, false),
            // L2 books built by the book projection: `{"bids": [[px, size], ...], "asks": [...]}`.
            ns("book", Class::State, Schema::Any, 7, false),
            // L2 snapshots and deltas from feeds (the FIX initiator, API-key publishers): the
            // book projection's input. A day of it is enough to rebuild books after a restart
            // (the projection checkpoints every second).
            ns("depth", Class::Stream, Schema::Any, 1, false),
            ns("chat", Class::Stream, Schema::Any, 30, true),
            ns("user", Class::Stream, Schema::Any, 30, false),
            // Read markers: `markers.<sub>` holds `{"channel":..,"offset":..}` records the
            // server writes for a user's `read` ops; the markers projection keeps the newest per
            // channel. A user may subscribe to their own (other devices' reads).
            ns(MARKERS, Class::Stream, Schema::Any, 30, false),
            // Presence: `presence.<channel>` carries join/leave events for subscribers that
            // asked for them; the server writes them. Read by those who may read `<channel>`.
            ns(PRESENCE, Class::Stream, Schema::Any, 1, false),
        ]
    }
}

/// The namespace of read markers (`markers.<sub>`).
pub const MARKERS: &str = "markers";
/// The namespace of presence events (`presence.<channel>`).
pub const PRESENCE: &str = "presence";

/// The safe default of who may read a namespace: a user's own channels only for `user`,
/// signed-in clients for `chat` and namespaces the server does not know, everyone for market
/// data.
pub fn default_subscribe(namespace: &str) -> Permission {
    match namespace {
        "user" | MARKERS => Permission::Owner,
        "quotes" | "candles" | "book" | "trades" | "depth" => Permission::Anyone,
        _ => Permission::Authenticated,
    }
}

/// The default of who may publish: signed-in clients where clients publish (`chat`,
/// `client_publish = true`), API keys everywhere else.
pub fn default_publish(_namespace: &str, client_publish: bool) -> Permission {
    if client_publish {
        Permission::Authenticated
    } else {
        Permission::ApiKey
    }
}
