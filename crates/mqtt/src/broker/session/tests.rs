//! The session's subscription and delivery state is a box made on first use and let go of
//! when empty (`LazyFlows`, `BrokerSession::shrink`): what an idle MQTT connection holds.

use super::*;
use crate::{Subscribe, SubscribeFilter, Unsubscribe};

/// A hub with one stream namespace, `chat`, that lets every subscription through.
struct Hub;

impl Router for Hub {
    fn class(&self, namespace: &str) -> Option<Class> {
        (namespace == "chat").then_some(Class::Stream)
    }
    fn namespaces(&self) -> Vec<String> {
        vec!["chat".into()]
    }
    fn subscribe(&mut self, _: &Channel, from: Option<Offset>) -> Result<Option<Offset>, Refused> {
        Ok(Some(from.unwrap_or(0)))
    }
    fn subscribe_pattern(
        &mut self,
        _: &Pattern,
        _: Option<Offset>,
    ) -> Result<Vec<(Channel, Class, Option<Offset>)>, Refused> {
        Ok(Vec::new())
    }
    fn unsubscribe(&mut self, _: &Channel) {}
    fn unsubscribe_pattern(&mut self, _: &Pattern) {}
    fn next_offset(&self, _: &str) -> Result<Offset, Refused> {
        Ok(0)
    }
}

fn session() -> BrokerSession {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "c1".into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let accepted = Accepted {
        client_id: "c1".into(),
        assigned: false,
        expiry_secs: 0,
        expiry_capped: false,
        owner: None,
    };
    let cfg = SessionConfig {
        receive_maximum: 64,
        topic_alias_maximum: 0,
        max_packet: 1 << 20,
        max_session_expiry_secs: 0,
    };
    let mut s = BrokerSession::new(cfg, &connect, accepted);
    s.connack(None, &mut Hub);
    s
}

fn delivery(offset: Offset) -> Outgoing {
    let channel = Channel::parse("chat.lobby").expect("a valid channel");
    Outgoing {
        body: crate::broker::publish_body("chat/lobby", b"hi"),
        channel,
        offset,
        class: Class::Stream,
        snapshot: false,
    }
}

#[test]
fn an_idle_session_holds_no_flows_and_reading_makes_none() {
    let mut s = session();
    assert_eq!((s.in_flight(), s.queued()), (0, 0));
    assert!(s.marked_namespaces().is_empty());
    assert!(s.flows.0.is_none(), "reading made the box");
    s.pump();
    s.shrink();
    assert!(s.flows.0.is_none());
}

#[test]
fn flows_are_made_by_a_subscription_and_let_go_of_once_empty() {
    let mut s = session();
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter::new("chat/lobby", QoS::AtLeastOnce)],
        properties: Default::default(),
    };
    assert_eq!(s.on_packet(Packet::Subscribe(sub), &mut Hub), None);
    assert!(s.flows.0.is_some());
    // Subscribed: kept, however often the connection parks.
    s.shrink();
    assert!(s.flows.0.is_some());
    // A QoS 1 delivery in flight keeps it after the subscription is gone.
    s.deliver(delivery(7));
    s.pump();
    assert_eq!(s.in_flight(), 1);
    let unsub = Unsubscribe {
        packet_id: 2,
        filters: vec!["chat/lobby".into()],
        properties: Default::default(),
    };
    assert_eq!(s.on_packet(Packet::Unsubscribe(unsub), &mut Hub), None);
    s.shrink();
    assert_eq!(s.in_flight(), 1, "the delivery in flight is not forgotten");
    // Acknowledged: nothing is left, and the box goes.
    let ack = crate::PubAck::new(1);
    assert_eq!(s.on_packet(Packet::PubAck(ack), &mut Hub), None);
    assert_eq!(s.in_flight(), 0);
    s.shrink();
    assert!(s.flows.0.is_none());
}
