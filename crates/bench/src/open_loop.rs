//! The fixed-rate, open-loop publisher of the fan-out shaped scenarios (fanout, slow) and its
//! schedule, which the book scenario's publisher and every subscriber's staleness also read:
//! message `k` is due at a fixed time, carries that time as its stamp, and is sent as close
//! to it as the generator can (docs/benchmarks.md, "Coordinated omission" and "The
//! generator's own lateness").

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use crate::{
    batch::Publisher,
    error::Result,
    msg::{now_micros, quote},
    scenario::{Phase, PubOutcome},
    stats::histogram,
    BenchError, RunArgs,
};

/// The open-loop schedule of a fixed-rate publisher. Message `k` (0-based, round-robin over
/// the symbols, sequence number `first + k`) is due at `start_us + k / rate` and carries that
/// time as its stamp, whenever it is actually sent: a publisher that fell behind (waiting
/// for a reply, say) does not hide the wait from the latency it reports (coordinated
/// omission).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) start_us: u64,
    /// The sequence number of message 0, a multiple of `nsym` (see [`first_seq`]).
    pub(crate) first: u64,
    /// Messages per second over all symbols; never 0.
    pub(crate) rate: u64,
    pub(crate) nsym: u64,
    /// Messages the run will send at most: none is due at or beyond it.
    pub(crate) limit: u64,
}

impl Schedule {
    /// A schedule starting now: `rate` messages per second (at least 1) over `nsym` symbols,
    /// at most `max_messages` and none after `total`.
    pub(crate) fn starting_now(
        first: u64,
        rate: u64,
        nsym: u64,
        max_messages: u64,
        total: Duration,
    ) -> Schedule {
        let rate = rate.max(1);
        Schedule {
            start_us: now_micros(),
            first,
            rate,
            nsym,
            limit: max_messages.min((rate as f64 * total.as_secs_f64()).ceil() as u64),
        }
    }

    /// How many messages are due by `now_us`: every `k` with `due_us(k) <= now_us`, at most
    /// `limit`.
    pub(crate) fn due_by(&self, now_us: u64) -> u64 {
        let Some(since) = now_us.checked_sub(self.start_us) else {
            return 0;
        };
        // `k` is due when floor(k * 1e6 / rate) <= since, i.e. k < (since + 1) * rate / 1e6.
        let n = (u128::from(since) + 1) * u128::from(self.rate.max(1));
        u64::try_from(n.div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .min(self.limit)
    }

    /// When message `k` is due, in Unix microseconds.
    pub(crate) fn due_us(&self, k: u64) -> u64 {
        let offset = u128::from(k) * 1_000_000 / u128::from(self.rate.max(1));
        self.start_us
            .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// How stale a subscriber is on symbol `sym` at `now_us` when the newest value it holds
    /// has sequence number `held` (0, or one from an earlier run: none of this run's): the
    /// time since the first value newer than the one it holds fell due, 0 when none has.
    /// This is what a trader feels, and it counts the values a latest-wins server conflated
    /// away, which never reach the delivered-message latency histogram.
    pub(crate) fn staleness_us(&self, sym: u64, held: u64, now_us: u64) -> u64 {
        let next = if held >= self.first {
            held - self.first + self.nsym
        } else {
            sym
        };
        if next >= self.limit {
            return 0;
        }
        now_us.saturating_sub(self.due_us(next))
    }
}

/// The first sequence number of a run: a whole symbol-round (so `s % nsym` is the symbol)
/// above the clock in microseconds. Never 0 ("nothing seen"), and always above every sequence
/// of an earlier run on the same server, whose newest values arrive as subscribe snapshots and
/// would otherwise look newer than this run's last values in the convergence check.
pub(crate) fn first_seq(nsym: u64) -> u64 {
    (now_micros() / nsym + 1) * nsym
}

/// A fixed-rate publisher wakes at most this often and sends what fell due since its last wake
/// as one write: its own lateness stays near 0.1 ms (tokio's timer ticks in whole
/// milliseconds, which made the generator up to 2-3 ms late and counted that as every
/// target's latency), and at 25,000 messages/s a write carries a few messages instead of one.
pub(crate) const PACE_US: u64 = 100;

/// Publishes at `rate` (round-robin over the symbols) until the time or count bound; returns
/// messages sent while measuring and the last sequence number per symbol.
///
/// At a fixed rate each message is stamped with its due time and sent as soon as it is due, or,
/// while the publisher has as many answers outstanding as it may
/// ([`Publisher::unanswered_max`]), as soon as the oldest is answered (answers are read while
/// waiting for the next message). NATS and MQTT publishes have no answer to wait for. At full
/// speed (`rate` 0) it sends a batch and waits for its answer.
pub(crate) async fn publish_loop(
    a: &RunArgs,
    phase: &Phase,
    total: Duration,
) -> Result<PubOutcome> {
    let mut p = Publisher::connect_over(a.target, a.addr, a.encoding, a.publish_wire).await?;
    let unanswered_max = p.unanswered_max(a.window);
    let start = Instant::now();
    let mut seq = 0u64;
    let mut measured = 0u64;
    let mut payload = Vec::with_capacity(a.size + 64);
    let mut last = vec![0u64; a.symbols];
    let nsym = a.symbols as u64;
    let first = first_seq(nsym);
    let sched =
        (a.rate > 0).then(|| Schedule::starting_now(first, a.rate, nsym, a.max_messages, total));
    if let Some(s) = sched {
        let _ = phase.schedule.set(s);
    }
    let mut lag = histogram();
    let mut woke_us = 0u64;
    while start.elapsed() < total && seq < a.max_messages {
        let now = now_micros();
        let due = match sched {
            None => a.batch as u64,
            Some(sc) => sc.due_by(now).saturating_sub(seq),
        };
        if due > 0 && p.unanswered() >= unanswered_max {
            // What falls due meanwhile goes out in the next request.
            p.answer().await?;
            continue;
        }
        if due == 0 {
            if let Some(sc) = sched {
                let at = sc.due_us(seq).max(woke_us + PACE_US);
                wait_until(&mut p, at).await?;
                woke_us = at;
            }
            continue;
        }
        let n = due.min(a.batch as u64).min(a.max_messages - seq);
        for _ in 0..n {
            let s = first + seq;
            let sym = (s % nsym) as usize;
            // Open loop: stamped when due, not when the previous flush let us send it.
            let t = sched.map_or(now, |sc| sc.due_us(seq));
            payload.clear();
            quote(&mut payload, t, s, sym, a.size);
            p.add(sym, &payload);
            last[sym] = s;
            seq += 1;
        }
        let sent_us = now_micros();
        if sched.is_some() {
            p.send().await?;
        } else {
            p.flush().await?;
        }
        if phase.measuring.load(Ordering::Relaxed) {
            measured += n;
            if let Some(sc) = sched {
                for k in seq - n..seq {
                    let _ = lag.record(sent_us.saturating_sub(sc.due_us(k)).max(1));
                }
            }
        }
    }
    // Every request answered: a refusal fails the run here rather than going unseen.
    let drained = tokio::time::timeout(crate::publish::DRAIN_ACKS, async {
        while p.unanswered() > 0 {
            p.answer().await?;
        }
        Ok::<(), BenchError>(())
    });
    drained.await.map_err(|_| {
        BenchError::Timeout(format!(
            "{} publishes unanswered {} s after publishing stopped",
            p.unanswered(),
            crate::publish::DRAIN_ACKS.as_secs()
        ))
    })??;
    Ok(PubOutcome {
        published: measured,
        last,
        acks: None,
        lag: sched.map(|_| lag),
    })
}

/// Waits until `at_us` (Unix microseconds), reading the publisher's answers meanwhile. The last
/// millisecond is slept on the thread itself: tokio's timer would round it up to its next
/// tick, and the publisher has its runtime to itself (answers wait in the socket meanwhile).
/// At full speed every wait is shorter than that millisecond, so a WebSocket publisher's
/// acknowledgements are read only once its window is full (the server holds at most
/// `--window` of them; reading them at every wake measured no better, 2 pairs at R=25,000).
pub(crate) async fn wait_until(p: &mut Publisher, at_us: u64) -> Result<()> {
    loop {
        let now = now_micros();
        if now >= at_us {
            return Ok(());
        }
        let left = at_us - now;
        if left <= 1_000 {
            std::thread::sleep(Duration::from_micros(left));
            return Ok(());
        }
        let coarse = tokio::time::sleep(Duration::from_micros(left - 1_000));
        if p.unanswered() == 0 {
            coarse.await;
            continue;
        }
        tokio::select! {
            r = p.answer() => r?,
            () = coarse => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn sched() -> Schedule {
        // 1,000 messages/s over 10 symbols: each symbol gets a value every 10 ms.
        Schedule {
            start_us: 1_000_000,
            first: 5_000,
            rate: 1_000,
            nsym: 10,
            limit: 100,
        }
    }

    #[test]
    fn messages_are_stamped_when_due_not_when_sent() {
        let s = sched();
        assert_eq!(s.due_us(0), 1_000_000);
        assert_eq!(s.due_us(1), 1_001_000);
        assert_eq!(s.due_us(99), 1_099_000);
        // A rate that does not divide a second: no drift over a long run.
        let odd = Schedule { rate: 3, ..s };
        assert_eq!(odd.due_us(3), 2_000_000);
        assert_eq!(odd.due_us(1), 1_333_333);
    }

    /// A scripted Tickwire publish endpoint: answers each request `delay` after it is read
    /// (`status` 200 or not), counts requests and items, and notes whether a request arrived
    /// while the one before was still unanswered.
    async fn http_peer(
        delay: Duration,
        status: u16,
    ) -> (SocketAddr, tokio::task::JoinHandle<(usize, usize, bool)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (mut requests, mut items, mut overlapped) = (0, 0, false);
            let mut buf = Vec::new();
            loop {
                let end = loop {
                    if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = [0u8; 65536];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return (requests, items, overlapped),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .split("content-length:")
                    .nth(1)
                    .and_then(|v| v.lines().next())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                while buf.len() < end + len {
                    let mut chunk = [0u8; 65536];
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "closed mid-request");
                    buf.extend_from_slice(&chunk[..n]);
                }
                requests += 1;
                items += memchr::memmem::find_iter(&buf[end..end + len], br#"{"channel":"#).count();
                buf.drain(..end + len);
                tokio::time::sleep(delay).await;
                let mut more = [0u8; 1];
                overlapped |= !buf.is_empty() || s.try_read(&mut more).is_ok_and(|n| n > 0);
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return (requests, items, overlapped);
                }
            }
        });
        (addr, task)
    }

    /// At a fixed rate the Tickwire publisher keeps one request unanswered: what falls due
    /// while it waits goes out in the next request, nothing is dropped, and every answer is
    /// read before the loop reports.
    #[tokio::test]
    async fn a_fixed_rate_http_publisher_sends_everything_due_one_request_at_a_time() {
        let (addr, peer) = http_peer(Duration::from_millis(3), 200).await;
        let a = crate::test_args(&format!(
            "--scenario fanout --target tickwire-ws --addr {addr} --symbols 10 --size 100 --rate 2000"
        ));
        let phase = Phase::default();
        phase.measuring.store(true, Ordering::Relaxed);
        let out = publish_loop(&a, &phase, Duration::from_millis(300))
            .await
            .unwrap();
        let lag = out.lag.expect("a fixed-rate run measures its lag");
        assert_eq!(lag.len(), out.published);
        drop(out.last);
        let (requests, items, overlapped) = peer.await.unwrap();
        assert_eq!(
            items as u64, out.published,
            "every message sent reached the server"
        );
        assert!(out.published >= 300, "{} of ~600 due", out.published);
        assert!(
            !overlapped,
            "a request was sent before the previous one was answered"
        );
        assert!(
            requests < items,
            "messages due during a 3 ms wait go out together ({requests} requests, {items} items)"
        );
    }

    /// A refused publish fails the run, even when it is the last request's answer.
    #[tokio::test]
    async fn a_refused_publish_fails_a_fixed_rate_run() {
        let (addr, _peer) = http_peer(Duration::ZERO, 503).await;
        let a = crate::test_args(&format!(
            "--scenario fanout --target tickwire-ws --addr {addr} --symbols 10 --size 100 --rate 1000"
        ));
        let err = publish_loop(&a, &Phase::default(), Duration::from_millis(50))
            .await
            .err();
        assert!(matches!(err, Some(BenchError::Protocol { .. })), "{err:?}");
    }

    #[test]
    fn a_message_is_due_by_its_due_time_and_not_a_microsecond_before() {
        for rate in [3, 1_000, 7_919, 25_000] {
            let s = Schedule { rate, ..sched() };
            assert_eq!(s.due_by(s.start_us - 1), 0);
            for k in 0..50 {
                assert_eq!(s.due_by(s.due_us(k)), k + 1, "rate {rate}, message {k}");
                if k > 0 && s.due_us(k) > s.due_us(k - 1) {
                    assert_eq!(s.due_by(s.due_us(k) - 1), k, "rate {rate}, message {k}");
                }
            }
        }
        // Never beyond the run's last message.
        assert_eq!(sched().due_by(u64::MAX / 2), sched().limit);
    }

    #[test]
    fn staleness_counts_from_the_first_value_the_subscriber_has_not_got() {
        let s = sched();
        // Nothing of this run held (0 or an earlier run's sequence): symbol 3's first value
        // is message 3, due at 1.003 s.
        assert_eq!(s.staleness_us(3, 0, 1_002_000), 0, "not due yet");
        assert_eq!(s.staleness_us(3, 0, 1_010_000), 7_000);
        assert_eq!(s.staleness_us(3, 4_999, 1_010_000), 7_000);
        // Holding message 3 (sequence 5,003): the next value of symbol 3 is message 13, due
        // at 1.013 s; before that the subscriber is up to date.
        assert_eq!(s.staleness_us(3, 5_003, 1_012_999), 0);
        assert_eq!(s.staleness_us(3, 5_003, 1_020_000), 7_000);
        // A value conflated away (message 13 never delivered, 23 due at 1.023 s) does not
        // reset the clock: staleness keeps growing from message 13's due time.
        assert_eq!(s.staleness_us(3, 5_003, 1_030_000), 17_000);
        // After the last message of the run nothing newer is due.
        assert_eq!(s.staleness_us(3, 5_093, 9_000_000), 0);
    }
}
