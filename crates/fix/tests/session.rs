//! Session rules, driven as the transport would: bytes and times in, actions out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use tickwire_fix::md::{IncrementalEntry, MarketDataIncrementalRefresh, MdUpdateAction};
use tickwire_fix::{
    Action, DisconnectReason, Error, FileSeqStore, MemorySeqStore, RawBody, ResendMode, SeqNums,
    SeqStore, Session, SessionConfig, SessionEvent, SessionState,
};

fn x_msg() -> RawBody {
    RawBody {
        msg_type: "X".into(),
        body: soh("268=1|279=2|278=id1|"),
    }
}

fn acceptor() -> Session<MemorySeqStore> {
    Session::new(
        SessionConfig::acceptor("TW", "CLIENT"),
        MemorySeqStore::default(),
    )
    .unwrap()
}

// ---------- Logon ----------

#[test]
fn initiator_sends_logon_and_logs_on_with_answer() {
    let mut s = Session::new(
        SessionConfig::initiator("TW", "FEED"),
        MemorySeqStore::default(),
    )
    .unwrap();
    let a = s.connected(t(0));
    let logon = &sent(&a)[0];
    assert_eq!(logon.msg_type(), "A");
    assert_eq!(logon.seq_num(), Some(1));
    assert_eq!(field(logon, 98).as_deref(), Some("0"));
    assert_eq!(field(logon, 108).as_deref(), Some("30"));
    assert_eq!(field(logon, 141), None);
    assert_eq!(field(logon, 49).as_deref(), Some("TW"));
    assert_eq!(field(logon, 56).as_deref(), Some("FEED"));
    assert_eq!(field(logon, 52).as_deref(), Some("20240229-13:45:07.000"));
    assert!(
        has(&a, &Action::SetTimer(t(10))),
        "logon timeout armed: {a:?}"
    );
    assert_eq!(s.state(), SessionState::LogonSent);
    let mut peer = Peer::new("FEED", "TW");
    let a = s.handle_bytes(&peer.msg("A", "98=0|108=30|", t(1)), t(1));
    assert!(has(&a, &Action::LoggedOn));
    assert!(sent(&a).is_empty(), "initiator does not answer the answer");
    assert_eq!(
        s.seq_nums(),
        SeqNums {
            next_sender: 2,
            next_target: 2
        }
    );
}

#[test]
fn acceptor_answers_logon_and_adopts_heartbeat() {
    let mut s = acceptor();
    s.connected(t(0));
    assert_eq!(s.state(), SessionState::AwaitingLogon);
    let mut peer = Peer::new("CLIENT", "TW");
    let a = s.handle_bytes(&peer.msg("A", "98=0|108=10|", t(0)), t(0));
    let out = sent(&a);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].msg_type(), "A");
    assert_eq!(field(&out[0], 108).as_deref(), Some("10"));
    assert!(has(&a, &Action::LoggedOn));
    assert_eq!(s.heartbeat_interval(), Duration::from_secs(10));
    assert!(s.is_logged_on());
}

#[test]
fn acceptor_refuses_unknown_comp_ids_silently() {
    let mut s = acceptor();
    s.connected(t(0));
    let mut peer = Peer::new("INTRUDER", "TW");
    let a = s.handle_bytes(&peer.msg("A", "98=0|108=30|", t(0)), t(0));
    assert!(
        sent(&a).is_empty(),
        "no message may consume a sequence number"
    );
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::LogonRejected(_))
    ));
    assert_eq!(s.seq_nums(), SeqNums::default());
}

#[test]
fn acceptor_disconnects_when_first_message_is_not_logon() {
    let mut s = acceptor();
    s.connected(t(0));
    let mut peer = Peer::new("CLIENT", "TW");
    let a = s.handle_bytes(&peer.msg("0", "", t(0)), t(0));
    assert!(sent(&a).is_empty());
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn malformed_logon_gets_logout_with_reason() {
    let mut s = acceptor();
    s.connected(t(0));
    let mut peer = Peer::new("CLIENT", "TW");
    let a = s.handle_bytes(&peer.msg("A", "98=0|", t(0)), t(0));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "5");
    assert!(field(&out[0], 58).unwrap().contains("HeartBtInt"));
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::LogonRejected(_))
    ));
}

#[test]
fn logon_with_reset_flag_resets_both_sides() {
    let store = MemorySeqStore::new(SeqNums {
        next_sender: 50,
        next_target: 40,
    });
    let mut s = Session::new(SessionConfig::acceptor("TW", "CLIENT"), store).unwrap();
    s.connected(t(0));
    let peer = Peer::new("CLIENT", "TW");
    let a = s.handle_bytes(&peer.at(1, "A", "98=0|108=30|141=Y|", t(0), None), t(0));
    let out = sent(&a);
    assert_eq!(out[0].seq_num(), Some(1));
    assert_eq!(field(&out[0], 141).as_deref(), Some("Y"));
    assert_eq!(
        s.seq_nums(),
        SeqNums {
            next_sender: 2,
            next_target: 2
        }
    );
    assert_eq!(s.store().clone().load().unwrap(), s.seq_nums(), "persisted");
}

#[test]
fn initiator_reset_on_logon_starts_at_one() {
    let mut cfg = SessionConfig::initiator("TW", "FEED");
    cfg.reset_on_logon = true;
    let store = MemorySeqStore::new(SeqNums {
        next_sender: 9,
        next_target: 9,
    });
    let mut s = Session::new(cfg, store).unwrap();
    let a = s.connected(t(0));
    let logon = &sent(&a)[0];
    assert_eq!(logon.seq_num(), Some(1));
    assert_eq!(field(logon, 141).as_deref(), Some("Y"));
    let peer = Peer::new("FEED", "TW");
    let a = s.handle_bytes(&peer.at(1, "A", "98=0|108=30|141=Y|", t(0), None), t(0));
    assert!(has(&a, &Action::LoggedOn));
    assert_eq!(
        s.seq_nums(),
        SeqNums {
            next_sender: 2,
            next_target: 2
        }
    );
}

#[test]
fn logon_timeout_disconnects() {
    let mut s = acceptor();
    s.connected(t(0));
    assert!(s.poll_timers(t(9)).is_empty());
    let a = s.poll_timers(t(10));
    assert_eq!(disconnect_reason(&a), Some(DisconnectReason::LogonTimeout));
    assert_eq!(s.state(), SessionState::Disconnected);
}

#[test]
fn duplicate_logon_on_live_session_disconnects_without_reply() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.msg("A", "98=0|108=30|", t(1)), t(1));
    assert!(sent(&a).is_empty());
    assert!(has(&a, &Action::LoggedOut));
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn logon_with_seq_too_low_is_refused() {
    let store = MemorySeqStore::new(SeqNums {
        next_sender: 1,
        next_target: 5,
    });
    let mut s = Session::new(SessionConfig::acceptor("TW", "CLIENT"), store).unwrap();
    s.connected(t(0));
    let peer = Peer::new("CLIENT", "TW");
    let a = s.handle_bytes(&peer.at(3, "A", "98=0|108=30|", t(0), None), t(0));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "5");
    assert_eq!(
        field(&out[0], 58).as_deref(),
        Some("MsgSeqNum too low, expecting 5 but received 3")
    );
    assert_eq!(
        disconnect_reason(&a),
        Some(DisconnectReason::SeqNumTooLow {
            expected: 5,
            received: 3
        })
    );
}

// ---------- Heartbeats and TestRequest ----------

#[test]
fn heartbeat_after_heartbtint_of_our_silence() {
    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    assert!(sent(&s.poll_timers(t(29))).is_empty());
    let a = s.poll_timers(t(30));
    assert_eq!(sent_types(&a), ["0"]);
    // Sending resets the clock.
    assert!(sent(&s.poll_timers(t(31))).is_empty());
}

#[test]
fn app_traffic_postpones_heartbeat() {
    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.send_app(&x_msg(), t(20)).unwrap();
    assert!(
        has(&a, &Action::SetTimer(t(36))),
        "next timer is the peer test request: {a:?}"
    );
    // Peer spoke at t(0); our last send at t(20): heartbeat due t(50), test request t(36).
    let a = s.poll_timers(t(36));
    assert_eq!(sent_types(&a), ["1"]);
}

#[test]
fn test_request_then_timeout_when_peer_is_silent() {
    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    // 120% of 30 s without hearing from the peer.
    let a = s.poll_timers(t(35));
    assert_eq!(sent_types(&a), ["0"], "only our heartbeat at 30 s");
    let a = s.poll_timers(t(36));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "1");
    assert!(field(&out[0], 112).is_some());
    assert!(disconnect_reason(&s.poll_timers(t(71))).is_none());
    let a = s.poll_timers(t(72));
    assert_eq!(
        disconnect_reason(&a),
        Some(DisconnectReason::HeartbeatTimeout)
    );
    assert!(has(&a, &Action::LoggedOut));
}

#[test]
fn answered_test_request_keeps_session_alive() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.poll_timers(t(36));
    let id = field(&sent(&a)[0], 112).unwrap();
    let a = s.handle_bytes(&peer.msg("0", &format!("112={id}|"), t(40)), t(40));
    assert!(disconnect_reason(&a).is_none());
    assert!(disconnect_reason(&s.poll_timers(t(72))).is_none());
    assert!(s.is_logged_on());
}

#[test]
fn test_request_is_answered_with_its_id() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.msg("1", "112=PING-7|", t(5)), t(5));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "0");
    assert_eq!(field(&out[0], 112).as_deref(), Some("PING-7"));
}

#[test]
fn test_request_without_id_is_rejected() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.msg("1", "", t(5)), t(5));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "3");
    assert_eq!(field(&out[0], 373).as_deref(), Some("1"));
    assert_eq!(field(&out[0], 371).as_deref(), Some("112"));
    assert_eq!(
        s.seq_nums().next_target,
        3,
        "rejected message still consumes its number"
    );
}

// ---------- Sequence numbers ----------

#[test]
fn gap_sends_resend_request_and_gap_fill_recovers_queued_messages() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    // Peer's 2..4 are lost; 5 arrives.
    let a = s.handle_bytes(&peer.at(5, "X", "268=1|279=2|278=e5|", t(1), None), t(1));
    assert!(delivered(&a).is_empty());
    let rr = &sent(&a)[0];
    assert_eq!(rr.msg_type(), "2");
    assert_eq!(field(rr, 7).as_deref(), Some("2"));
    assert_eq!(
        field(rr, 16).as_deref(),
        Some("4"),
        "closed interval: exactly the gap"
    );
    assert!(has(
        &a,
        &Action::Event(SessionEvent::GapDetected {
            expected: 2,
            received: 5
        })
    ));
    // 6 arrives during the resend: queued, no second ResendRequest.
    let a = s.handle_bytes(&peer.at(6, "X", "268=1|279=2|278=e6|", t(1), None), t(1));
    assert!(sent(&a).is_empty());
    // The peer gap-fills 2..3 and resends 4.
    let mut bytes = peer.at(2, "4", "36=4|123=Y|", t(2), Some(t(2)));
    bytes.extend(peer.at(4, "X", "268=1|279=2|278=e4|", t(2), Some(t(1))));
    let a = s.handle_bytes(&bytes, t(2));
    let got: Vec<_> = delivered(&a)
        .iter()
        .map(|m| (m.seq_num().unwrap(), m.poss_dup()))
        .collect();
    assert_eq!(got, [(4, true), (5, false), (6, false)]);
    assert_eq!(s.seq_nums().next_target, 7);
    // A later gap triggers a new request.
    let a = s.handle_bytes(&peer.at(9, "0", "", t(3), None), t(3));
    assert_eq!(sent_types(&a), ["2"]);
}

#[test]
fn resend_request_is_answered_with_gap_fill() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    for i in 0..3 {
        s.send_app(&x_msg(), t(1 + i)).unwrap();
    }
    assert_eq!(s.seq_nums().next_sender, 5);
    let a = s.handle_bytes(&peer.msg("2", "7=2|16=0|", t(5)), t(5));
    let out = sent(&a);
    assert_eq!(out.len(), 1);
    let gf = &out[0];
    assert_eq!(gf.msg_type(), "4");
    assert_eq!(gf.seq_num(), Some(2));
    assert!(gf.poss_dup());
    assert_eq!(field(gf, 122).as_deref(), Some("20240229-13:45:12.000"));
    assert_eq!(field(gf, 123).as_deref(), Some("Y"));
    assert_eq!(field(gf, 36).as_deref(), Some("5"));
    assert_eq!(
        s.seq_nums().next_sender,
        5,
        "a gap fill reuses numbers, it does not consume new ones"
    );
    assert_eq!(s.seq_nums().next_target, 3);
}

#[test]
fn resend_request_with_bounded_end() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    for i in 0..5 {
        s.send_app(&x_msg(), t(1 + i)).unwrap();
    }
    let a = s.handle_bytes(&peer.msg("2", "7=3|16=4|", t(7)), t(7));
    let gf = &sent(&a)[0];
    assert_eq!(gf.seq_num(), Some(3));
    assert_eq!(field(gf, 36).as_deref(), Some("5"));
}

#[test]
fn replay_mode_resends_app_messages_with_possdup() {
    let mut cfg = SessionConfig::initiator("TW", "FEED");
    cfg.resend_mode = ResendMode::Replay { capacity: 2 };
    let mut s = Session::new(cfg, MemorySeqStore::default()).unwrap();
    s.connected(t(0));
    let mut peer = Peer::new("FEED", "TW");
    s.handle_bytes(&peer.msg("A", "98=0|108=30|", t(0)), t(0));
    for i in 0..3 {
        s.send_app(&x_msg(), t(1 + i)).unwrap(); // seq 2, 3, 4; only 3 and 4 kept
    }
    s.poll_timers(t(34)); // heartbeat, seq 5
    let a = s.handle_bytes(&peer.msg("2", "7=1|16=0|", t(35)), t(35));
    let out = sent(&a);
    let summary: Vec<_> = out
        .iter()
        .map(|m| (m.msg_type().to_owned(), m.seq_num().unwrap(), field(m, 36)))
        .collect();
    assert_eq!(
        summary,
        [
            ("4".to_owned(), 1, Some("3".to_owned())),
            ("X".to_owned(), 3, None),
            ("X".to_owned(), 4, None),
            ("4".to_owned(), 5, Some("6".to_owned())),
        ]
    );
    assert!(out[1].poss_dup());
    assert_eq!(
        field(&out[1], 122).as_deref(),
        Some("20240229-13:45:09.000")
    );
    assert_eq!(field(&out[1], 52).as_deref(), Some("20240229-13:45:42.000"));
}

#[test]
fn seq_too_low_without_possdup_logs_out() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.at(1, "0", "", t(1), None), t(1));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "5");
    assert_eq!(
        field(&out[0], 58).as_deref(),
        Some("MsgSeqNum too low, expecting 2 but received 1")
    );
    assert_eq!(
        disconnect_reason(&a),
        Some(DisconnectReason::SeqNumTooLow {
            expected: 2,
            received: 1
        })
    );
    assert!(has(&a, &Action::LoggedOut));
}

#[test]
fn seq_too_low_with_possdup_is_ignored() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(
        &peer.at(1, "X", "268=1|279=2|278=a|", t(1), Some(t(0))),
        t(1),
    );
    assert!(sent(&a).is_empty());
    assert!(delivered(&a).is_empty());
    assert!(has(
        &a,
        &Action::Event(SessionEvent::DuplicateIgnored { seq_num: 1 })
    ));
    assert!(s.is_logged_on());
}

#[test]
fn possdup_without_orig_sending_time_is_rejected() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let mut bytes = String::from_utf8(peer.at(2, "X", "268=1|279=2|278=a|", t(1), None)).unwrap();
    // Add 43=Y by hand (the helper would add 122 too); re-frame through the encoder.
    bytes.clear();
    let body = RawBody {
        msg_type: "X".into(),
        body: soh("268=1|279=2|278=a|"),
    };
    let h = tickwire_fix::Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "FEED",
        target_comp_id: "TW",
        seq_num: 2,
        sending_time: t(1),
        orig_sending_time: None,
    };
    let plain = tickwire_fix::encode(&h, &body).unwrap();
    let text = String::from_utf8(plain.to_vec()).unwrap().replace("|", "");
    let inner = text.split_once("35=").unwrap().1;
    let inner = &inner[..inner.rfind("10=").unwrap()];
    let with_possdup = format!("35={}", inner.replacen("\x0152=", "\x0143=Y\x0152=", 1));
    let mut msg = format!("8=FIX.4.4\x019={}\x01{}", with_possdup.len(), with_possdup).into_bytes();
    let sum = tickwire_fix::checksum(&msg);
    msg.extend(format!("10={sum:03}\x01").bytes());
    let a = s.handle_bytes(&msg, t(1));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "3");
    assert_eq!(field(&out[0], 373).as_deref(), Some("1"));
    assert_eq!(field(&out[0], 371).as_deref(), Some("122"));
    assert_eq!(field(&out[0], 45).as_deref(), Some("2"));
    assert!(delivered(&a).is_empty());
    assert_eq!(s.seq_nums().next_target, 3);
}

#[test]
fn sequence_reset_reset_mode_ignores_msg_seq_num() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.at(999, "4", "36=20|", t(1), None), t(1));
    assert!(sent(&a).is_empty(), "no ResendRequest for a Reset");
    assert_eq!(s.seq_nums().next_target, 20);
    assert!(has(
        &a,
        &Action::Event(SessionEvent::SequenceReset {
            new_seq_no: 20,
            gap_fill: false
        })
    ));
    // Lowering is refused with a Reject, value incorrect.
    let a = s.handle_bytes(&peer.at(1, "4", "36=10|123=N|", t(2), None), t(2));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "3");
    assert_eq!(field(&out[0], 373).as_deref(), Some("5"));
    assert_eq!(s.seq_nums().next_target, 20);
}

#[test]
fn gap_fill_that_goes_backwards_is_rejected() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.at(2, "4", "36=2|123=Y|", t(1), Some(t(1))), t(1));
    assert_eq!(sent_types(&a), ["3"]);
    assert_eq!(s.seq_nums().next_target, 3);
}

#[test]
fn gap_fill_too_high_requests_resend() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.at(4, "4", "36=8|123=Y|", t(1), Some(t(1))), t(1));
    assert_eq!(sent_types(&a), ["2"]);
    assert_eq!(s.seq_nums().next_target, 2);
}

#[test]
fn resend_request_with_high_seq_is_answered_and_gap_requested() {
    let (mut s, peer) = logged_on_initiator(MemorySeqStore::default());
    s.send_app(&x_msg(), t(1)).unwrap();
    let a = s.handle_bytes(&peer.at(5, "2", "7=2|16=0|", t(2), None), t(2));
    assert_eq!(sent_types(&a), ["4", "2"]);
}

// ---------- Logout ----------

#[test]
fn peer_logout_is_answered_then_disconnects() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.msg("5", "58=bye|", t(1)), t(1));
    assert_eq!(sent_types(&a), ["5"]);
    assert!(has(&a, &Action::LoggedOut));
    assert_eq!(disconnect_reason(&a), Some(DisconnectReason::Logout));
    assert_eq!(
        s.seq_nums(),
        SeqNums {
            next_sender: 3,
            next_target: 3
        }
    );
}

#[test]
fn our_logout_waits_for_answer_or_times_out() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.logout(Some("end of day"), t(1));
    let out = sent(&a);
    assert_eq!(field(&out[0], 58).as_deref(), Some("end of day"));
    assert_eq!(s.state(), SessionState::LogoutSent);
    // Messages still flow until the answer.
    let a = s.handle_bytes(&peer.msg("X", "268=1|279=2|278=z|", t(1)), t(1));
    assert_eq!(delivered(&a).len(), 1);
    let a = s.handle_bytes(&peer.msg("5", "", t(2)), t(2));
    assert!(sent(&a).is_empty(), "no second Logout");
    assert_eq!(disconnect_reason(&a), Some(DisconnectReason::Logout));

    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    s.logout(None, t(1));
    assert!(s
        .poll_timers(t(2))
        .iter()
        .all(|a| !matches!(a, Action::Disconnect(_))));
    let a = s.poll_timers(t(3));
    assert_eq!(disconnect_reason(&a), Some(DisconnectReason::LogoutTimeout));
}

// ---------- Header validation ----------

#[test]
fn comp_id_mismatch_is_rejected_and_logged_out() {
    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    let mut other = Peer::new("OTHER", "TW");
    other.next_seq = 2;
    let a = s.handle_bytes(&other.msg("0", "", t(1)), t(1));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "3");
    assert_eq!(field(&out[0], 373).as_deref(), Some("9"));
    assert_eq!(out[1].msg_type(), "5");
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn sending_time_accuracy_is_enforced() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let a = s.handle_bytes(&peer.msg("0", "", t(0)), t(121));
    let out = sent(&a);
    assert_eq!(out[0].msg_type(), "3");
    assert_eq!(field(&out[0], 373).as_deref(), Some("10"));
    assert!(disconnect_reason(&a).is_some());
}

#[test]
fn garbled_bytes_are_skipped_and_stream_continues() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let mut bytes = b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01".to_vec(); // bad checksum
    bytes.extend(peer.msg("X", "268=1|279=2|278=ok|", t(1)));
    let a = s.handle_bytes(&bytes, t(1));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Event(SessionEvent::Garbled(_)))));
    assert_eq!(delivered(&a).len(), 1);
}

#[test]
fn byte_at_a_time_input_gives_same_result() {
    let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
    let mut bytes = peer.msg("X", "268=1|279=2|278=a|", t(1));
    bytes.extend(peer.msg("X", "268=1|279=2|278=b|", t(1)));
    let mut got = Vec::new();
    for b in &bytes {
        got.extend(delivered(&s.handle_bytes(std::slice::from_ref(b), t(1))));
    }
    assert_eq!(got.len(), 2);
    let x = MarketDataIncrementalRefresh::decode(&got[1].raw()).unwrap();
    assert_eq!(x.entries[0].entry_id, Some("b"));
}

#[test]
fn oversize_message_disconnects() {
    let mut cfg = SessionConfig::initiator("TW", "FEED");
    cfg.max_message_size = 256;
    let mut s = Session::new(cfg, MemorySeqStore::default()).unwrap();
    s.connected(t(0));
    let a = s.handle_bytes(b"8=FIX.4.4\x019=100000\x01", t(0));
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn send_app_requires_logon() {
    let mut s = acceptor();
    assert!(matches!(
        s.send_app(&x_msg(), t(0)),
        Err(Error::NotLoggedOn)
    ));
    s.connected(t(0));
    assert!(matches!(
        s.send_app(&x_msg(), t(0)),
        Err(Error::NotLoggedOn)
    ));
}

#[test]
fn typed_messages_go_through_send_app() {
    let (mut s, _peer) = logged_on_initiator(MemorySeqStore::default());
    let x = MarketDataIncrementalRefresh {
        md_req_id: Some("r1"),
        entries: vec![IncrementalEntry::new(MdUpdateAction::Delete)],
    };
    let a = s.send_app(&x, t(1)).unwrap();
    let m = &sent(&a)[0];
    assert_eq!(m.seq_num(), Some(2));
    assert_eq!(MarketDataIncrementalRefresh::decode(&m.raw()).unwrap(), x);
}

// ---------- Persistence ----------

#[test]
fn sequence_numbers_survive_file_store_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("TW-FEED.seq");
    {
        let (mut s, mut peer) = logged_on_initiator(FileSeqStore::open(&path).unwrap());
        s.send_app(&x_msg(), t(1)).unwrap();
        s.send_app(&x_msg(), t(2)).unwrap();
        s.handle_bytes(&peer.msg("X", "268=1|279=2|278=a|", t(3)), t(3));
        assert_eq!(
            s.seq_nums(),
            SeqNums {
                next_sender: 4,
                next_target: 3
            }
        );
        // Process dies without logging out.
    }
    let mut s = Session::new(
        SessionConfig::initiator("TW", "FEED"),
        FileSeqStore::open(&path).unwrap(),
    )
    .unwrap();
    assert_eq!(
        s.seq_nums(),
        SeqNums {
            next_sender: 4,
            next_target: 3
        }
    );
    let a = s.connected(t(100));
    assert_eq!(
        sent(&a)[0].seq_num(),
        Some(4),
        "logon continues the numbering"
    );
}

struct FailingStore;
impl SeqStore for FailingStore {
    fn load(&mut self) -> tickwire_fix::Result<SeqNums> {
        Ok(SeqNums::default())
    }
    fn save(&mut self, _: SeqNums) -> tickwire_fix::Result<()> {
        Err(Error::Config("disk full"))
    }
}

#[test]
fn store_failure_holds_back_sends_and_disconnects() {
    let mut s = Session::new(SessionConfig::initiator("TW", "FEED"), FailingStore).unwrap();
    let a = s.connected(t(0));
    assert!(sent(&a).is_empty());
    assert!(matches!(
        disconnect_reason(&a),
        Some(DisconnectReason::StoreFailed(_))
    ));
}

// ---------- Two real sessions talking ----------

/// Moves bytes both ways until neither side has anything to say. Returns what each delivered.
fn pump(
    a: &mut Session<MemorySeqStore>,
    b: &mut Session<MemorySeqStore>,
    mut to_b: Vec<u8>,
    mut to_a: Vec<u8>,
    now: tickwire_fix::Timestamp,
) -> (Vec<tickwire_fix::Message>, Vec<tickwire_fix::Message>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        let ra = a.handle_bytes(&std::mem::take(&mut to_a), now);
        let rb = b.handle_bytes(&std::mem::take(&mut to_b), now);
        assert!(
            disconnect_reason(&ra).is_none() && disconnect_reason(&rb).is_none(),
            "{ra:?} {rb:?}"
        );
        got_a.extend(delivered(&ra));
        got_b.extend(delivered(&rb));
        to_b = wire(&ra);
        to_a = wire(&rb);
    }
    (got_a, got_b)
}

#[test]
fn both_sides_recover_from_gaps_on_logon() {
    // Both remember numbers the other side never saw (messages lost before a crash).
    let mut ini = Session::new(
        SessionConfig::initiator("TW", "FEED"),
        MemorySeqStore::new(SeqNums {
            next_sender: 10,
            next_target: 5,
        }),
    )
    .unwrap();
    let mut acc = Session::new(
        SessionConfig::acceptor("FEED", "TW"),
        MemorySeqStore::new(SeqNums {
            next_sender: 8,
            next_target: 3,
        }),
    )
    .unwrap();
    acc.connected(t(0));
    let logon = wire(&ini.connected(t(0)));
    pump(&mut ini, &mut acc, logon, Vec::new(), t(0));
    assert!(ini.is_logged_on() && acc.is_logged_on());
    assert_eq!(ini.seq_nums().next_sender, acc.seq_nums().next_target);
    assert_eq!(acc.seq_nums().next_sender, ini.seq_nums().next_target);
    // And application data flows both ways afterwards.
    let to_ini = wire(&acc.send_app(&x_msg(), t(1)).unwrap());
    let to_acc = wire(&ini.send_app(&x_msg(), t(1)).unwrap());
    let (got_ini, got_acc) = pump(&mut ini, &mut acc, to_acc, to_ini, t(1));
    assert_eq!(got_ini.len(), 1);
    assert_eq!(got_acc.len(), 1);
}

#[test]
fn lost_messages_mid_session_are_gap_filled() {
    let mut ini = Session::new(
        SessionConfig::initiator("TW", "FEED"),
        MemorySeqStore::default(),
    )
    .unwrap();
    let mut acc = Session::new(
        SessionConfig::acceptor("FEED", "TW"),
        MemorySeqStore::default(),
    )
    .unwrap();
    acc.connected(t(0));
    let logon = wire(&ini.connected(t(0)));
    pump(&mut ini, &mut acc, logon, Vec::new(), t(0));
    // Three X from the acceptor vanish (as if written to a dead socket before a reconnect).
    for _ in 0..3 {
        acc.send_app(&x_msg(), t(1)).unwrap();
    }
    let next = wire(&acc.send_app(&x_msg(), t(2)).unwrap());
    let (got_ini, _) = pump(&mut ini, &mut acc, Vec::new(), next, t(2));
    // Market data is not resent: the gap is filled, the queued message is delivered.
    assert_eq!(got_ini.len(), 1);
    assert_eq!(got_ini[0].seq_num(), Some(5));
    assert_eq!(ini.seq_nums().next_target, acc.seq_nums().next_sender);
}

// ---------- Robustness ----------

proptest::proptest! {
    #[test]
    fn session_never_panics_on_arbitrary_input(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8)) {
        let (mut s, mut peer) = logged_on_initiator(MemorySeqStore::default());
        for (i, c) in chunks.iter().enumerate() {
            let mut bytes = c.clone();
            if i % 2 == 0 {
                bytes.extend(peer.msg("X", "268=1|279=2|278=a|", t(1)));
            }
            s.handle_bytes(&bytes, t(1 + i as u64));
            s.poll_timers(t(1 + i as u64 * 20));
        }
    }
}
