//! The commands a client sends (JSON or protobuf) and the replies they get at once.

use super::*;

impl Conn {
    /// The token expired: tell the client and start the grace period; at its end, close.
    pub(super) fn on_expiry(&mut self) {
        if self.grace_at.take().is_some() {
            self.conn.expire();
            return;
        }
        self.token_at = None;
        let grace = self.conn.gateway().token_grace();
        self.grace_at = Some(tokio::time::Instant::now() + grace);
        let how = if self.binary {
            "a `refresh` command"
        } else {
            "{\"op\":\"refresh\",\"token\":...}"
        };
        let notice = self.error_frame(
            None,
            ErrorCode::TokenExpired,
            &format!(
                "the token expired; send {how} within {} s or the connection closes",
                grace.as_secs()
            ),
        );
        self.out.replies.push_back(notice);
    }

    /// `connect` (a credential on a connection opened without one) and `refresh` (a new
    /// token for the same user): who the connection is from now on.
    pub(super) fn present(&mut self, token: &str, refresh: bool) -> Result<(), Refusal> {
        let gw = self.conn.gateway().clone();
        let principal = gw.authenticate(&Credentials::new(Some(token)))?;
        if refresh && principal.user().is_none() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "`refresh` takes a token (JWT)",
            ));
        }
        if !refresh && *self.conn.principal() != Principal::Anonymous {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "this connection already has a credential; use `refresh` to renew a token",
            ));
        }
        self.conn.set_principal(principal)?;
        self.token_at = self.conn.token_deadline();
        self.grace_at = None;
        Ok(())
    }

    /// The JSON reply to `connect` or `refresh`.
    pub(super) fn presented(&self, id: u64, done: Result<(), Refusal>) -> Bytes {
        if let Err(r) = done {
            return self.refuse(id, &r);
        }
        let p = self.conn.principal();
        let mut extra = json!({"identity": p.identity()});
        if let Some(exp) = p.expires_at() {
            extra["exp"] = exp.into();
        }
        encode_ok(id, extra)
    }

    /// Handles one incoming frame; false when the connection ended.
    pub(super) fn on_frame(
        &mut self,
        incoming: Option<Result<Message, tungstenite::Error>>,
    ) -> bool {
        match incoming {
            None | Some(Ok(Message::Close(_))) => false,
            Some(Err(e)) => {
                self.too_large = hardening::is_too_large(&e);
                false
            }
            Some(Ok(Message::Text(t))) if !self.binary => {
                self.command(t.as_str());
                true
            }
            Some(Ok(Message::Binary(b))) if self.binary => {
                self.proto_command(&b);
                true
            }
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                self.conn.refused();
                let why = if self.binary {
                    "text frames are not part of the binary protocol (tickwire.v1.proto); send binary frames"
                } else {
                    "binary frames are not part of the JSON protocol; send text frames, or connect with the tickwire.v1.proto subprotocol"
                };
                let reply = self.error_frame(None, ErrorCode::BadRequest, why);
                self.out.replies.push_back(reply);
                true
            }
            // Pings are answered by the WebSocket layer.
            Some(Ok(_)) => true,
        }
    }

    pub(super) fn command(&mut self, frame: &str) {
        // The publish a publisher sends in a loop, read without serde; anything else (and a
        // bad channel name, for its error) goes to the general parser.
        if let Some(p) = scan_publish(frame) {
            let ScannedItem { item, fields } = p.item;
            if let Ok(channel) = Channel::parse_cached(item.channel) {
                let req = PublishRequest {
                    channel,
                    msg_id: item.msg_id.map(str::to_owned),
                    data: Bytes::copy_from_slice(item.data),
                };
                self.publish(p.id, Ok(req), fields.as_ref());
                return;
            }
        }
        let cmd = match parse_command(frame.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                self.conn.refused();
                self.out
                    .replies
                    .push_back(text(encode_error(e.id, e.code, &e.message)));
                return;
            }
        };
        let id = cmd.id;
        match cmd.op {
            Op::Ping => self
                .out
                .replies
                .push_back(text(encode_ok(id, json!({"pong": true})))),
            Op::Connect { token } => {
                let done = self.present(&token, false);
                let reply = self.presented(id, done);
                self.out.replies.push_back(text(reply));
            }
            Op::Refresh { token } => {
                let done = self.present(&token, true);
                let reply = self.presented(id, done);
                self.out.replies.push_back(text(reply));
            }
            Op::Subscribe {
                channel,
                from,
                epoch,
                last,
                since,
                presence,
                depth,
            } => {
                let recent = match (last, since) {
                    (Some(n), _) => Some(Recent::Last(usize::try_from(n).unwrap_or(usize::MAX))),
                    (_, Some(ms)) => Some(Recent::SinceMs(ms)),
                    _ => None,
                };
                let subscribed = match (depth, recent) {
                    (Some(d), _) => self.conn.subscribe_book(&channel, d),
                    (None, Some(r)) => self.conn.subscribe_recent(&channel, r),
                    (None, None) => self.conn.subscribe(&channel, from, epoch),
                };
                let reply = match subscribed {
                    Ok(info) => {
                        let mut extra = json!({"channel": channel.as_str(), "class": info.class});
                        if let Some(o) = info.offset {
                            extra["offset"] = o.into();
                        }
                        if let Some(e) = info.epoch {
                            extra["epoch"] = e.to_string().into();
                        }
                        if let (Some(asked), Some(first)) = (info.retention_gap, info.offset) {
                            // Retention removed what the client asked for: it must know it
                            // missed messages, not discover a silent jump.
                            extra["retention_gap"] =
                                json!({"requested": asked, "first_retained": first});
                        }
                        if info.snapshot {
                            extra["snapshot"] = true.into();
                        }
                        if let Some(u) = self.conn.unread(&channel) {
                            merge(&mut extra, u.json());
                        }
                        if presence {
                            // The subscription stands whatever happens to its presence; the
                            // client learns why there is no member list with it.
                            let members = self.conn.subscribe_presence(&channel);
                            self.close_batch_into_window();
                            self.in_flight += 1;
                            self.held_subscribes += 1;
                            self.window
                                .push_back(PublishReply::Subscribed(Box::pin(async move {
                                    match members {
                                        Ok(m) => match m.await {
                                            Ok(m) => extra["presence"] = json!(m),
                                            Err(r) => {
                                                extra["presence_error"] =
                                                    json!({"code": r.code, "message": r.reason})
                                            }
                                        },
                                        Err(r) => {
                                            extra["presence_error"] =
                                                json!({"code": r.code, "message": r.reason})
                                        }
                                    }
                                    encode_ok(id, extra)
                                })));
                            return;
                        }
                        encode_ok(id, extra)
                    }
                    Err(r) => self.refuse(id, &r),
                };
                self.out.replies.push_back(text(reply));
            }
            Op::Unsubscribe { channel } => {
                let reply = match self.conn.unsubscribe(&channel) {
                    Ok(()) => encode_ok(id, json!({"channel": channel.as_str()})),
                    Err(r) => self.refuse(id, &r),
                };
                self.out.replies.push_back(text(reply));
            }
            Op::Edit {
                channel,
                offset,
                data,
                msg_id,
            } => self.amend(
                id,
                channel,
                offset,
                Change::Edit(Bytes::from(data.into_string())),
                msg_id,
            ),
            Op::Delete {
                channel,
                offset,
                msg_id,
            } => self.amend(id, channel, offset, Change::Delete, msg_id),
            Op::Read { channel, offset } => {
                let done = self.conn.read(channel.clone(), offset);
                self.later(async move {
                    match done.await {
                        Ok(u) => {
                            let mut extra = json!({"channel": channel.as_str()});
                            merge(&mut extra, u.json());
                            encode_ok(id, extra)
                        }
                        Err(r) => refusal_frame(id, &r),
                    }
                });
            }
            Op::Markers => {
                let reply = match self.conn.gateway().markers_of(self.conn.principal()) {
                    Ok(list) => encode_ok(id, json!({"markers": markers_json(&list)})),
                    Err(r) => self.refuse(id, &r),
                };
                self.out.replies.push_back(text(reply));
            }
            Op::Presence { channel } => {
                let (gw, principal) = (self.conn.gateway().clone(), self.conn.principal().clone());
                self.later(async move {
                    match gw.presence_of(&principal, &channel).await {
                        Ok(members) => {
                            encode_ok(id, json!({"channel": channel.as_str(), "members": members}))
                        }
                        Err(r) => refusal_frame(id, &r),
                    }
                });
            }
            Op::Search(query) => {
                let gw = self.conn.gateway().clone();
                let principal = self.conn.principal().clone();
                // Commands count against the connection's command rate like a REST read.
                if let Err(r) = self.conn.count_command() {
                    let reply = self.refuse(id, &r);
                    self.out.replies.push_back(text(reply));
                    return;
                }
                self.later(async move {
                    let found =
                        tokio::task::spawn_blocking(move || gw.search_for(&principal, &query))
                            .await;
                    match found {
                        Ok(Ok(results)) => encode_ok(
                            id,
                            serde_json::to_value(&results).unwrap_or_else(|_| json!({})),
                        ),
                        Ok(Err(r)) => refusal_frame(id, &r),
                        Err(e) => refusal_frame(
                            id,
                            &Refusal::new(ErrorCode::Internal, format!("search failed: {e}")),
                        ),
                    }
                });
            }
            Op::Publish {
                channel,
                msg_id,
                data,
            } => {
                let req = PublishRequest {
                    channel,
                    msg_id,
                    data: Bytes::from(data.into_string()),
                };
                self.publish(id, Ok(req), None);
            }
        }
    }

    /// A publish: checked now (with its data's quote/trade fields when the reader found
    /// them), handed to the hub with the others of this turn, answered in command order.
    pub(super) fn publish(
        &mut self,
        id: u64,
        req: Result<PublishRequest, Refusal>,
        fields: Option<&SchemaFields<'_>>,
    ) {
        let checked = req.and_then(|req| {
            let channel = req.channel.clone();
            self.conn.check_scanned(req, fields).map(|c| (channel, c))
        });
        match checked {
            Ok((channel, checked)) => self.batch.push((id, channel, checked)),
            Err(r) => {
                // Publish replies stay in command order: the batch read before this one is
                // answered first.
                self.close_batch_into_window();
                let reply = self.refuse_frame(id, &r);
                self.window.push_back(PublishReply::Ready(reply));
            }
        }
    }

    /// One binary frame: a `ClientMessage`, answered with a `Reply` (or, for a publish, put
    /// in the window like a JSON publish). The JSON protocol's other commands (chat edits,
    /// read markers, presence, search) have no binary form; a client that needs them uses
    /// JSON.
    pub(super) fn proto_command(&mut self, frame: &[u8]) {
        if frame.len() > MAX_COMMAND_BYTES {
            self.conn.refused();
            let reply = self.error_frame(
                None,
                ErrorCode::TooLarge,
                &format!(
                    "command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                    frame.len()
                ),
            );
            self.out.replies.push_back(reply);
            return;
        }
        let msg = match ClientMessage::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                self.conn.refused();
                let reply = self.error_frame(
                    None,
                    ErrorCode::BadRequest,
                    &format!("the frame is not a tickwire.v1.ClientMessage: {e}"),
                );
                self.out.replies.push_back(reply);
                return;
            }
        };
        let id = msg.id;
        let ok = |more: Reply| Reply {
            id: Some(id),
            ok: true,
            ..more
        };
        let answer = match msg.op {
            None => Err(Refusal::new(
                ErrorCode::UnknownOp,
                "the ClientMessage holds no command this server knows",
            )),
            Some(ProtoOp::Ping(_)) => Ok(ok(Reply::default())),
            Some(ProtoOp::Connect(token)) => {
                self.present(&token, false).map(|()| self.identity(id))
            }
            Some(ProtoOp::Refresh(token)) => self.present(&token, true).map(|()| self.identity(id)),
            Some(ProtoOp::Subscribe(s)) => channel_of(&s.channel).and_then(|ch| {
                let info = tickwire_gateway::proto::subscribe(&mut self.conn, &ch, &s)?;
                Ok(ok(Reply {
                    channel: ch.as_str().to_string(),
                    subscribed: Some(subscribed(ch.as_str(), &info)),
                    ..Reply::default()
                }))
            }),
            Some(ProtoOp::Unsubscribe(name)) => channel_of(&name).and_then(|ch| {
                self.conn.unsubscribe(&ch)?;
                Ok(ok(Reply {
                    channel: ch.as_str().to_string(),
                    ..Reply::default()
                }))
            }),
            Some(ProtoOp::Publish(item)) => {
                let req = request_of(self.conn.gateway(), item);
                self.publish(id, req, None);
                return;
            }
        };
        let reply = match answer {
            Ok(r) => binary(Kind::Reply(r)),
            Err(r) => self.refuse_frame(id, &r),
        };
        self.out.replies.push_back(reply);
    }

    /// The binary reply to `connect` or `refresh`: who the connection is now.
    pub(super) fn identity(&self, id: u64) -> Reply {
        let p = self.conn.principal();
        Reply {
            id: Some(id),
            ok: true,
            identity: p.identity(),
            exp: p.expires_at(),
            ..Reply::default()
        }
    }

    /// An error frame in the connection's encoding (`id` absent when it answers no command).
    pub(super) fn error_frame(&self, id: Option<u64>, code: ErrorCode, message: &str) -> Message {
        if self.binary {
            binary(Kind::Reply(Reply {
                id,
                ok: false,
                error: Some(tickwire_proto::v1::Error {
                    code: code.as_str().to_string(),
                    message: message.to_string(),
                }),
                ..Reply::default()
            }))
        } else {
            text(encode_error(id, code, message))
        }
    }

    /// A refused command's frame in the connection's encoding, server paths hidden.
    pub(super) fn refuse_frame(&self, id: u64, r: &Refusal) -> Message {
        self.conn.refused();
        self.error_frame(
            Some(id),
            r.code,
            &hardening::public_reason(r.code, &r.reason),
        )
    }

    /// A durable publish's reply in the connection's encoding.
    pub(super) fn published(&self, id: u64, channel: &Channel, ack: &Ack) -> Message {
        if self.binary {
            binary(Kind::Reply(Reply {
                id: Some(id),
                ok: true,
                channel: channel.as_str().to_string(),
                published: Some(PublishResult {
                    offset: ack.offset,
                    duplicate: ack.duplicate,
                    error: None,
                }),
                ..Reply::default()
            }))
        } else {
            text(encode_publish_ok(
                id,
                channel.as_str(),
                ack.offset,
                ack.duplicate,
            ))
        }
    }
}

/// Adds the fields of `more` (an object) to `into` (an object).
pub(super) fn merge(into: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

/// The error reply for a refusal, server paths hidden.
pub(super) fn refusal_frame(id: u64, r: &Refusal) -> Bytes {
    encode_error(
        Some(id),
        r.code,
        &hardening::public_reason(r.code, &r.reason),
    )
}

/// Markers with their unread counts, as the `markers` op and `GET /v1/markers` list them.
pub(crate) fn markers_json(list: &[(Channel, tickwire_gateway::Unread)]) -> serde_json::Value {
    serde_json::Value::Array(
        list.iter()
            .map(|(ch, u)| {
                let mut v = json!({"channel": ch.as_str()});
                merge(&mut v, u.json());
                v
            })
            .collect(),
    )
}
