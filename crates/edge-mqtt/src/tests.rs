#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The broker's claims on client ids: a connection that takes an id over waits for the one
//! before it to leave, and the newest connection of an id wins.

use std::{sync::Arc, time::Duration};

use tickwire_model::DataDir;

use crate::{Broker, Owner};

/// Claims `id` in a task of its own, as a connection does.
fn claim_later(
    broker: &Arc<Broker>,
    hub: &tickwire_hub::Hub,
    id: &Arc<str>,
) -> tokio::task::JoinHandle<Result<Owner, bool>> {
    let (broker, id, closer) = (broker.clone(), id.clone(), hub.session().closer());
    tokio::spawn(async move { broker.claim(&id, "user".into(), closer).await })
}

/// How many hold the claim's lock: the map, the owner's guard, and each waiting claimer.
fn holders(broker: &Broker, id: &str) -> usize {
    broker
        .live
        .lock()
        .get(id)
        .map_or(0, |c| Arc::strong_count(&c.lock))
}

async fn until(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_claim_that_comes_while_another_waits_takes_over_from_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub =
        tickwire_hub::Hub::open(tickwire_hub::HubConfig::new(dir.path().join("hub"))).unwrap();
    let broker = Arc::new(Broker::new(&DataDir::new(dir.path()), None));
    let id: Arc<str> = "dev/1".into();
    let first = broker
        .claim(&id, "user".into(), hub.session().closer())
        .await
        .unwrap();
    // A second connection of the id tells the first to leave, and waits for it.
    let second = claim_later(&broker, &hub, &id);
    until(|| holders(&broker, &id) == 3).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), first.takeover.wait())
            .await
            .is_ok(),
        "the first is told to leave"
    );
    // A third comes before the first has let go: it tells the newest claimer before it, the
    // second, to leave.
    let third = claim_later(&broker, &hub, &id);
    until(|| holders(&broker, &id) == 4).await;
    broker.release(&id, first);
    // The second gets the id, and is told at once to leave for the third.
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second gets the id")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), second.takeover.wait())
        .await
        .expect("the second is told to leave for the third");
    broker.release(&id, second);
    let third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third gets the id, well within its 10 s")
        .unwrap()
        .unwrap();
    // The newest stays, and nobody waits for the id any more.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), third.takeover.wait())
            .await
            .is_err(),
        "the newest connection stays"
    );
    broker.release(&id, third);
    assert!(!broker.is_live(&id));
}
