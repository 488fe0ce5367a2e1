//! The embedded stream's frozen on-disk format (`tests/fixtures/log-v1/`, see
//! `tests/fixtures/README.md`), opened with today's code.
//!
//! `log-v1/data/` is a data directory whose `chat` namespace log was written by the embedded
//! backend with 4 KiB segments: a sealed segment with its sparse index (one entry), an active
//! segment, and the `EPOCH` file. `log-v1/data-no-epoch/` is a directory from before epochs
//! existed (one segment, no `EPOCH`). Every record's offset, timestamp, channel, msg_id and
//! data bytes are asserted, so a change to the segment, index, record or value format fails
//! here: that is a format change (bump the version, keep reading v1, add `log-v2` beside it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickwire_stream::embedded::{Embedded, EmbeddedAppender, EmbeddedConfig, EmbeddedStream};
use tickwire_stream::{AppendItem, Appender, Channel, DataDir, Epoch, NamespaceSpec, Stream};

/// The fixture this file reads and `regenerate_log_fixture` writes.
const LOG_FIXTURE: &str = "log-v1";

/// The epoch in `log-v1/data/log/chat/EPOCH` (chosen at random when it was written).
const EPOCH_V1: Epoch = Epoch(0x2d4a_04fb_0608_a443);

/// 2025-01-01T00:00:00Z, Unix nanoseconds.
const T0: u64 = 1_735_689_600_000_000_000;
/// 2024-01-01T00:00:00Z, Unix nanoseconds.
const T_OLD: u64 = 1_704_067_200_000_000_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(LOG_FIXTURE)
}

fn chat() -> NamespaceSpec {
    NamespaceSpec::defaults()
        .into_iter()
        .find(|s| s.name == "chat")
        .unwrap()
}

/// One record to append: channel, msg_id, data.
type Item = (&'static str, Option<String>, Vec<u8>);

/// `n` bytes of readable ASCII text, so a few records fill a 4 KiB segment.
fn text(n: usize) -> String {
    "Tickwire stores every byte of a chat message exactly as it was sent. "
        .chars()
        .cycle()
        .take(n)
        .collect()
}

fn msg(user: &str, text: &str) -> Vec<u8> {
    format!(r#"{{"user":"{user}","text":"{text}"}}"#).into_bytes()
}

fn id(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// The batches of `data/`, each appended with one timestamp. The first batch (about 4.9 KiB)
/// fills the first segment past one index interval (4096 bytes), so the sealed segment's index
/// has an entry (at offset 5); the next batch rolls to a second segment at offset 6.
fn batches_with_epoch() -> Vec<(u64, Vec<Item>)> {
    vec![
        (
            T0,
            vec![
                ("chat.lobby", id("m-0001"), msg("ann", &text(900))),
                ("chat.support", None, msg("bob", &text(910))),
                ("chat.lobby", id("m-0002"), msg("ann", &text(920))),
                ("chat.room-7", id("m-0003"), msg("cy", &text(930))),
                ("chat.support", None, msg("bob", &text(940))),
                ("chat.lobby", None, msg("cy", "short")),
            ],
        ),
        (
            T0 + 1_000_000_000,
            vec![
                // Data is stored byte for byte: UTF-8, an exponent, a trailing zero, spacing.
                (
                    "chat.lobby",
                    id("m-0004"),
                    msg("dee", "h\u{e9}llo \u{2713} \u{2014} na\u{ef}ve caf\u{e9}"),
                ),
                (
                    "chat.room-7",
                    None,
                    br#"{ "px" : "1.10", "qty": 1.0e3, "nested": {"a": [1, 2, {"b": null}]} }"#
                        .to_vec(),
                ),
                // A 128-byte msg_id (the edges' limit): its length byte has the high bit set.
                (
                    "chat.support",
                    Some(format!("order-{}", "9".repeat(122))),
                    msg("bob", "long id"),
                ),
            ],
        ),
        (
            T0 + 2_500_000_123,
            vec![
                ("chat.lobby", None, b"{}".to_vec()),
                ("chat.lobby", id("m-0005"), msg("ann", "bye")),
            ],
        ),
    ]
}

/// The batches of `data-no-epoch/`: one small segment.
fn batches_before_epochs() -> Vec<(u64, Vec<Item>)> {
    vec![
        (
            T_OLD,
            vec![
                ("chat.lobby", id("old-1"), msg("eve", "from before epochs")),
                ("chat.general", None, br#"{"n":1}"#.to_vec()),
            ],
        ),
        (
            T_OLD + 60_000_000_000,
            vec![
                ("chat.general", id("old-2"), br#"{"n":2}"#.to_vec()),
                ("chat.lobby", None, msg("eve", "still here")),
            ],
        ),
    ]
}

/// A record as read back: offset, timestamp, channel, msg_id, data.
type Read = (u64, u64, String, Option<String>, Vec<u8>);

/// What reading every record of a log written from `batches` must give.
fn expected(batches: &[(u64, Vec<Item>)]) -> Vec<Read> {
    let mut out = Vec::new();
    for (ts, items) in batches {
        for (channel, msg_id, data) in items {
            out.push((
                out.len() as u64,
                *ts,
                channel.to_string(),
                msg_id.clone(),
                data.clone(),
            ));
        }
    }
    out
}

fn read_all(stream: &dyn Stream) -> Vec<Read> {
    let batch = stream.read(0, 10_000, 64 << 20).unwrap();
    assert_eq!(batch.skipped, 0, "records today's code cannot decode");
    assert_eq!(batch.next, stream.next_offset());
    batch
        .publications
        .into_iter()
        .map(|p| {
            (
                p.offset,
                p.timestamp,
                p.channel.to_string(),
                p.msg_id,
                p.data.to_vec(),
            )
        })
        .collect()
}

/// Copies a fixture directory tree (opening may write: LOCK, EPOCH, a rebuilt index).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Relative path → bytes of every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Opens the `chat` namespace of the data directory `root` with the server's default settings.
fn open(root: &Path) -> (Embedded, Arc<EmbeddedStream>, EmbeddedAppender) {
    let backend = Embedded::open(DataDir::new(root), EmbeddedConfig::default()).unwrap();
    let (stream, appender) = backend.open_namespace(&chat()).unwrap();
    (backend, stream, appender)
}

#[test]
fn log_v1_opens_with_every_record_and_its_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir().join("data"), tmp.path());
    let want = expected(&batches_with_epoch());
    assert_eq!(want.len(), 11);
    let index_before = std::fs::read(
        DataDir::new(tmp.path())
            .log("chat")
            .join("00000000000000000000.index"),
    )
    .unwrap();
    {
        let (_backend, stream, mut appender) = open(tmp.path());
        let r = stream.recovery();
        assert_eq!(r.segments, 2);
        assert!(!r.created);
        assert_eq!(r.truncated_bytes, 0, "{:?}", r.truncation_reason);
        assert_eq!(
            r.indexes_rebuilt, 0,
            "the sealed segment's v1 index must be read, not rebuilt"
        );
        assert_eq!(r.orphans_removed, 0);
        assert_eq!(stream.epoch(), EPOCH_V1);
        assert_eq!(stream.start_offset(), 0);
        assert_eq!(stream.next_offset(), 11);
        assert_eq!(read_all(&*stream), want);

        // Reads that start inside the sealed segment go through its index entry (offset 5).
        let from5 = stream.read(5, 3, 1 << 20).unwrap();
        let offsets: Vec<u64> = from5.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![5, 6, 7]);
        let lobby = Channel::parse("chat.lobby").unwrap();
        let page = stream.read_channel(&lobby, 0, 11, 100, 100).unwrap();
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![0, 2, 5, 6, 9, 10]);

        // The stream goes on from where v1 stopped.
        let ch = Channel::parse("chat.lobby").unwrap();
        let item = AppendItem {
            channel: &ch,
            msg_id: Some("m-0006"),
            data: b"{\"after\":true}",
        };
        assert_eq!(appender.append(&[item], T0 + 3_000_000_000).unwrap(), 11);
        appender.sync().unwrap();
    }
    let index_after = std::fs::read(
        DataDir::new(tmp.path())
            .log("chat")
            .join("00000000000000000000.index"),
    )
    .unwrap();
    assert_eq!(index_before, index_after, "opening rewrote the v1 index");
    let (_backend, stream, _appender) = open(tmp.path());
    assert_eq!(stream.epoch(), EPOCH_V1);
    assert_eq!(stream.next_offset(), 12);
    assert_eq!(read_all(&*stream)[..11], want[..]);
}

#[test]
fn log_v1_from_before_epochs_keeps_its_offsets_and_gets_an_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir().join("data-no-epoch"), tmp.path());
    let epoch_file = DataDir::new(tmp.path()).log("chat").join("EPOCH");
    assert!(!epoch_file.exists(), "the fixture must have no EPOCH file");
    let want = expected(&batches_before_epochs());
    assert_eq!(want.len(), 4);
    let epoch = {
        let (_backend, stream, _appender) = open(tmp.path());
        let r = stream.recovery();
        assert_eq!(r.segments, 1);
        assert!(!r.created);
        assert_eq!(r.truncated_bytes, 0, "{:?}", r.truncation_reason);
        assert_eq!(stream.start_offset(), 0);
        assert_eq!(stream.next_offset(), 4, "offsets are kept");
        assert_eq!(read_all(&*stream), want);
        stream.epoch()
    };
    // The epoch was created and written durably, in the v1 EPOCH form.
    assert_eq!(
        std::fs::read_to_string(&epoch_file).unwrap(),
        format!("{epoch}\n")
    );
    let (_backend, stream, _appender) = open(tmp.path());
    assert_eq!(stream.epoch(), epoch, "the new epoch is kept");
    assert_eq!(stream.next_offset(), 4);
    assert_eq!(read_all(&*stream), want);
}

/// Appends `batches` to the `chat` log of a new data directory at `root` with 4 KiB segments;
/// then removes the lock file, which is not part of the format.
fn write_namespace(root: &Path, batches: &[(u64, Vec<Item>)]) {
    {
        let config = EmbeddedConfig {
            segment_bytes: 4096,
        };
        let backend = Embedded::open(DataDir::new(root), config).unwrap();
        let (_stream, mut appender) = backend.open_namespace(&chat()).unwrap();
        for (ts, items) in batches {
            let channels: Vec<Channel> = items
                .iter()
                .map(|(c, _, _)| Channel::parse(c).unwrap())
                .collect();
            let items: Vec<AppendItem<'_>> = items
                .iter()
                .zip(&channels)
                .map(|((_, msg_id, data), channel)| AppendItem {
                    channel,
                    msg_id: msg_id.as_deref(),
                    data,
                })
                .collect();
            appender.append(&items, *ts).unwrap();
            appender.sync().unwrap();
        }
    }
    std::fs::remove_file(DataDir::new(root).lock_file()).unwrap();
}

/// Writes the two data directories of the log fixture under `root`.
fn write_log_fixture(root: &Path) {
    write_namespace(&root.join("data"), &batches_with_epoch());
    let old = root.join("data-no-epoch");
    write_namespace(&old, &batches_before_epochs());
    // The log format did not change when epochs came: a directory from before is a v1 log
    // without the file.
    std::fs::remove_file(DataDir::new(&old).log("chat").join("EPOCH")).unwrap();
}

/// Today's writer still writes the frozen v1 files byte for byte (all but the random EPOCH
/// value). When this fails the writer changed the on-disk format: bump the version, keep
/// reading v1 (the tests above), and add a `log-v2` fixture beside this one.
#[test]
fn todays_writer_still_writes_log_v1() {
    let tmp = tempfile::tempdir().unwrap();
    write_log_fixture(tmp.path());
    let strip_epoch = |files: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        files
            .into_iter()
            .map(|(name, bytes)| {
                if name.ends_with("EPOCH") {
                    let text = String::from_utf8(bytes).unwrap();
                    let epoch = Epoch::parse(text.strip_suffix('\n').unwrap()).unwrap();
                    assert_eq!(text, format!("{epoch}\n"), "{name}");
                    (name, b"<epoch>\n".to_vec())
                } else {
                    (name, bytes)
                }
            })
            .collect()
    };
    let written = strip_epoch(files(tmp.path()));
    let frozen = strip_epoch(files(&fixture_dir()));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&written), names(&frozen));
    for ((name, w), (_, f)) in written.iter().zip(&frozen) {
        assert!(w == f, "{name}: today's writer differs from {LOG_FIXTURE}");
    }
}

/// Writes `tests/fixtures/log-v1` with today's code. Not run in CI: run it only when deliberately
/// adding a new format version, after pointing `LOG_FIXTURE` at a NEW directory (`log-v2`) and
/// keeping a test that reads `log-v1`; never overwrite a committed fixture (it refuses to
/// write into a directory that exists):
///
/// `cargo test -p tickwire-stream --test fixtures -- --ignored regenerate_log_fixture`
///
/// Then set `EPOCH_V1` (or its v2 successor) to the new `EPOCH` file's value.
#[test]
#[ignore = "writes tests/fixtures; run only when adding a new format version"]
fn regenerate_log_fixture() {
    let dir = fixture_dir();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are frozen; write a new version beside it",
        dir.display()
    );
    write_log_fixture(&dir);
    println!("wrote {}", dir.display());
}
