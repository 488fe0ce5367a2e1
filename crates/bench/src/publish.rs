//! The ws-publish publisher: ONE connection publishes quotes one command each — a WebSocket
//! `publish` command (docs/protocol.md) or an MQTT 3.1.1 PUBLISH — and keeps up to `--window`
//! of them unacknowledged: acks are pipelined, never awaited one by one. Subscribers and the
//! measured window are the fan-out scenario's (scenario.rs).
//!
//! - WebSocket: `{"id":N,"op":"publish","channel":"quotes.S0042","data":{…}}` per text frame;
//!   the answer `{"id":N,"ok":true,…}` (or `"ok":false`) is matched by id.
//! - MQTT QoS 1: PUBLISH with a packet id, matched by its PUBACK.
//! - gRPC (grpc.rs): one `PublishStream` call, one `PublishRequest` of one item per message,
//!   answered in the order sent with its id echoed.
//! - JetStream (jetstream.rs, the ingest scenario's publisher): one PUB per message with its own
//!   reply inbox, the stream's acks coming back in publish order.
//! - MQTT QoS 0 has no acknowledgement. What the server accepted is read through barriers: a
//!   broker handles one connection's packets in order, so the PINGRESP to a PINGREQ sent after
//!   message N means messages 1..N were handled (Tickwire: appended to its log, its MQTT edge
//!   stores the PUBLISH packets before a PINGREQ first). One PINGREQ goes out as the window
//!   opens, one as it closes: accepted/s = messages between them / time between the answers.

use std::{
    collections::VecDeque,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    error::Result,
    msg::{digits, now_micros, publish_command, quote},
    open_loop::first_seq,
    proto::{mqtt_publish, parse_ws, ws_frame, Conn},
    scenario::{Phase, PubOutcome},
    stats::{histogram, thread_cpu_s},
    BenchError, RunArgs, Target,
};

/// What the publisher saw of its acknowledgements.
pub struct AckStats {
    /// Commands written while measuring.
    pub sent: u64,
    /// Acknowledged while measuring (WebSocket `"ok":true`, PUBACK); MQTT QoS 0: accepted
    /// between the two barriers.
    pub acked: u64,
    /// The seconds `acked` was counted over when that is not the measured window (QoS 0: the
    /// time between the barriers' answers).
    pub acked_over_s: Option<f64>,
    /// Publish-to-ack latency of the acks received while measuring.
    pub hist: Histogram<u64>,
    /// Refused commands (`"ok":false`).
    pub errors: u64,
    /// CPU seconds the publisher's thread used while measuring.
    pub cpu_s: Option<f64>,
}

impl AckStats {
    /// Nothing counted yet.
    pub(crate) fn new() -> AckStats {
        AckStats {
            sent: 0,
            acked: 0,
            acked_over_s: None,
            hist: histogram(),
            errors: 0,
            cpu_s: None,
        }
    }
}

/// The publishing thread's CPU over the measured window (`AckStats::cpu_s`): started when the
/// phase starts measuring, taken when it stops or the publisher ends first.
#[derive(Default)]
pub(crate) struct MeasuredCpu {
    on: bool,
    start: Option<f64>,
}

impl MeasuredCpu {
    /// Called every turn with the phase's state; true when the window opened or closed.
    pub(crate) fn turn(&mut self, measuring: bool, cpu_s: &mut Option<f64>) -> bool {
        if measuring == self.on {
            return false;
        }
        if measuring {
            self.start = thread_cpu_s();
        } else {
            self.take(cpu_s);
        }
        self.on = measuring;
        true
    }

    /// Called when the publisher ends, in case the window was still open.
    pub(crate) fn end(&self, cpu_s: &mut Option<f64>) {
        if self.on {
            self.take(cpu_s);
        }
    }

    fn take(&self, cpu_s: &mut Option<f64>) {
        *cpu_s = thread_cpu_s().zip(self.start).map(|(b, a)| b - a);
    }
}

/// Messages due at `elapsed` into a run at `rate` a second, of which `seq` were sent (open
/// loop: what fell due while the publisher waited is sent at once); `u64::MAX` at rate 0 (as
/// fast as the window allows).
pub(crate) fn due(rate: u64, elapsed: Duration, seq: u64) -> u64 {
    if rate == 0 {
        return u64::MAX;
    }
    ((rate as f64 * elapsed.as_secs_f64()) as u64).saturating_sub(seq)
}

/// The time to stamp message `seq` (0-based) of a run that started at `start_us` (Unix µs)
/// with: at a fixed `rate`, when it fell due, which is when [`due`] first counts it (open
/// loop: a message sent late, behind a full window or a busy publisher, carries that lateness
/// into every latency measured from its stamp, as the fan-out publishers' messages do);
/// now at rate 0, where no message is due at any particular time.
pub(crate) fn stamp(rate: u64, start_us: u64, seq: u64) -> u64 {
    if rate == 0 {
        return now_micros();
    }
    // Rounded up: the first whole microsecond at which it is due.
    let offset = ((u128::from(seq) + 1) * 1_000_000).div_ceil(u128::from(rate));
    start_us.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// Wakes a publisher's loop to pace a fixed rate (about 10 messages per tick at 20,000/s) and
/// to see its window open and close when no answer comes.
pub(crate) fn pacer(rate: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(if rate > 0 {
        Duration::from_micros(500)
    } else {
        Duration::from_millis(5)
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Ws,
    MqttQos0,
    MqttQos1,
}

/// Send times by command id (WebSocket: id mod SLOTS; MQTT: the packet id, 1..=65535).
const SLOTS: usize = 1 << 16;
/// Bytes queued for the socket before the publisher stops building commands.
const OUT_HIGH: usize = 64 * 1024;
/// How long acknowledgements (or the last QoS 0 barrier) may take after publishing stops.
pub(crate) const DRAIN_ACKS: Duration = Duration::from_secs(30);

enum Event {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Tick,
}

/// The ws-publish publisher of `--target`: every one reports the same [`AckStats`], counted
/// the same way (sent and acked while the phase is measuring, errors over the whole run), so
/// the rows of the table compare like with like.
pub(crate) async fn publisher(a: &RunArgs, phase: &Phase, total: Duration) -> Result<PubOutcome> {
    match a.target {
        Target::TickwireGrpc => match a.grpc_client {
            crate::GrpcClient::Tonic => crate::grpc::stream_publisher(a, phase, total).await,
            crate::GrpcClient::H2 => crate::grpc::h2c::stream_publisher(a, phase, total).await,
        },
        Target::JetStream => crate::jetstream::js_ws_publisher(a, phase, total).await,
        _ => command_publisher(a, phase, total).await,
    }
}

/// Publishes at `--rate` (0: as fast as the window allows) until the time or count bound, then
/// waits for the outstanding acknowledgements. Runs on the publisher's own thread.
async fn command_publisher(a: &RunArgs, phase: &Phase, total: Duration) -> Result<PubOutcome> {
    let wire = match (a.target, a.qos) {
        (Target::TickwireWs, _) => Wire::Ws,
        (Target::Mqtt, 0) => Wire::MqttQos0,
        (Target::Mqtt, _) => Wire::MqttQos1,
        _ => {
            return Err(BenchError::Usage(
                "WebSocket and MQTT commands publish over tickwire-ws or mqtt".into(),
            ))
        }
    };
    let name = a.target.name();
    let closed = || {
        let hint = if wire == Wire::MqttQos1 {
            format!(
                " (with {} PUBLISH packets in flight: a broker closes a connection that exceeds \
                 its Receive Maximum, 64 for Tickwire's MQTT edge by default; lower --window)",
                a.window
            )
        } else {
            String::new()
        };
        BenchError::proto(name, format!("the server closed the connection{hint}"))
    };
    let (mut stream, mut rbuf) = Conn::connect(a.target, a.addr, None).await?.into_parts();
    let (mut rd, mut wr) = stream.split();
    let window = if wire == Wire::MqttQos0 {
        usize::MAX
    } else {
        a.window.clamp(1, SLOTS - 1)
    };
    let per_write = a.batch.max(1) as u64;
    let mut sent_at = vec![0u64; SLOTS];
    let mut outstanding = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(2 * OUT_HIGH);
    let mut pos = 0usize;
    let mut cmd = Vec::with_capacity(a.size + 128);
    let mut payload = Vec::with_capacity(a.size + 64);
    let nsym = a.symbols.max(1) as u64;
    let first = first_seq(nsym);
    let mut last = vec![0u64; nsym as usize];
    let mut seq = 0u64;
    let mut next_id = 0u64;
    let mut st = AckStats::new();
    // QoS 0: messages written before each PINGREQ not answered yet, and the answered ones.
    let mut barriers: VecDeque<u64> = VecDeque::new();
    let mut answered: Vec<(u64, Instant)> = Vec::new();
    let mut cpu = MeasuredCpu::default();
    let mut first_error: Option<String> = None;
    let f_id = Finder::new(br#""id":"#);
    let f_ok = Finder::new(br#""ok":true"#);
    let mut tick = pacer(a.rate);
    let start = Instant::now();
    let start_us = now_micros();
    // Fixed rate: how late each message went out after its stamp (the generator's own share
    // of every latency measured from the stamp), taken as it is queued for the write that
    // follows in the same turn.
    let mut lag = histogram();
    let mut drain_until: Option<Instant> = None;
    loop {
        let elapsed = start.elapsed();
        let publishing = elapsed < total && seq < a.max_messages;
        let measuring = phase.measuring.load(Ordering::Relaxed);
        if cpu.turn(measuring, &mut st.cpu_s) && wire == Wire::MqttQos0 {
            out.extend_from_slice(&[0xc0, 0x00]);
            barriers.push_back(seq);
        }
        if !publishing {
            let until = match drain_until {
                Some(u) => u,
                None => {
                    if wire == Wire::MqttQos0 {
                        // Everything sent has been handled once this is answered.
                        out.extend_from_slice(&[0xc0, 0x00]);
                        barriers.push_back(seq);
                    }
                    *drain_until.insert(Instant::now() + DRAIN_ACKS)
                }
            };
            if pos == out.len() && outstanding == 0 && barriers.is_empty() {
                break;
            }
            if Instant::now() > until {
                return Err(BenchError::Timeout(format!(
                    "{name}: {outstanding} publishes unacknowledged {}s after publishing stopped",
                    DRAIN_ACKS.as_secs()
                )));
            }
        }
        // The window is topped up as each ack frees a slot, as a pipelining client would do.
        // Not in groups: a peer that leaves Nagle on (mosquitto's default) holds its next small
        // acks until the TCP ACK for the first one, which the command sent right away carries;
        // waiting for a group of acks instead left it waiting for the delayed ACK (40 ms),
        // 1,471 acks/s instead of 236,000.
        if publishing && out.len() - pos < OUT_HIGH {
            if pos > 0 {
                out.drain(..pos);
                pos = 0;
            }
            let mut n = due(a.rate, elapsed, seq)
                .min(per_write)
                .min(a.max_messages - seq);
            while n > 0 && outstanding < window {
                let slot = match wire {
                    Wire::Ws => (next_id as usize) & (SLOTS - 1),
                    _ => (next_id as usize) % (SLOTS - 1) + 1,
                };
                if wire != Wire::MqttQos0 && sent_at[slot] != 0 {
                    break; // the command 65,535 ids ago is still unanswered
                }
                let s = first + seq;
                let sym = (s % nsym) as usize;
                let t = stamp(a.rate, start_us, seq);
                match wire {
                    Wire::Ws => {
                        publish_command(&mut cmd, next_id, b"quotes.", sym, |c| {
                            quote(c, t, s, sym, a.size)
                        });
                        ws_frame(&mut out, &cmd);
                    }
                    Wire::MqttQos0 | Wire::MqttQos1 => {
                        payload.clear();
                        quote(&mut payload, t, s, sym, a.size);
                        let id = (wire == Wire::MqttQos1).then_some(slot as u16);
                        mqtt_publish(&mut out, sym, id, &payload);
                    }
                }
                if wire != Wire::MqttQos0 {
                    sent_at[slot] = t.max(1);
                    outstanding += 1;
                }
                next_id += 1;
                last[sym] = s;
                seq += 1;
                n -= 1;
                if measuring {
                    st.sent += 1;
                    if a.rate > 0 {
                        let _ = lag.record(now_micros().saturating_sub(t).max(1));
                    }
                }
            }
        }
        let has_out = pos < out.len();
        rbuf.reserve(64 * 1024);
        let ev = tokio::select! {
            r = rd.read_buf(&mut rbuf) => Event::Read(r),
            w = wr.write(&out[pos..]), if has_out => Event::Wrote(w),
            _ = tick.tick() => Event::Tick,
        };
        match ev {
            Event::Tick => {}
            Event::Wrote(w) => {
                let n = w.map_err(BenchError::io(name))?;
                if n == 0 {
                    return Err(closed());
                }
                pos += n;
                if pos == out.len() {
                    out.clear();
                    pos = 0;
                }
            }
            Event::Read(r) => {
                if r.map_err(BenchError::io(name))? == 0 {
                    return Err(closed());
                }
                // One clock read per socket read, as the subscribers do.
                let now = now_micros();
                let mut fatal: Option<String> = None;
                // Frees the command's slot and counts it; false if no command has that id.
                let mut ack = |slot: usize, ok: bool, m: &[u8]| -> bool {
                    let t = std::mem::take(&mut sent_at[slot]);
                    if t == 0 {
                        return false;
                    }
                    outstanding -= 1;
                    if !ok {
                        st.errors += 1;
                        if first_error.is_none() {
                            first_error = Some(String::from_utf8_lossy(m).into_owned());
                        }
                    } else if measuring {
                        st.acked += 1;
                        let _ = st.hist.record(now.saturating_sub(t).max(1));
                    }
                    true
                };
                match wire {
                    Wire::Ws => {
                        let open = parse_ws(&mut rbuf, &mut |m: &[u8]| {
                            if m.starts_with(br#"{"ch":"#) {
                                return; // a push: this connection subscribes to nothing
                            }
                            let known = f_id
                                .find(m)
                                .and_then(|at| digits(&m[at + 5..]))
                                .is_some_and(|id| {
                                    ack(id as usize & (SLOTS - 1), f_ok.find(m).is_some(), m)
                                });
                            if !known {
                                fatal = Some(unmatched(m));
                            }
                        });
                        if !open {
                            return Err(closed());
                        }
                    }
                    Wire::MqttQos0 | Wire::MqttQos1 => {
                        split_mqtt(&mut rbuf, |kind, _, body| match kind {
                            // PUBACK
                            4 if body.len() >= 2 => {
                                let id = u16::from_be_bytes([body[0], body[1]]);
                                if !ack(usize::from(id), true, body) {
                                    fatal =
                                        Some(format!("PUBACK for packet id {id}, not in flight"));
                                }
                            }
                            // PINGRESP
                            13 => {
                                if let Some(n) = barriers.pop_front() {
                                    answered.push((n, Instant::now()));
                                }
                            }
                            // DISCONNECT (MQTT 5 only; a 3.1.1 broker just closes)
                            14 => fatal = Some("the server sent DISCONNECT".into()),
                            _ => {}
                        });
                    }
                }
                if let Some(e) = fatal {
                    return Err(BenchError::proto(name, e));
                }
            }
        }
    }
    cpu.end(&mut st.cpu_s);
    if let Some(e) = first_error {
        eprintln!(
            "tickwire bench: {} of the publishes were refused; the first answer: {e}",
            st.errors
        );
    }
    if wire == Wire::MqttQos0 {
        // The barriers sent as the window opened and as it closed (or as publishing stopped).
        if let [(n0, t0), (n1, t1), ..] = answered[..] {
            st.acked = n1 - n0;
            st.acked_over_s = Some((t1 - t0).as_secs_f64());
        }
    }
    Ok(PubOutcome {
        published: st.sent,
        last,
        acks: Some(st),
        lag: (a.rate > 0).then_some(lag),
    })
}

/// An answer that names no command in flight (`"id":null`, no id, or an id already answered):
/// the count of commands in flight can no longer be trusted, so the run stops with it.
fn unmatched(m: &[u8]) -> String {
    format!(
        "an answer to no command in flight: {}",
        String::from_utf8_lossy(&m[..m.len().min(300)])
    )
}

/// Hands the packet type, the flags (low nibble of the first byte) and the body of every
/// complete MQTT packet in `buf` to `f`.
pub(crate) fn split_mqtt(buf: &mut BytesMut, mut f: impl FnMut(u8, u8, &[u8])) {
    loop {
        if buf.len() < 2 {
            return;
        }
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 1;
        loop {
            if i >= buf.len() || i > 4 {
                return;
            }
            let b = buf[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if buf.len() < i + len {
            return;
        }
        f(buf[0] >> 4, buf[0] & 0x0f, &buf[i..i + len]);
        buf.advance(i + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_packets_split_once_each_however_the_bytes_arrive() {
        // A PUBACK, a PINGRESP and a PUBLISH whose 200-byte body needs a two-byte length.
        let mut wire = vec![0x40, 0x02, 0x00, 0x07, 0xd0, 0x00];
        let body: Vec<u8> = (0..200u8).collect();
        wire.extend_from_slice(&[0x32, 0xc8, 0x01]);
        wire.extend_from_slice(&body);
        let want: Vec<(u8, u8, Vec<u8>)> = vec![
            (4, 0, vec![0x00, 0x07]),
            (13, 0, vec![]),
            (3, 2, body.clone()),
        ];
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                split_mqtt(&mut buf, |t, f, b| got.push((t, f, b.to_vec())));
            }
            assert_eq!(got, want, "arriving {step} bytes at a time");
            assert!(buf.is_empty(), "nothing left over");
        }
    }

    #[test]
    fn a_fixed_rate_message_is_stamped_when_due_counts_it() {
        // 1,000/s from t = 1 s: message 0 falls due at 1.001 s, message 999 at 2 s.
        assert_eq!(stamp(1000, 1_000_000, 0), 1_001_000);
        assert_eq!(stamp(1000, 1_000_000, 999), 2_000_000);
        // `due` counts message k from its stamp on, and not a microsecond before.
        for rate in [7, 1000, 25_000, 333_333] {
            for k in [0u64, 1, 2, 99, 12_345] {
                let at = stamp(rate, 0, k);
                assert!(
                    due(rate, Duration::from_micros(at), k) >= 1,
                    "{rate}/s, #{k}"
                );
                if at > 0 {
                    assert_eq!(
                        due(rate, Duration::from_micros(at - 1), k),
                        0,
                        "{rate}/s, #{k} counted early"
                    );
                }
            }
        }
        // As fast as the window allows: nothing is due at a set time, so it is now.
        let before = now_micros();
        let t = stamp(0, 0, 5);
        assert!(t >= before && t <= now_micros());
    }
}
