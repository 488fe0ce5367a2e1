//! The hub operations a broker session asks for (subscribe, unsubscribe, offsets), through
//! this connection's gateway session.

use super::*;

/// The hub operations the broker session asks for, through this connection.
pub(super) struct HubRouter<'a> {
    pub(super) conn: &'a mut Connection,
    /// Namespaces are fixed when the hub opens: looked up there, not copied per connection.
    pub(super) hub: &'a tickwire_hub::Hub,
    /// For log lines.
    pub(super) client_id: &'a str,
}

impl Router for HubRouter<'_> {
    fn class(&self, namespace: &str) -> Option<Class> {
        self.hub.namespace_spec(namespace).map(|n| n.class)
    }

    fn namespaces(&self) -> Vec<String> {
        // Sorted by name already.
        self.hub.namespaces().into_iter().map(|n| n.name).collect()
    }

    fn subscribe(
        &mut self,
        channel: &Channel,
        from: Option<Offset>,
    ) -> Result<Option<Offset>, Refused> {
        let client = self.client_id;
        let info = match self.conn.subscribe(channel, from, None) {
            Err(r) if r.code == ErrorCode::OffsetOutOfRange => {
                // A stored position past the end: the stream was recreated (wiped) since the
                // session was saved. Its new messages are all unseen: start at its beginning.
                tracing::warn!(client, %channel, from = ?from, "stored MQTT position is past the end of the stream (recreated?); resuming from its start");
                self.conn.subscribe(channel, Some(0), None)
            }
            other => other,
        }
        .map_err(|r| subscribe_refused(&r))?;
        warn_gap(client, channel.as_str(), &info);
        Ok(info.offset)
    }

    fn subscribe_pattern(
        &mut self,
        pattern: &Pattern,
        from: Option<Offset>,
    ) -> Result<Vec<(Channel, Class, Option<Offset>)>, Refused> {
        let client = self.client_id;
        let matched = match self.conn.subscribe_pattern(pattern.clone(), from) {
            Err(r) if r.code == ErrorCode::OffsetOutOfRange => {
                tracing::warn!(client, pattern = pattern.as_str(), from = ?from, "stored MQTT mark is past the end of the stream (recreated?); resuming from its start");
                self.conn.subscribe_pattern(pattern.clone(), Some(0))
            }
            other => other,
        }
        .map_err(|r| subscribe_refused(&r))?;
        Ok(matched
            .into_iter()
            .map(|(ch, info)| {
                warn_gap(client, ch.as_str(), &info);
                (ch, info.class, info.offset)
            })
            .collect())
    }

    fn unsubscribe(&mut self, channel: &Channel) {
        let _ = self.conn.session().unsubscribe(channel);
    }

    fn unsubscribe_pattern(&mut self, pattern: &Pattern) {
        let _ = self.conn.session().unsubscribe_pattern(pattern);
    }

    fn next_offset(&self, namespace: &str) -> Result<Offset, Refused> {
        self.conn
            .gateway()
            .hub()
            .next_offset(namespace)
            .map_err(|e| subscribe_refused(&Refusal::from(e)))
    }
}

fn subscribe_refused(r: &Refusal) -> Refused {
    Refused {
        code: r.mqtt_subscribe_reason(),
        reason: r.reason.clone(),
    }
}

/// MQTT has no way to tell a client it missed messages: a resume point that retention removed
/// is logged where an operator sees it.
fn warn_gap(client: &str, channel: &str, info: &tickwire_hub::SubscribeInfo) {
    if let (Some(asked), Some(first)) = (info.retention_gap, info.offset) {
        tracing::warn!(client, channel, requested = asked, first_retained = first, "MQTT session resumes after a retention gap: messages before the oldest retained offset are gone");
    }
}
