//! Chat features that need who the client is: edits and deletes (authorised by reading the
//! target message), read markers, and the services projections provide for them (the
//! amendment index for history, the search index, the marker store). The services are traits
//! here so edges reach them through the gateway, and the server plugs the projections in.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use tickwire_hub::{Channel, Checked, Class, Message, Offset, PublishRequest};
use tickwire_model::{amend, Permission, MARKERS};
use tickwire_wire::{ErrorCode, SearchQuery};

use crate::{stamp, Gateway, Principal, Refusal, Scope};

/// What an edit or delete did to a message, as the amendment index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amended {
    /// The offset of the (newest) edit or of the delete record.
    pub at: Offset,
    /// Its append time, Unix ms.
    pub ts_ms: u64,
    pub change: AmendedChange,
}

/// The newest state of an amended message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmendedChange {
    /// Its data is this now.
    Edited(Bytes),
    /// It was deleted (final).
    Deleted,
}

/// The amendment index: message → its newest edit or its tombstone (the chat projection).
pub trait Amendments: Send + Sync {
    /// The amendment of the message at `offset` of `channel`, if any was applied yet.
    fn get(&self, channel: &Channel, offset: Offset) -> Option<Amended>;
}

/// The read-marker store: per user, per channel, the last offset read (the chat projection,
/// over the `markers` stream).
pub trait MarkerStore: Send + Sync {
    /// The user's marker on `channel`.
    fn get(&self, sub: &str, channel: &Channel) -> Option<Offset>;
    /// Every marker of the user, by channel.
    fn list(&self, sub: &str) -> Vec<(Channel, Offset)>;
    /// A marker the server just stored (durably, in the stream): visible at once, before the
    /// projection reads it back.
    fn noted(&self, sub: &str, channel: &Channel, offset: Offset);
}

/// One search hit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchHit {
    pub channel: String,
    pub offset: Offset,
    /// Append time of the message, Unix ms.
    pub ts: u64,
    /// The author (`from` of the message) when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Box<RawValue>>,
    /// A piece of the text around the matches, HTML-escaped, matches in `<mark>`…`</mark>`.
    pub snippet: String,
    /// Relevance (BM25), when ordered by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// The message was edited: the hit is its newest text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
}

/// A page of hits.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// More hits follow (ask again with `skip` = skip + hits).
    pub more: bool,
}

/// What a principal may search in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Every channel.
    All,
    /// The user's own channels only: `<ns>.<sub>` and `<ns>.<sub>.…`.
    Own(String),
    /// Some channels its token's claims name: search the namespace, keep the readable hits.
    Filtered,
}

/// The search index (the search projection). Blocking: call it off the async workers.
pub trait SearchService: Send + Sync {
    /// Hits for `query` among `scope` (namespaces the principal may search, and how), each
    /// hit passing `readable` as well.
    fn search(
        &self,
        query: &SearchQuery,
        scope: &[(String, NamespaceScope)],
        readable: &dyn Fn(&Channel) -> bool,
    ) -> Result<SearchResults, Refusal>;
}

/// An edit or a delete, as a client asks for it.
#[derive(Debug, Clone)]
pub enum Change {
    /// The message's new data (JSON text).
    Edit(Bytes),
    Delete,
}

/// Most messages an unread count counts (beyond it: `unread_more`).
pub const MAX_UNREAD: usize = 1000;

/// An unread count: messages after the marker, and whether there are more than counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unread {
    pub marker: Option<Offset>,
    pub count: usize,
    pub more: bool,
}

impl Unread {
    /// The fields a subscribe reply or a marker listing carries.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"read": self.marker, "unread": self.count});
        if self.more {
            v["unread_more"] = true.into();
        }
        v
    }
}

impl Gateway {
    /// Plugs in the amendment index (history shows edited data and deletions through it).
    pub fn set_amendments(&self, a: Arc<dyn Amendments>) {
        let _ = self.amendments.set(a);
    }

    pub fn amendments(&self) -> Option<&Arc<dyn Amendments>> {
        self.amendments.get()
    }

    /// Plugs in the search index.
    pub fn set_search(&self, s: Arc<dyn SearchService>) {
        let _ = self.search.set(s);
    }

    pub fn search_service(&self) -> Option<&Arc<dyn SearchService>> {
        self.search.get()
    }

    /// Plugs in the read-marker store.
    pub fn set_markers(&self, m: Arc<dyn MarkerStore>) {
        let _ = self.markers.set(m);
    }

    pub fn marker_store(&self) -> Option<&Arc<dyn MarkerStore>> {
        self.markers.get()
    }

    /// Whether `principal` may change anyone's message: an API key with the `admin` scope, or
    /// anyone in development mode.
    fn may_amend_any(principal: &Principal) -> bool {
        match principal {
            Principal::Open => true,
            Principal::ApiKey(k) => k.has(Scope::Admin),
            _ => false,
        }
    }

    /// Checks an edit or delete of the message at `target` on `channel` and builds its record:
    /// the namespace takes edits, the principal may read and publish there, the target is a
    /// message (not a record, not deleted) whose `from.sub` is the principal's (or the
    /// principal is an admin key). An edit keeps the original author's `from` in the new data.
    pub async fn amend(
        &self,
        principal: &Principal,
        channel: &Channel,
        target: Offset,
        change: Change,
        msg_id: Option<String>,
    ) -> Result<Checked, Refusal> {
        let spec = self.spec(channel)?;
        if spec.class != Class::Stream || !spec.edits {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "namespace `{}` does not take edits or deletes (`edits = true` in its configuration)",
                    channel.namespace()
                ),
            ));
        }
        self.can_subscribe(principal, channel)?;
        let any = Self::may_amend_any(principal);
        if !any {
            self.can_publish(principal, channel)?;
        }
        let what = match change {
            Change::Edit(_) => "edit",
            Change::Delete => "delete",
        };
        let msg = self
            .hub
            .message_at(channel, target)
            .await?
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::NotFound,
                    format!("`{channel}` has no message at offset {target} (never, or removed by retention)"),
                )
            })?;
        let original = &msg.publication.data;
        if amend::parse(original).is_some() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "offset {target} is an edit or delete record; {what} the message it changed"
                ),
            ));
        }
        if let Some(Amended {
            change: AmendedChange::Deleted,
            ..
        }) = self.amendments().and_then(|a| a.get(channel, target))
        {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("the message at offset {target} of `{channel}` was deleted"),
            ));
        }
        let author = stamp::from_of(original);
        if !any {
            let sub = author.as_deref().and_then(stamp::sub_of);
            match principal {
                Principal::User(u) if sub.as_deref() == Some(u.sub.as_str()) => {}
                Principal::Anonymous => {
                    return Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        format!("only its author or an admin key may {what} a message — present a token"),
                    ))
                }
                _ => {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        format!(
                            "{} may not {what} the message at offset {target}: only its author ({}) or an API key with the `admin` scope may",
                            principal.identity(),
                            sub.map_or_else(|| "the server".to_string(), |s| format!("user {s}"))
                        ),
                    ))
                }
            }
        }
        let record = match change {
            Change::Edit(new) => {
                let new_text = std::str::from_utf8(&new)
                    .map_err(|_| Refusal::new(ErrorCode::BadData, "`data` is not UTF-8"))?;
                let data = match &author {
                    // The author stays who wrote it, whoever edits.
                    Some(from) => {
                        let keys: std::collections::HashMap<String, serde::de::IgnoredAny> =
                            serde_json::from_str(new_text).map_err(|_| {
                                Refusal::new(
                                    ErrorCode::BadData,
                                    "the new data of a message with an author must be a JSON object (the server keeps its `from`)",
                                )
                            })?;
                        if keys.contains_key("from") {
                            return Err(Refusal::new(
                                ErrorCode::BadData,
                                "`from` is kept from the original message; leave it out of the new data",
                            ));
                        }
                        if keys.keys().any(|k| amend::is_reserved_key(k)) {
                            return Err(Refusal::new(
                                ErrorCode::BadData,
                                "the new data may not carry `$edit` or `$delete`",
                            ));
                        }
                        stamp::prepend_from(new_text.as_bytes(), from.get().as_bytes())
                    }
                    None => new,
                };
                let data = std::str::from_utf8(&data)
                    .map_err(|_| Refusal::new(ErrorCode::BadData, "`data` is not UTF-8"))?
                    .to_string();
                amend::edit_record(target, &data)
            }
            Change::Delete => amend::delete_record(target),
        };
        // Who made the change, stamped like any message of theirs.
        let data = match principal {
            Principal::User(u) => stamp::stamp_user(&record, u)?,
            _ => Bytes::from(record),
        };
        self.hub
            .check(PublishRequest {
                channel: channel.clone(),
                msg_id,
                data,
            })
            .map_err(Refusal::from)
    }

    /// The unread count of `channel` for `principal` (a user; others have no markers): the
    /// stream messages after its marker, edit and delete records not counted, at most
    /// [`MAX_UNREAD`] and within what memory holds.
    pub fn unread(&self, principal: &Principal, channel: &Channel) -> Option<Unread> {
        let user = principal.user()?;
        if self.hub.class_of(channel).ok()? != Class::Stream {
            return None;
        }
        let marker = self.marker_store()?.get(&user.sub, channel);
        let (count, more) = self
            .hub
            .count_after(channel, marker, MAX_UNREAD, |m: &Message| {
                amend::maybe_amendment(&m.publication.data)
                    && amend::parse(&m.publication.data).is_some()
            });
        Some(Unread {
            marker,
            count,
            more,
        })
    }

    /// Checks a `read` (the user has read `channel` up to `offset`) and builds the marker
    /// record on `markers.<sub>`; `None` when the marker is there already (markers only move
    /// forward, so a stale device cannot move it back).
    pub fn read_marker(
        &self,
        principal: &Principal,
        channel: &Channel,
        offset: Offset,
    ) -> Result<Option<Checked>, Refusal> {
        let Some(user) = principal.user() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "read markers belong to a user: present a token (its `sub`)",
            ));
        };
        let store = self.marker_store().ok_or_else(|| {
            Refusal::new(
                ErrorCode::Unavailable,
                "read markers are not available on this server (no `markers` namespace)",
            )
        })?;
        self.can_subscribe(principal, channel)?;
        if self.hub.class_of(channel)? != Class::Stream {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "read markers are for stream channels (a state channel has no unread messages)",
            ));
        }
        let next = self.hub.next_offset(channel.namespace())?;
        if offset >= next {
            return Err(Refusal::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {offset} is not in `{}` yet (its next offset is {next})",
                    channel.namespace()
                ),
            ));
        }
        if store.get(&user.sub, channel).is_some_and(|m| m >= offset) {
            return Ok(None);
        }
        let markers = Channel::parse(&format!("{MARKERS}.{}", user.sub))
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let data = serde_json::json!({"channel": channel.as_str(), "offset": offset}).to_string();
        self.hub
            .check(PublishRequest {
                channel: markers,
                msg_id: None,
                data: Bytes::from(data),
            })
            .map(Some)
            .map_err(Refusal::from)
    }

    /// The user's markers with their unread counts, for channels it may still read.
    pub fn markers_of(&self, principal: &Principal) -> Result<Vec<(Channel, Unread)>, Refusal> {
        let Some(user) = principal.user() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "read markers belong to a user: present a token (its `sub`)",
            ));
        };
        let Some(store) = self.marker_store() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (ch, _) in store.list(&user.sub) {
            if self.can_subscribe(principal, &ch).is_err() {
                continue;
            }
            if let Some(u) = self.unread(principal, &ch) {
                out.push((ch, u));
            }
        }
        Ok(out)
    }

    /// What `principal` may search: per search-enabled namespace it may read, all of it, its
    /// own channels, or what its claims allow (then each hit is checked).
    pub fn search_scope(&self, principal: &Principal) -> Vec<(String, NamespaceScope)> {
        let mut out = Vec::new();
        for spec in self.hub.namespaces() {
            if !spec.search {
                continue;
            }
            let scope = match principal {
                Principal::Open => Some(NamespaceScope::All),
                Principal::ApiKey(k) if k.has(Scope::SubscribeAll) => Some(NamespaceScope::All),
                Principal::ApiKey(_) => matches!(
                    spec.subscribe,
                    Permission::Anyone | Permission::Authenticated | Permission::ApiKey
                )
                .then_some(NamespaceScope::All),
                Principal::Anonymous => {
                    (spec.subscribe == Permission::Anyone).then_some(NamespaceScope::All)
                }
                Principal::User(u) => {
                    let claims = u
                        .channels
                        .iter()
                        .any(|p| p.namespace().is_none_or(|n| n == spec.name));
                    match spec.subscribe {
                        Permission::Anyone | Permission::Authenticated => Some(NamespaceScope::All),
                        _ if claims => Some(NamespaceScope::Filtered),
                        Permission::Owner => Some(NamespaceScope::Own(u.sub.clone())),
                        Permission::Claim | Permission::ApiKey => None,
                    }
                }
            };
            if let Some(s) = scope {
                out.push((spec.name.clone(), s));
            }
        }
        out
    }

    /// Runs a search for `principal` (blocking: the index is read here). A named channel must
    /// be readable; every hit is on a channel the principal may read.
    pub fn search_for(
        &self,
        principal: &Principal,
        query: &SearchQuery,
    ) -> Result<SearchResults, Refusal> {
        let svc = self.search_service().ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotFound,
                "search is not enabled on this server (no namespace with `search = true`)",
            )
        })?;
        let mut scope = self.search_scope(principal);
        if let Some(ch) = &query.channel {
            self.can_subscribe(principal, ch)?;
            let searchable = self
                .hub
                .namespace_spec(ch.namespace())
                .is_some_and(|s| s.search);
            if !searchable {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "namespace `{}` is not searchable (`search = true` in its configuration)",
                        ch.namespace()
                    ),
                ));
            }
            // Readable by name: search that channel whatever the namespace-wide scope says.
            scope = vec![(ch.namespace().to_string(), NamespaceScope::All)];
        }
        let readable = |ch: &Channel| self.can_subscribe(principal, ch).is_ok();
        svc.search(query, &scope, &readable)
    }
}
