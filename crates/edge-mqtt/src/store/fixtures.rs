//! The persistent-session files' frozen format (`tests/fixtures/mqtt-sessions-v1/`, see
//! `tests/fixtures/README.md`), loaded with today's [`Store`].
//!
//! One JSON file per client id, named by its hex form, as [`Store::save`] writes them: a
//! session that never expires, one that expired long ago, and one whose server crashed while
//! it was connected (no disconnect time: expiry counts from the file's last write). A failure
//! here is a format change: give the files a version, keep reading these, and add
//! `mqtt-sessions-v2` beside this fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tickwire_mqtt::broker::StoredSub;

use super::*;

/// The fixture this module reads and `regenerate_mqtt_sessions_fixture` writes.
const MQTT_SESSIONS_FIXTURE: &str = "mqtt-sessions-v1";

/// 2025-01-01T00:00:00Z, Unix milliseconds.
const T0_MS: u64 = 1_735_689_600_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(MQTT_SESSIONS_FIXTURE)
}

fn sub(filter: &str, qos: u8) -> StoredSub {
    StoredSub {
        filter: filter.into(),
        qos,
    }
}

/// A persistent session that never expires, with every field in use.
fn never_expires() -> StoredSession {
    StoredSession {
        client_id: "sensor-7".into(),
        expiry_secs: u32::MAX,
        disconnected_at_ms: Some(T0_MS),
        subs: vec![
            sub("chat/lobby", 1),
            sub("quotes/+", 0),
            sub("chat/support/#", 2),
        ],
        positions: BTreeMap::from([
            ("chat.lobby".to_string(), 42),
            ("chat.support".to_string(), 7),
            ("trades.EURUSD".to_string(), 1_000_000_007),
        ]),
        marks: BTreeMap::from([("chat".to_string(), 40)]),
        qos2_awaiting_rel: vec![7, 300, 65535],
        // Optional fields added later (QoS 2 outgoing state): absent from v1 files.
        owner: None,
        acked_ahead: BTreeMap::new(),
        qos2_out_unreceived: vec![],
        qos2_out_awaiting_comp: vec![],
    }
}

/// Disconnected on 2025-01-01 with a one-hour expiry: long expired.
fn expired() -> StoredSession {
    StoredSession {
        client_id: "dash/board 2".into(),
        expiry_secs: 3600,
        disconnected_at_ms: Some(T0_MS),
        subs: vec![sub("book/EURUSD", 1)],
        positions: BTreeMap::from([("chat.lobby".to_string(), 5)]),
        marks: BTreeMap::new(),
        qos2_awaiting_rel: vec![],
        // Optional fields added later (QoS 2 outgoing state): absent from v1 files.
        owner: None,
        acked_ahead: BTreeMap::new(),
        qos2_out_unreceived: vec![],
        qos2_out_awaiting_comp: vec![],
    }
}

/// Saved while connected (the server then crashed): no disconnect time, a one-day expiry
/// counted from the file's last write. A non-ASCII client id.
fn crashed_while_connected() -> StoredSession {
    StoredSession {
        client_id: "tablette-\u{e9}".into(),
        expiry_secs: 86_400,
        disconnected_at_ms: None,
        subs: vec![sub("chat/#", 1)],
        positions: BTreeMap::new(),
        marks: BTreeMap::from([("chat".to_string(), 0)]),
        qos2_awaiting_rel: vec![1],
        // Optional fields added later (QoS 2 outgoing state): absent from v1 files.
        owner: None,
        acked_ahead: BTreeMap::new(),
        qos2_out_unreceived: vec![],
        qos2_out_awaiting_comp: vec![],
    }
}

fn sessions() -> Vec<StoredSession> {
    vec![never_expires(), expired(), crashed_while_connected()]
}

/// Every file under `dir` (flat): name and bytes, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A copy of the fixture (loading deletes expired sessions). Copies get a fresh mtime, as a
/// checkout does: the crashed-while-connected session counts its expiry from it.
fn copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes) in files(&fixture_dir()) {
        fs::write(tmp.path().join(name), bytes).unwrap();
    }
    tmp
}

#[test]
fn mqtt_sessions_v1_are_named_by_hex_client_id() {
    let names: Vec<String> = files(&fixture_dir()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "646173682f626f6172642032.json", // dash/board 2
            "73656e736f722d37.json",         // sensor-7
            "7461626c657474652dc3a9.json",   // tablette-é (UTF-8)
        ]
    );
}

#[test]
fn mqtt_sessions_v1_load_with_every_field() {
    let tmp = copy();
    let store = Store::new(tmp.path().to_path_buf());
    assert_eq!(store.load("sensor-7").unwrap(), Some(never_expires()));
    assert_eq!(
        store.load("tablette-\u{e9}").unwrap(),
        Some(crashed_while_connected())
    );
    // The expired file is still readable, field for field, and then swept.
    let path = tmp.path().join("646173682f626f6172642032.json");
    let raw: StoredSession = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw, expired());
    assert_eq!(store.sweep(|_| false, || None).unwrap(), 1);
    assert!(!path.exists());
    assert_eq!(store.load("dash/board 2").unwrap(), None);
    // The live ones survive the sweep and load again.
    assert_eq!(store.load("sensor-7").unwrap(), Some(never_expires()));
    assert_eq!(
        store.load("tablette-\u{e9}").unwrap(),
        Some(crashed_while_connected())
    );
}

#[test]
fn mqtt_sessions_v1_expired_one_is_dropped_on_load() {
    let tmp = copy();
    let store = Store::new(tmp.path().to_path_buf());
    assert_eq!(store.load("dash/board 2").unwrap(), None);
    assert!(!tmp.path().join("646173682f626f6172642032.json").exists());
}

/// Writes the fixture's session files into `dir` with today's store.
fn write_mqtt_sessions_fixture(dir: &Path) {
    let store = Store::new(dir.to_path_buf());
    for s in sessions() {
        store.save(&s).unwrap();
    }
}

/// Today's store still writes the frozen v1 bytes. When this fails the session format
/// changed: version it, keep reading v1 (the tests above), and add `mqtt-sessions-v2`.
#[test]
fn todays_store_still_writes_mqtt_sessions_v1() {
    let tmp = tempfile::tempdir().unwrap();
    write_mqtt_sessions_fixture(tmp.path());
    assert_eq!(files(tmp.path()), files(&fixture_dir()));
}

/// Writes `tests/fixtures/mqtt-sessions-v1` with today's code. Not run in CI: run it only when
/// deliberately adding a new format version, after pointing `MQTT_SESSIONS_FIXTURE` at a NEW
/// directory (`mqtt-sessions-v2`) and keeping a test that reads v1; never overwrite a
/// committed fixture (it refuses to write into a directory that exists):
///
/// `cargo test -p tickwire-edge-mqtt --lib -- --ignored regenerate_mqtt_sessions_fixture`
#[test]
#[ignore = "writes tests/fixtures; run only when adding a new format version"]
fn regenerate_mqtt_sessions_fixture() {
    let dir = fixture_dir();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are frozen; write a new version beside it",
        dir.display()
    );
    write_mqtt_sessions_fixture(&dir);
    println!("wrote {}", dir.display());
}
