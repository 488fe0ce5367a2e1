#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What a session allocates for itself: nothing of its subscriptions until the first, and
//! nothing of them after the last (every idle connection of the server holds one).

use std::time::Duration;

use bytes::Bytes;
use tickwire_model::Channel;

use crate::{CloseReason, Hub, HubConfig, Pattern, PublishRequest, Session};

fn ch(s: &str) -> Channel {
    Channel::parse(s).unwrap()
}

/// Whether the session holds any of its lazily made parts: its own subscription lists, the
/// hub's map of its subscriptions, its pending deliveries.
fn holds(s: &Session) -> (bool, bool, bool) {
    (
        s.own.is_some(),
        s.shared.subs.lock().iter().next().is_some(),
        s.shared.pending.lock().is_some(),
    )
}

async fn publish(hub: &Hub, channel: &str, data: &str) {
    hub.publish(vec![PublishRequest {
        channel: ch(channel),
        msg_id: None,
        data: Bytes::from(data.to_string()),
    }])
    .await
    .remove(0)
    .unwrap();
}

#[tokio::test]
async fn a_session_makes_its_parts_on_first_use_and_lets_go_of_them_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut s = hub.session();
    // Three pointers: the shared half, the hub, the lazily made lists.
    assert_eq!(
        std::mem::size_of::<Session>(),
        3 * std::mem::size_of::<usize>()
    );
    assert_eq!(holds(&s), (false, false, false));
    // Draining a session nothing was offered to makes nothing either (a wake-up without a
    // delivery: an MQTT takeover of a parked connection).
    s.closer().wake();
    assert!(s.drain().await.unwrap().is_empty());
    assert_eq!(holds(&s), (false, false, false));

    publish(&hub, "quotes.EURUSD", r#"{"bid":"1.1"}"#).await;
    s.subscribe(&ch("quotes.EURUSD"), None).unwrap();
    assert_eq!(
        holds(&s),
        (true, true, true),
        "subscribed, with its snapshot waiting"
    );
    assert_eq!(s.drain().await.unwrap().len(), 1);
    // A value waiting when the last subscription ends goes with it.
    publish(&hub, "quotes.EURUSD", r#"{"bid":"1.15"}"#).await;
    s.unsubscribe(&ch("quotes.EURUSD")).unwrap();
    assert_eq!(
        holds(&s),
        (false, false, false),
        "the lists and the pending box go with the last subscription"
    );
    assert!(s.drain().await.unwrap().is_empty());
    assert_eq!(holds(&s), (false, false, false));
    assert_eq!(s.subscription_count(), 0);
    assert!(!s.is_subscribed(&ch("quotes.EURUSD")));

    // A pattern alone makes them too, and its end lets go of them.
    let p = Pattern::parse("quotes.*").unwrap();
    let matched = s.subscribe_pattern(p.clone(), None).unwrap();
    assert_eq!(matched.len(), 1);
    assert!(holds(&s).0 && holds(&s).1);
    s.unsubscribe_pattern(&p).unwrap();
    assert_eq!(holds(&s), (false, false, false));

    // Subscribing again after all that delivers as before.
    s.subscribe(&ch("quotes.EURUSD"), None).unwrap();
    publish(&hub, "quotes.EURUSD", r#"{"bid":"1.2"}"#).await;
    let mut got = Vec::new();
    while !got
        .iter()
        .any(|d: &crate::Delivery| &d.message.publication.data[..] == br#"{"bid":"1.2"}"#)
    {
        tokio::time::timeout(Duration::from_secs(5), s.wait())
            .await
            .unwrap();
        got.extend(s.drain().await.unwrap());
    }
    // Unsubscribing what is not subscribed is still refused, with or without the lists.
    s.unsubscribe(&ch("quotes.EURUSD")).unwrap();
    assert!(s.unsubscribe(&ch("quotes.EURUSD")).is_err());
    assert!(s.unsubscribe_pattern(&p).is_err());
}

#[tokio::test]
async fn the_first_close_reason_is_kept_and_closed_resolves_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let s = hub.session();
    assert_eq!(s.close_reason(), None);
    s.close(CloseReason::Kicked("first".into()));
    s.close(CloseReason::Shutdown);
    tokio::time::timeout(Duration::from_secs(5), s.closed())
        .await
        .unwrap();
    assert_eq!(s.close_reason(), Some(CloseReason::Kicked("first".into())));
}
