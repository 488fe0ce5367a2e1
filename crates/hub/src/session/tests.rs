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

/// How many values wait in the session's pending box.
fn waiting(s: &Session) -> usize {
    s.shared
        .pending
        .lock()
        .as_ref()
        .map_or(0, |p| p.state.len())
}

async fn until_waiting(s: &Session, n: usize) {
    for _ in 0..500 {
        if waiting(s) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} values never waited (have {})", waiting(s));
}

#[tokio::test]
async fn a_session_is_woken_once_per_drain_not_once_per_value() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(HubConfig::new(dir.path())).unwrap();
    let mut s = hub.session();
    s.subscribe(&ch("quotes.EURUSD"), None).unwrap();
    s.subscribe(&ch("quotes.GBPUSD"), None).unwrap();
    let wake = Duration::from_secs(5);
    let none = Duration::from_millis(100);

    // The first value wakes the session; its task takes the wake-up.
    publish(&hub, "quotes.EURUSD", r#"{"bid":"1.1"}"#).await;
    tokio::time::timeout(wake, s.wait()).await.unwrap();
    // A second value before the drain finds the first waiting: no second wake-up, since
    // the drain the first one leads to takes both.
    publish(&hub, "quotes.GBPUSD", r#"{"bid":"1.3"}"#).await;
    until_waiting(&s, 2).await;
    assert_eq!(s.drain().await.unwrap().len(), 2);
    assert!(
        tokio::time::timeout(none, s.wait()).await.is_err(),
        "a wake-up left over for a value already drained"
    );

    // After a drain, the next value is news again, on a channel drained before too.
    publish(&hub, "quotes.EURUSD", r#"{"bid":"1.2"}"#).await;
    tokio::time::timeout(wake, s.wait()).await.unwrap();
    until_waiting(&s, 1).await;
    let got = s.drain().await.unwrap();
    assert_eq!(&got[0].message.publication.data[..], br#"{"bid":"1.2"}"#);

    // A value conflated into one waiting (same channel) wakes nobody either; the drain
    // has the newest.
    publish(&hub, "quotes.GBPUSD", r#"{"bid":"1.4"}"#).await;
    tokio::time::timeout(wake, s.wait()).await.unwrap();
    publish(&hub, "quotes.GBPUSD", r#"{"bid":"1.5"}"#).await;
    for _ in 0..500 {
        let newest = s.shared.pending.lock().as_ref().is_some_and(|p| {
            p.state
                .values()
                .any(|(m, _)| &m.publication.data[..] == br#"{"bid":"1.5"}"#)
        });
        if newest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = s.drain().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.publication.data[..], br#"{"bid":"1.5"}"#);
    assert!(tokio::time::timeout(none, s.wait()).await.is_err());
}
