//! The FIX sequence-number file's frozen format (`tests/fixtures/fix-seq-v1/`, see
//! `tests/fixtures/README.md`), opened with today's [`FileSeqStore`].
//!
//! The fixture is a data directory's `fix/` directory as the FIX edge lays it out
//! (`<role>/<SenderCompID>-<TargetCompID>.seq`). A failure here is a format change: bump the
//! header's version (`tickwire-fix-seq 1`), keep reading version 1, and add `fix-seq-v2`
//! beside this fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tickwire_fix::{FileSeqStore, SeqNums, SeqStore};

/// The fixture this file reads and `regenerate_fix_seq_fixture` writes.
const FIX_SEQ_FIXTURE: &str = "fix-seq-v1";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(FIX_SEQ_FIXTURE)
}

/// The sessions in the fixture: file (relative to the `fix/` directory) and its numbers.
fn sessions() -> Vec<(&'static str, SeqNums)> {
    vec![
        (
            "initiator/TICKWIRE-LMAX.seq",
            SeqNums {
                next_sender: 1042,
                next_target: 877,
            },
        ),
        // A session that has only logged on: the numbers right after a Logon exchange.
        (
            "acceptor/TICKWIRE-CLIENT1.seq",
            SeqNums {
                next_sender: 2,
                next_target: 2,
            },
        ),
        // Beyond 32 bits, and beyond what a binary float holds exactly (2^53 + 1).
        (
            "acceptor/TICKWIRE-CLIENT2.seq",
            SeqNums {
                next_sender: 4_294_967_297,
                next_target: 9_007_199_254_740_993,
            },
        ),
    ]
}

/// Every file under `dir`: relative path and bytes, sorted.
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

#[test]
fn fix_seq_v1_files_open_with_their_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let frozen = files(&fixture_dir());
    assert_eq!(frozen.len(), sessions().len());
    for (name, bytes) in &frozen {
        let path = tmp.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    for (name, want) in sessions() {
        let path = tmp.path().join(name);
        let mut store = FileSeqStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), want, "{name}");
        // The session goes on from there, and the numbers survive a reopen.
        let next = SeqNums {
            next_sender: want.next_sender + 1,
            next_target: want.next_target,
        };
        store.save(next).unwrap();
        drop(store);
        assert_eq!(
            FileSeqStore::open(&path).unwrap().load().unwrap(),
            next,
            "{name}"
        );
    }
}

#[test]
fn fix_seq_v1_file_text_is_the_documented_one() {
    // Read without the store, so the layout itself is pinned: a header line, then the two
    // numbers as `key=value` lines.
    let text = std::fs::read_to_string(fixture_dir().join("initiator/TICKWIRE-LMAX.seq")).unwrap();
    assert_eq!(
        text,
        "tickwire-fix-seq 1\nnext_sender=1042\nnext_target=877\n"
    );
}

/// Writes the fixture's files into `dir` with today's store.
fn write_fix_seq_fixture(dir: &Path) {
    for (name, seqs) in sessions() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        FileSeqStore::open(&path).unwrap().save(seqs).unwrap();
    }
}

/// Today's store still writes the frozen v1 bytes. When this fails the store changed the
/// on-disk format: bump the version, keep reading v1 (the test above), and add `fix-seq-v2`.
#[test]
fn todays_store_still_writes_fix_seq_v1() {
    let tmp = tempfile::tempdir().unwrap();
    write_fix_seq_fixture(tmp.path());
    assert_eq!(files(tmp.path()), files(&fixture_dir()));
}

/// Writes `tests/fixtures/fix-seq-v1` with today's code. Not run in CI: run it only when
/// deliberately adding a new format version, after pointing `FIX_SEQ_FIXTURE` at a NEW
/// directory (`fix-seq-v2`) and keeping a test that reads `fix-seq-v1`; never overwrite a
/// committed fixture (it refuses to write into a directory that exists):
///
/// `cargo test -p tickwire-fix --test fixtures -- --ignored regenerate_fix_seq_fixture`
#[test]
#[ignore = "writes tests/fixtures; run only when adding a new format version"]
fn regenerate_fix_seq_fixture() {
    let dir = fixture_dir();
    assert!(
        !dir.exists(),
        "{} exists: fixtures are frozen; write a new version beside it",
        dir.display()
    );
    write_fix_seq_fixture(&dir);
    println!("wrote {}", dir.display());
}
