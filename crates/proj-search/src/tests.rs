#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;

use super::*;

fn publication(channel: &str, offset: Offset, data: &str) -> Publication {
    Publication {
        channel: Channel::parse(channel).unwrap(),
        offset,
        // Appended one second apart from 2026-01-01 on.
        timestamp: (1_767_225_600 + offset) * 1_000_000_000,
        msg_id: None,
        data: Bytes::from(data.to_string()),
    }
}

fn said(channel: &str, offset: Offset, sub: &str, text: &str) -> Publication {
    publication(
        channel,
        offset,
        &format!(
            r#"{{"from":{{"sub":"{sub}","info":{{"name":"{sub}"}}}},"text":{}}}"#,
            serde_json::Value::from(text)
        ),
    )
}

fn q(text: &str) -> SearchQuery {
    SearchQuery {
        q: text.into(),
        ..Default::default()
    }
}

fn all() -> Vec<(String, NamespaceScope)> {
    vec![
        ("chat".into(), NamespaceScope::All),
        ("user".into(), NamespaceScope::All),
    ]
}

fn offsets(st: &SearchState, query: &SearchQuery, scope: &[(String, NamespaceScope)]) -> Vec<u64> {
    st.run(query, scope, &|_| true)
        .unwrap()
        .hits
        .iter()
        .map(|h| h.offset)
        .collect()
}

fn positions(chat: Offset) -> Positions {
    let mut p = Positions::default();
    p.next.insert("chat".into(), chat);
    p.epochs.insert("chat".into(), Epoch(7));
    p
}

#[test]
fn words_phrases_prefixes_and_exclusions_newest_first_with_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
    p.apply(0, &said("chat.a", 0, "42", "The quick brown fox"));
    p.apply(0, &said("chat.a", 1, "7", "a quick <script> test"));
    p.apply(0, &said("chat.b", 2, "42", "Brown bread, quickly eaten"));
    p.apply(0, &said("chat.b", 3, "7", "Rendez-vous au café à Zürich"));
    p.apply(0, &said("chat.b", 4, "7", "東京タワーで会いましょう"));
    // Not searchable before the commit; then newest first.
    assert!(offsets(&st, &q("quick"), &all()).is_empty());
    p.checkpoint(&positions(5)).unwrap();
    assert_eq!(offsets(&st, &q("quick"), &all()), [1, 0]);
    assert_eq!(offsets(&st, &q("quick*"), &all()), [2, 1, 0]);
    assert_eq!(offsets(&st, &q("\"brown fox\""), &all()), [0]);
    assert_eq!(offsets(&st, &q("\"fox brown\""), &all()), Vec::<u64>::new());
    assert_eq!(offsets(&st, &q("\"quick bro\"*"), &all()), [0]);
    assert_eq!(offsets(&st, &q("brown -fox"), &all()), [2]);
    assert_eq!(offsets(&st, &q("CAFE zurich"), &all()), [3]);
    assert_eq!(offsets(&st, &q("東京"), &all()), [4]);
    assert_eq!(offsets(&st, &q("京東"), &all()), Vec::<u64>::new());
    // Filters: channel, author, time.
    let mut by = q("quick*");
    by.from_user = Some("42".into());
    assert_eq!(offsets(&st, &by, &all()), [2, 0]);
    by.channel = Some(Channel::parse("chat.a").unwrap());
    assert_eq!(offsets(&st, &by, &all()), [0]);
    let mut when = q("quick*");
    when.since = Some((1_767_225_600 + 1) * 1000);
    when.until = Some((1_767_225_600 + 2) * 1000);
    assert_eq!(offsets(&st, &when, &all()), [1]);
    // Relevance: the scores are there.
    let mut rel = q("brown");
    rel.order = Some("relevance".into());
    let r = st.run(&rel, &all(), &|_| true).unwrap();
    assert_eq!(r.hits.len(), 2);
    assert!(r.hits.iter().all(|h| h.score.is_some()));
    // The hit: where, when, who, and the snippet marked and escaped.
    let r = st.run(&q("test"), &all(), &|_| true).unwrap();
    let h = &r.hits[0];
    assert_eq!((h.channel.as_str(), h.offset), ("chat.a", 1));
    assert_eq!(h.ts, (1_767_225_600 + 1) * 1000);
    assert_eq!(
        h.from.as_ref().unwrap().get(),
        r#"{"sub":"7","info":{"name":"7"}}"#
    );
    assert_eq!(h.snippet, "a quick &lt;script&gt; <mark>test</mark>");
    // Paging.
    let mut page = q("quick*");
    page.limit = Some(2);
    let r = st.run(&page, &all(), &|_| true).unwrap();
    assert_eq!((r.hits.len(), r.more), (2, true));
    page.skip = Some(2);
    let r = st.run(&page, &all(), &|_| true).unwrap();
    assert_eq!((r.hits.len(), r.more), (1, false));
    // Nothing to look for, bad order: refused.
    assert!(st.run(&q("-fox"), &all(), &|_| true).is_err());
    let mut bad = q("fox");
    bad.order = Some("oldest".into());
    assert!(st.run(&bad, &all(), &|_| true).is_err());
}

#[test]
fn a_user_sees_only_their_own_channels_and_readable_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
    p.apply(0, &said("user.42", 0, "srv", "secret for 42"));
    p.apply(0, &said("user.4", 1, "srv", "secret for 4"));
    p.apply(0, &said("user.42.alerts", 2, "srv", "secret alert for 42"));
    p.apply(0, &said("user.420", 3, "srv", "secret for 420"));
    p.apply(0, &said("chat.a", 4, "srv", "secret in chat a"));
    p.apply(0, &said("chat.b", 5, "srv", "secret in chat b"));
    p.checkpoint(&positions(6)).unwrap();
    let own = vec![
        ("chat".to_string(), NamespaceScope::All),
        ("user".to_string(), NamespaceScope::Own("42".into())),
    ];
    assert_eq!(offsets(&st, &q("secret"), &own), [5, 4, 2, 0]);
    // A namespace checked hit by hit: the unreadable ones never show, the page stays full.
    let filtered = vec![("chat".to_string(), NamespaceScope::Filtered)];
    let r = st
        .run(&q("secret"), &filtered, &|c| c.as_str() == "chat.a")
        .unwrap();
    assert_eq!(r.hits.iter().map(|h| h.offset).collect::<Vec<_>>(), [4]);
    // Nothing searchable: nothing found.
    assert!(offsets(&st, &q("secret"), &[]).is_empty());
}

#[test]
fn edits_replace_deletes_remove_and_a_tombstone_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
    p.apply(0, &said("chat.a", 0, "42", "hello wrld"));
    p.apply(0, &said("chat.a", 1, "7", "to be removed"));
    p.checkpoint(&positions(2)).unwrap();
    // An edit of a committed message, then a second one before the commit.
    p.apply(
        0,
        &publication(
            "chat.a",
            2,
            r#"{"from":{"sub":"42"},"$edit":0,"data":{"from":{"sub":"42"},"text":"hello world"}}"#,
        ),
    );
    p.apply(
        0,
        &publication(
            "chat.a",
            3,
            r#"{"$edit":0,"data":{"from":{"sub":"42"},"text":"hello there world"}}"#,
        ),
    );
    p.apply(0, &publication("chat.a", 4, r#"{"$delete":1}"#));
    p.apply(
        0,
        &publication("chat.a", 5, r#"{"$edit":1,"data":{"text":"back removed"}}"#),
    );
    // Another channel's record cannot touch this channel's message.
    p.apply(0, &publication("chat.b", 6, r#"{"$delete":0}"#));
    p.checkpoint(&positions(7)).unwrap();
    assert!(offsets(&st, &q("wrld"), &all()).is_empty());
    let r = st.run(&q("world"), &all(), &|_| true).unwrap();
    assert_eq!(r.hits.len(), 1);
    let h = &r.hits[0];
    assert_eq!((h.offset, h.edited), (0, true));
    assert_eq!(h.ts, 1_767_225_600 * 1000, "the original message's time");
    assert!(offsets(&st, &q("removed"), &all()).is_empty());
    assert_eq!(st.num_docs(), 1);
}

#[test]
fn the_index_and_its_positions_survive_a_reopen_and_a_broken_one_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, mut p) = SearchProjection::open(dir.path()).unwrap();
        assert_eq!(p.restore().unwrap(), Positions::default());
        p.apply(0, &said("chat.a", 0, "42", "kept"));
        p.checkpoint(&positions(1)).unwrap();
        // Applied, never committed: gone with the process, replayed from the positions.
        p.apply(0, &said("chat.a", 1, "42", "kept too"));
    }
    {
        let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
        assert_eq!(p.restore().unwrap(), positions(1));
        assert_eq!(offsets(&st, &q("kept"), &all()), [0]);
        // Positions that moved are committed though nothing was indexed.
        p.checkpoint(&positions(5)).unwrap();
    }
    let (_, mut p) = SearchProjection::open(dir.path()).unwrap();
    assert_eq!(p.restore().unwrap(), positions(5));
    drop(p);
    // A meta.json that is not one: rebuilt empty, from the start of the streams.
    std::fs::write(dir.path().join("meta.json"), b"{not json").unwrap();
    let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
    assert_eq!(p.restore().unwrap(), Positions::default());
    assert_eq!(st.num_docs(), 0);
}

#[test]
fn messages_past_their_namespaces_retention_leave_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (st, mut p) = SearchProjection::open(dir.path()).unwrap();
    p.retention = vec![("chat".into(), Duration::from_secs(60))];
    p.apply(0, &said("chat.a", 0, "42", "old news"));
    p.apply(0, &said("chat.a", 100, "42", "new news"));
    p.apply(0, &said("user.42", 1, "42", "old but kept news"));
    p.checkpoint(&positions(101)).unwrap();
    // 90 s after the first message: it is past 60 s, the second is not; `user` has no limit.
    p.tick((1_767_225_600_i64 + 90) * 1000);
    p.checkpoint(&positions(101)).unwrap();
    assert_eq!(offsets(&st, &q("news"), &all()), [100, 1]);
}
