//! A logged-on session fed arbitrary bytes and timer ticks must never panic, and its sequence
//! numbers must never move backwards except through an explicit reset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_fix::{encode, Header, MemorySeqStore, RawBody, Session, SessionConfig, Timestamp};

fuzz_target!(|data: &[u8]| {
    // Setup that must work on every input: a target that returned early here would pass while
    // fuzzing nothing.
    let mut s = Session::new(SessionConfig::acceptor("TW", "CLIENT"), MemorySeqStore::default())
        .expect("an acceptor session starts");
    let now = Timestamp(1_709_214_307_000);
    s.connected(now);
    let logon = encode(
        &Header {
            begin_string: "FIX.4.4",
            sender_comp_id: "CLIENT",
            target_comp_id: "TW",
            seq_num: 1,
            sending_time: now,
            orig_sending_time: None,
        },
        &RawBody { msg_type: "A".into(), body: b"98=0\x01108=30\x01".to_vec() },
    )
    .expect("logon encodes");
    s.handle_bytes(&logon, now);
    assert!(s.is_logged_on(), "the Logon was not accepted: the fuzz input would hit a logged-out session");
    // First byte of each chunk picks the split and the clock advance.
    let mut t = now;
    for chunk in data.chunks(64) {
        let (ctl, rest) = chunk.split_first().unwrap_or((&0, &[]));
        t = Timestamp(t.0 + u64::from(*ctl) * 250);
        let before = s.seq_nums().next_sender;
        s.handle_bytes(rest, t);
        s.poll_timers(t);
        assert!(s.seq_nums().next_sender >= before || s.seq_nums().next_sender == 1);
    }
});
