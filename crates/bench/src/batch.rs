//! The publisher of the ingest, fan-out and book scenarios: one connection sending quotes in
//! batches, as HTTP/1.1 `POST /api/publish` requests for Tickwire (JSON or binary bodies) or,
//! with `--publish-wire ws`, WebSocket `publish` commands, PUB lines for NATS and PUBLISH QoS 0
//! packets for MQTT. The wire pieces are in proto.rs.

use std::{collections::VecDeque, net::SocketAddr};

use crate::{
    error::Result,
    msg::publish_command,
    proto::{
        after_read, authorization, http_response, mqtt_publish, ws_frame, Conn,
        PUBLISHER_CREDENTIAL,
    },
    BenchError, PublishWire, Target,
};

/// A publishing connection: HTTP/1.1 batches for Tickwire, PUB for NATS, PUBLISH QoS 0 for MQTT.
pub struct Publisher {
    conn: Conn,
    target: Target,
    addr: SocketAddr,
    out: Vec<u8>,
    body: Vec<u8>,
    count: usize,
    binary: bool,
    /// The channel name being built for the next binary item (reused, no per-message String).
    name: Vec<u8>,
    /// Tickwire: the namespace each symbol's channel is in (`quotes.`; the book scenario
    /// publishes to `depth.`).
    prefix: &'static [u8],
    /// Tickwire over HTTP: the item count of each request sent and not yet answered, oldest
    /// first.
    unanswered: VecDeque<usize>,
    /// Tickwire over a WebSocket (`--publish-wire ws`): publish commands instead of requests.
    ws: bool,
    /// WebSocket: the next command's id, and commands sent and not yet acknowledged.
    next_id: u64,
    unacked: usize,
    /// WebSocket: one command being built.
    cmd: Vec<u8>,
}

impl Publisher {
    pub async fn connect(
        target: Target,
        addr: SocketAddr,
        encoding: crate::Encoding,
    ) -> Result<Publisher> {
        Publisher::connect_over(target, addr, encoding, PublishWire::Http).await
    }

    /// [`Publisher::connect`]; a Tickwire publisher sends over `wire`.
    pub async fn connect_over(
        target: Target,
        addr: SocketAddr,
        encoding: crate::Encoding,
        wire: PublishWire,
    ) -> Result<Publisher> {
        let ws = target == Target::TickwireWs && wire == PublishWire::Ws;
        let conn = match target {
            // Tickwire's publish API: a WebSocket, or a plain keep-alive TCP connection for HTTP.
            Target::TickwireWs if ws => Conn::connect(target, addr, None).await?,
            Target::TickwireWs => Conn::http(addr).await?,
            _ => Conn::connect(target, addr, None).await?,
        };
        Ok(Publisher {
            conn,
            target,
            addr,
            out: Vec::with_capacity(1 << 20),
            body: Vec::with_capacity(1 << 20),
            count: 0,
            binary: encoding == crate::Encoding::Binary,
            name: Vec::with_capacity(32),
            prefix: b"quotes.",
            unanswered: VecDeque::new(),
            ws,
            next_id: 0,
            unacked: 0,
            cmd: Vec::with_capacity(256),
        })
    }

    /// Publishes to `<prefix><symbol>` instead of `quotes.<symbol>` (Tickwire only: the peers'
    /// subjects and topics stay `quotes`).
    pub fn with_prefix(mut self, prefix: &'static str) -> Publisher {
        self.prefix = prefix.as_bytes();
        self
    }

    /// Adds one message to the pending batch.
    pub fn add(&mut self, sym: usize, payload: &[u8]) {
        match self.target {
            Target::TickwireWs if self.ws => {
                // One text frame per quote.
                publish_command(&mut self.cmd, self.next_id, self.prefix, sym, |c| {
                    c.extend_from_slice(payload)
                });
                ws_frame(&mut self.out, &self.cmd);
                self.next_id += 1;
            }
            Target::TickwireWs if self.binary => {
                // The server's own codec (docs/protocol.md, "Binary publish batch").
                if self.count == 0 {
                    self.body.extend_from_slice(tickwire_wire::BATCH_MAGIC);
                }
                self.name.clear();
                self.name.extend_from_slice(self.prefix);
                crate::msg::push_symbol(&mut self.name, sym);
                let item = tickwire_wire::BatchItem {
                    // ASCII by construction.
                    channel: std::str::from_utf8(&self.name).unwrap_or(""),
                    msg_id: None,
                    data: payload,
                };
                // Short names and ~100-byte quotes always fit their length prefixes.
                let _ = tickwire_wire::encode_item(&mut self.body, &item);
            }
            Target::TickwireWs => {
                self.body.push(if self.count == 0 { b'[' } else { b',' });
                self.body.extend_from_slice(br#"{"channel":""#);
                self.body.extend_from_slice(self.prefix);
                crate::msg::push_symbol(&mut self.body, sym);
                self.body.extend_from_slice(br#"","data":"#);
                self.body.extend_from_slice(payload);
                self.body.push(b'}');
            }
            Target::Nats | Target::JetStream => {
                self.out.extend_from_slice(b"PUB quotes.");
                crate::msg::push_symbol(&mut self.out, sym);
                self.out.push(b' ');
                crate::msg::push_u64(&mut self.out, payload.len() as u64);
                self.out.extend_from_slice(b"\r\n");
                self.out.extend_from_slice(payload);
                self.out.extend_from_slice(b"\r\n");
            }
            Target::Mqtt => mqtt_publish(&mut self.out, sym, None, payload),
            // Never reached: `Publisher::connect` goes through `Conn::connect`, which refuses it.
            Target::TickwireGrpc => {}
        }
        self.count += 1;
    }

    pub fn pending(&self) -> usize {
        self.count
    }

    /// Sends the batch and, for Tickwire, waits for the HTTP answers (the durable acks).
    pub async fn flush(&mut self) -> Result<()> {
        self.send().await?;
        while self.unanswered() > 0 {
            self.answer().await?;
        }
        Ok(())
    }

    /// Requests (HTTP) or commands (WebSocket) sent and not yet answered (Tickwire; the peers'
    /// publishes have no answer).
    pub fn unanswered(&self) -> usize {
        self.unanswered.len() + self.unacked
    }

    /// How many requests or commands may wait for their answers before the publisher waits:
    /// `window` for WebSocket commands (answered one by one, pipelined), one for Tickwire's
    /// HTTP requests. The server answers a connection's HTTP/1.1 requests one after another,
    /// so pipelined requests only queue there: with 1,024 allowed, messages waited ~200 ms at
    /// 5,000/s (p99 207 ms against 4.8 ms with one). With one, what falls due while an answer
    /// is awaited goes out in the next request; that wait is the publisher's lag
    /// (`publisher_lag_*`), inside Tickwire's latencies. The peers' publishes have no answer.
    pub fn unanswered_max(&self, window: usize) -> usize {
        if self.ws {
            window.max(1)
        } else {
            1
        }
    }

    /// Sends the batch without waiting: for Tickwire one HTTP/1.1 request, pipelined behind
    /// those not yet answered ([`Publisher::answer`] reads their answers in order).
    pub async fn send(&mut self) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let count = std::mem::take(&mut self.count);
        if self.ws {
            self.unacked += count;
        } else if self.target == Target::TickwireWs {
            let content_type = if self.binary {
                tickwire_wire::BATCH_CONTENT_TYPE
            } else {
                self.body.push(b']');
                "application/json"
            };
            self.out.clear();
            self.out.extend_from_slice(
                format!(
                    "POST /v1/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
                    self.addr,
                    self.body.len(),
                    authorization(PUBLISHER_CREDENTIAL)
                )
                .as_bytes(),
            );
            self.out.extend_from_slice(&self.body);
            self.body.clear();
            self.unanswered.push_back(count);
        }
        self.conn.send(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads and checks the answer to the oldest unanswered request (WebSocket: whatever
    /// acknowledgements one read brings). Cancel-safe: what it read of an answer stays
    /// buffered until the whole answer is there.
    pub async fn answer(&mut self) -> Result<()> {
        if self.ws {
            return self.acks().await;
        }
        let Some(&count) = self.unanswered.front() else {
            return Ok(());
        };
        let body_len = http_response(&mut self.conn).await?;
        self.unanswered.pop_front();
        // The binary answer is "TWA1", a u32 count and ACK_LEN bytes per item: a short one
        // means the server acknowledged fewer items than were sent.
        if self.binary && body_len != 8 + tickwire_wire::ACK_LEN * count {
            return Err(BenchError::proto(
                "tickwire http",
                format!("binary answer of {body_len} bytes for {count} items"),
            ));
        }
        Ok(())
    }

    /// WebSocket: reads once and counts the acknowledgements in it; a refusal fails the run.
    async fn acks(&mut self) -> Result<()> {
        let (mut ok, mut refused) = (0usize, None);
        let open = self
            .conn
            .read_some(usize::MAX, |frame: &[u8]| {
                if memchr::memmem::find(frame, br#""ok":true"#).is_some() {
                    ok += 1;
                } else if refused.is_none() {
                    let frame = String::from_utf8_lossy(frame);
                    refused = Some(format!("publish refused: {frame}"));
                }
            })
            .await?;
        self.unacked = self.unacked.saturating_sub(ok);
        after_read("tickwire ws", refused, open)
    }
}
