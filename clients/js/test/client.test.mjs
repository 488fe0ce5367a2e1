// The SDK against the real server (scripts/test-clients.sh): every claim of the README.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  AuthError,
  EpochMismatchError,
  OffsetOutOfRangeError,
  RateLimitedError,
  RequestError,
  TickwireClient,
  TickwireError,
  UnavailableError,
  errorFor,
  OrderBook,
  compareDecimal,
  crc32,
  watchBook,
} from "../dist/index.js";
import { WebSocket as WS } from "ws";
import { API_KEY, Server, jwt, until } from "./server.mjs";

let srv;
before(async () => {
  srv = await Server.start();
});
after(async () => {
  await srv?.stop();
});

test("connects with an API key or a JWT; a refused credential is an AuthError, not a retry loop", async () => {
  const a = new TickwireClient({ url: srv.url, token: API_KEY });
  await a.connect();
  const u = new TickwireClient({ url: srv.url, token: () => jwt("42") });
  await u.connect();
  const ack = await u.publish("chat.lobby", { text: "hello" });
  assert.equal(typeof ack.offset, "number");
  const bad = new TickwireClient({ url: srv.url, token: "not-a-valid-token" });
  await assert.rejects(bad.connect(), (e) => e instanceof AuthError && e.code === "unauthorized");
  assert.equal(bad.connectionState, "closed");
  await a.close();
  await u.close();
});

test("state channels: the snapshot, then updates, prices exactly as published", async () => {
  const px = "1.0841234567890123456789012345";
  await srv.publish({ channel: "quotes.EURUSD", data: { bid: px, ask: "1.0843" } });
  const c = new TickwireClient({ url: srv.url, token: API_KEY });
  await c.connect();
  const got = [];
  const sub = c.subscribe("quotes.EURUSD", (m) => got.push(m));
  await sub.ready;
  assert.equal(sub.kind, "state");
  await until(() => got.length === 1, 5000, "the snapshot");
  assert.equal(got[0].snapshot, true);
  assert.equal(got[0].data.bid, px, "a string, every digit");
  assert.ok(got[0].rawData.includes(`"bid":"${px}"`));
  await c.publish("quotes.EURUSD", { bid: "1.0850", ask: "1.0852" });
  await until(() => got.length === 2, 5000, "the update");
  assert.equal(got[1].snapshot, false);
  assert.equal(got[1].data.bid, "1.0850");
  await c.close();
});

test("stream channels: history from an offset, then live, in order; rawData keeps big numbers", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY });
  await c.connect();
  // A JSON number no double holds, sent as text: the SDK must hand back its exact digits.
  const first = await srv.publishRaw('{"channel":"chat.hist","data":{"n":12345678901234567890}}');
  for (let i = 0; i < 5; i++) await c.publish("chat.hist", { i });
  const got = [];
  const sub = c.subscribe("chat.hist", (m) => got.push(m), { from: first.offset });
  await sub.ready;
  assert.equal(sub.kind, "stream");
  assert.match(sub.epoch, /^[0-9a-f]{16}$/);
  await c.publish("chat.hist", { live: true });
  await until(() => got.length === 7, 5000, "history and live");
  assert.equal(got[0].rawData, '{"n":12345678901234567890}', "exact text of a number no double holds");
  assert.deepEqual(got.slice(1, 6).map((m) => m.data.i), [0, 1, 2, 3, 4]);
  assert.deepEqual(got[6].data, { live: true });
  for (let i = 1; i < got.length; i++) assert.ok(got[i].offset > got[i - 1].offset);
  await c.close();
});

test("publishes are pipelined and acknowledged in order", async () => {
  // Counts the publishes on the wire before the first ack comes back: pipelined, not one by one.
  let sent = 0;
  let sentAtFirstAck;
  class Counting extends WS {
    send(data, ...rest) {
      if (String(data).includes('"op":"publish"')) sent++;
      return super.send(data, ...rest);
    }
    addEventListener(type, fn, o) {
      if (type !== "message") return super.addEventListener(type, fn, o);
      return super.addEventListener(type, (ev) => {
        if (sentAtFirstAck === undefined && String(ev.data).includes('"offset"')) sentAtFirstAck = sent;
        fn(ev);
      }, o);
    }
  }
  const c = new TickwireClient({ url: srv.url, token: API_KEY, WebSocket: Counting });
  await c.connect();
  const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => c.publish("chat.pipe", { i })));
  assert.ok(sentAtFirstAck >= 100, `${sentAtFirstAck} publishes sent before the first ack`);
  for (let i = 1; i < acks.length; i++) assert.ok(acks[i].offset > acks[i - 1].offset);
  assert.ok(acks.every((a) => !a.duplicate));
  const again = await c.publish("chat.pipe", { i: 0 }, { msgId: acks[0].msgId });
  assert.equal(again.offset, acks[0].offset);
  assert.equal(again.duplicate, true);
  await c.close();
});

test("a kill -9 and a restart mid-stream: the subscriber resumes with no gap and no duplicate, retried publishes are stored once", async () => {
  const sub = new TickwireClient({ url: srv.url, token: API_KEY, reconnectDelayMs: 50, maxReconnectDelayMs: 300 });
  const pub = new TickwireClient({ url: srv.url, token: API_KEY, reconnectDelayMs: 50, maxReconnectDelayMs: 300 });
  await sub.connect();
  await pub.connect();
  const got = [];
  const s = sub.subscribe("chat.resume", (m) => got.push(m.data.i));
  await s.ready;
  const N = 600;
  const acks = [];
  let killed = false;
  for (let i = 0; i < N; i++) {
    acks.push(pub.publish("chat.resume", { i }));
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 10));
    if (i === 300) {
      // Publishes in flight: some stored and not acknowledged, some not stored.
      await srv.kill9();
      killed = true;
      setTimeout(() => srv.restart(), 300);
    }
  }
  assert.ok(killed);
  const done = await Promise.all(acks);
  assert.equal(done.length, N);
  await until(() => got.length >= N, 20000, `${N} messages (have ${got.length})`);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i), "every message once, in order");
  const stored = await srv.history("chat.resume");
  assert.equal(stored.length, N, "each msg_id stored once");
  assert.equal(new Set(stored.map((m) => m.msg_id)).size, N);
  assert.equal(new Set(done.map((a) => a.offset)).size, N, "distinct offsets");
  await sub.close();
  await pub.close();
});

test("a SIGTERM drain: the client follows the server's resume points", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY, reconnectDelayMs: 50, maxReconnectDelayMs: 300 });
  await c.connect();
  const got = [];
  c.subscribe("chat.drain", (m) => got.push(m.data.i), { from: 0 });
  for (let i = 0; i < 10; i++) await srv.publish({ channel: "chat.drain", data: { i } });
  await until(() => got.length === 10, 5000, "before");
  await srv.terminate();
  await srv.restart();
  for (let i = 10; i < 20; i++) await srv.publish({ channel: "chat.drain", data: { i } });
  await until(() => got.length === 20, 10000, `after (have ${got.length})`);
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i));
  await c.close();
});

test("refusals are typed errors", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY });
  await c.connect();
  await assert.rejects(c.publish("quotes.EURUSD", { bid: 1.08, ask: "1.09" }), (e) => e instanceof RequestError && e.code === "bad_data");
  const epoch = c.subscribe("chat.epoch", () => {}, { from: 0, epoch: "0000000000000000" });
  await assert.rejects(epoch.ready, (e) => e instanceof EpochMismatchError);
  const far = c.subscribe("chat.far", () => {}, { from: 1e12 });
  await assert.rejects(far.ready, (e) => e instanceof OffsetOutOfRangeError);
  const user = new TickwireClient({ url: srv.url, token: jwt("7") });
  await user.connect();
  const other = user.subscribe("user.8", () => {});
  await assert.rejects(other.ready, (e) => e instanceof AuthError && e.code === "forbidden");
  await assert.rejects(user.publish("quotes.EURUSD", { bid: "1", ask: "2" }), (e) => e instanceof AuthError);
  await user.close();
  await c.close();
});

test("sockets cut under the clients after acks and deliveries were lost: the subscriber resumes with no gap and no duplicate, every retried publish is stored once", async () => {
  // Every socket the clients open, so the test can cut them. A deaf socket drops what the
  // server sends, as a dying network does: acks of stored publishes and deliveries are lost.
  const sockets = [];
  class Tracked extends WS {
    constructor(url) {
      super(url);
      this.deaf = false;
      sockets.push(this);
    }
    addEventListener(type, fn, o) {
      if (type !== "message") return super.addEventListener(type, fn, o);
      return super.addEventListener(type, (ev) => this.deaf || fn(ev), o);
    }
  }
  const opts = { url: srv.url, token: API_KEY, WebSocket: Tracked, reconnectDelayMs: 20, maxReconnectDelayMs: 100 };
  const sub = new TickwireClient(opts);
  const pub = new TickwireClient(opts);
  await sub.connect();
  await pub.connect();
  const got = [];
  const offsets = [];
  const s = sub.subscribe("chat.cut", (m) => {
    got.push(m.data.i);
    offsets.push(m.offset);
  });
  await s.ready;
  const ROUNDS = 4;
  const N = ROUNDS * 100;
  const acks = [];
  let i = 0;
  for (let round = 0; round < ROUNDS; round++) {
    await until(() => sockets.filter((ws) => ws.readyState === WS.OPEN).length === 2, 10000, "reconnected");
    const live = sockets.splice(0).filter((ws) => ws.readyState === WS.OPEN);
    for (let k = 0; k < 50; k++) acks.push(pub.publish("chat.cut", { i: i++ }));
    for (const ws of live) ws.deaf = true;
    for (let k = 0; k < 50; k++) acks.push(pub.publish("chat.cut", { i: i++ }));
    // Stored on the server, unacknowledged and undelivered on the clients: now cut.
    const stored = i;
    for (const deadline = Date.now() + 10000; (await srv.history("chat.cut")).length < stored; ) {
      assert.ok(Date.now() < deadline, "the server stored the round");
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const ws of live) ws.terminate();
  }
  const done = await Promise.all(acks);
  await until(() => got.length >= N, 20000, `${N} messages (have ${got.length})`);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(got, Array.from({ length: N }, (_, k) => k), "every message once, in order");
  assert.ok(done.filter((a) => a.duplicate).length >= ROUNDS * 50, "the lost acks were retried with their msg_id");
  assert.equal((await srv.history("chat.cut")).length, N, "each retried publish stored once");
  assert.deepEqual(done.map((a) => a.offset), offsets, "acks name the offsets the subscriber saw");
  assert.equal(s.lastOffset, offsets.at(-1));
  await sub.close();
  await pub.close();
});

test("a retried publish with the same msg_id gets the same offset across connections", async () => {
  const a = new TickwireClient({ url: srv.url, token: API_KEY });
  const b = new TickwireClient({ url: srv.url, token: API_KEY });
  await a.connect();
  await b.connect();
  const first = await a.publish("chat.idem", { n: 1 }, { msgId: "idem-1" });
  const again = await b.publish("chat.idem", { n: 1 }, { msgId: "idem-1" });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.offset, first.offset);
  const other = await b.publish("chat.idem", { n: 2 }, { msgId: "idem-2" });
  assert.notEqual(other.offset, first.offset);
  assert.equal((await srv.history("chat.idem")).length, 2);
  await a.close();
  await b.close();
});

test("the book checksum is the one docs/books.md gives", () => {
  const b = new OrderBook("X");
  const r = b.apply({ snapshot: true, seq: 41, checksum: 1082956473, bids: [["1.1", "5"]], asks: [["1.12", "3"], ["1.2", "3"]] });
  assert.equal(r, "ok");
  assert.equal(crc32("1123123115"), 1082956473);
  // A delta that does not follow is a gap; a wrong checksum is a mismatch.
  assert.equal(b.apply({ seq: 43, prev: 42, checksum: 0, bids: [], asks: [] }), "gap");
  assert.equal(b.known, false);
  b.apply({ snapshot: true, seq: 41, checksum: 1082956473, bids: [["1.1", "5"]], asks: [["1.12", "3"], ["1.2", "3"]] });
  assert.equal(b.apply({ seq: 42, prev: 41, checksum: 1, bids: [["1.10", "0"]], asks: [] }), "mismatch");
});

async function depth(symbol, data) {
  await srv.publish({ channel: `depth.${symbol}`, data });
}

test("an order book from snapshot + deltas, every checksum verified, exact prices best first", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY });
  await c.connect();
  const results = [];
  const w = watchBook(c, "BOOKX", (b) => results.push({ seq: b.seq, bids: b.bids, asks: b.asks }), {
    onResync: (why) => results.push({ resync: why }),
  });
  await w.ready;
  await depth("BOOKX", {
    snapshot: [
      { side: "bid", price: "1.10000000000000000001", size: "5" },
      { side: "bid", price: "1.1", size: "3" },
      { side: "ask", price: "1.2", size: "7" },
      { side: "ask", price: "1.19999999999999999999", size: "1" },
    ],
  });
  await until(() => w.book.asks.length === 2, 10000, "the snapshot");
  assert.deepEqual(w.book.bids, [["1.10000000000000000001", "5"], ["1.1", "3"]]);
  assert.deepEqual(w.book.asks, [["1.19999999999999999999", "1"], ["1.2", "7"]]);
  // Deltas: a new level, a changed size, a deleted level, spread over several flushes.
  for (let i = 0; i < 20; i++) {
    await depth("BOOKX", { updates: [{ action: "new", side: "bid", price: `1.0${90 + i}`, size: `${i + 1}` }] });
    if (i % 5 === 0) await new Promise((r) => setTimeout(r, 30));
  }
  await depth("BOOKX", { updates: [{ action: "delete", side: "ask", price: "1.2" }] });
  await until(() => w.book.asks.length === 1 && w.book.bids.length === 10, 10000, "the deltas");
  // The server's own book (latest answers a snapshot) is the book the client kept.
  const latest = await (await fetch(`${srv.url}/v1/latest/book.BOOKX`, { headers: { authorization: `Bearer ${API_KEY}` } })).json();
  assert.equal(latest.data.seq, w.book.seq);
  assert.deepEqual(w.book.bids, latest.data.bids);
  assert.deepEqual(w.book.asks, latest.data.asks);
  assert.equal(w.book.checksum(), latest.data.checksum);
  assert.ok(results.filter((r) => r.seq).length >= 2, "a snapshot and deltas applied");
  assert.equal(w.resyncs, 0, "no resync on a clean stream");

  // Corrupt the local book: the next delta's checksum tells, and the watcher fetches a fresh snapshot.
  assert.equal(w.book.apply({ seq: w.book.seq + 1, prev: w.book.seq, checksum: 0, bids: [["5", "5"]], asks: [] }), "mismatch");
  await depth("BOOKX", { updates: [{ action: "new", side: "ask", price: "1.3", size: "2" }] });
  await until(() => w.resyncs === 1 && w.book.known && w.book.asks.length === 2, 10000, "the resync");
  assert.equal(w.book.bids.some(([p]) => p === "5"), false, "the corrupt level is gone");
  const after = await (await fetch(`${srv.url}/v1/latest/book.BOOKX`, { headers: { authorization: `Bearer ${API_KEY}` } })).json();
  assert.deepEqual(w.book.asks, after.data.asks);
  assert.equal(w.book.checksum(), after.data.checksum);
  await w.unsubscribe();
  await c.close();
});

test("a book watched at a depth of its own holds the server's best levels only", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY });
  await c.connect();
  const w = watchBook(c, "BOOKD", () => {}, { depth: 2 });
  await w.ready;
  await depth("BOOKD", {
    snapshot: [1, 2, 3, 4].flatMap((i) => [
      { side: "bid", price: `1.${10 - i}`, size: `${i}` },
      { side: "ask", price: `1.${10 + i}`, size: `${i}` },
    ]),
  });
  await until(() => w.book.bids.length === 2 && w.book.asks.length === 2, 10000, "the depth-2 snapshot");
  assert.deepEqual(w.book.bids, [["1.9", "1"], ["1.8", "2"]]);
  // The best bid goes: the third level moves up into the view, checksum still verified.
  await depth("BOOKD", { updates: [{ action: "delete", side: "bid", price: "1.9" }] });
  await until(() => w.book.bids[0]?.[0] === "1.8", 10000, "the level that moved up");
  assert.deepEqual(w.book.bids, [["1.8", "2"], ["1.7", "3"]]);
  assert.deepEqual(w.book.asks, [["1.11", "1"], ["1.12", "2"]]);
  assert.equal(w.resyncs, 0, "every delta of the view followed and verified");
  await w.unsubscribe();
  await c.close();
});

test("compareDecimal orders decimal strings exactly", () => {
  assert.ok(compareDecimal("1.10000000000000000001", "1.1") > 0);
  assert.ok(compareDecimal("-2", "-10") > 0);
  assert.equal(compareDecimal("01.50", "1.5"), 0);
  assert.ok(compareDecimal("0.0000000000000000000000000001", "0") > 0);
});

test("an expiring token is refreshed on the open connection: no reconnect, nothing missed", async () => {
  const short = await Server.start({ TICKWIRE_AUTH__LEEWAY_SECS: "0", TICKWIRE_AUTH__TOKEN_GRACE_SECS: "3" });
  try {
    let calls = 0;
    const states = [];
    const errors = [];
    const c = new TickwireClient({
      url: short.url,
      token: () => (calls++, jwt("42", 1)),
      onState: (s) => states.push(s),
      onError: (e) => errors.push(e),
    });
    await c.connect();
    const got = [];
    const sub = c.subscribe("chat.refresh", (m) => got.push(m.data.n));
    await sub.ready;
    // A static token that expires: the client says so (no function to get a new one).
    const stale = [];
    const s = new TickwireClient({ url: short.url, token: jwt("43", 1), onError: (e) => stale.push(e) });
    await s.connect();
    await until(() => calls >= 2 && stale.length > 0, 8000, "the expiry");
    await new Promise((r) => setTimeout(r, 3500)); // past the grace period of the first token
    await short.publish({ channel: "chat.refresh", data: { n: 1 } });
    await until(() => got.length === 1, 5000, "a message after the refresh");
    assert.deepEqual(states, ["connecting", "open"], "never reconnected");
    assert.deepEqual(errors, []);
    assert.ok(stale[0] instanceof AuthError && stale[0].code === "token_expired");
    await c.close();
    await s.close();
  } finally {
    await short.stop();
  }
});

test("last N then live; a wiped server's new epoch ends the resumed subscription with EpochMismatchError", async () => {
  const w = await Server.start();
  try {
    for (let i = 0; i < 5; i++) await w.publish({ channel: "chat.epochs", data: { i } });
    const errors = [];
    const c = new TickwireClient({ url: w.url, token: API_KEY, reconnectDelayMs: 50, maxReconnectDelayMs: 200 });
    await c.connect();
    const got = [];
    const sub = c.subscribe("chat.epochs", (m) => got.push(m.data.i), { last: 2, onError: (e) => errors.push(e) });
    await sub.ready;
    await until(() => got.length === 2, 5000, "the last 2");
    assert.deepEqual(got, [3, 4]);
    const epoch = sub.epoch;
    await w.kill9();
    w.wipe();
    await w.restart();
    await until(() => errors.length === 1, 10000, "the refusal after the reconnect");
    assert.ok(errors[0] instanceof EpochMismatchError, String(errors[0]));
    // What the client does next is its choice: replay the new stream from 0.
    await w.publish({ channel: "chat.epochs", data: { i: 100 } });
    const again = [];
    const fresh = c.subscribe("chat.epochs", (m) => again.push(m.data.i), { from: 0 });
    await fresh.ready;
    assert.notEqual(fresh.epoch, epoch);
    await until(() => again.length === 1, 5000, "the new stream");
    assert.deepEqual(again, [100]);
    assert.deepEqual(got, [3, 4], "nothing of the new stream delivered as if it continued the old");
    await c.close();
  } finally {
    await w.stop();
  }
});

test("every server error code maps to its typed error", () => {
  const cases = {
    unauthorized: AuthError, forbidden: AuthError, token_expired: AuthError,
    epoch_mismatch: EpochMismatchError, offset_out_of_range: OffsetOutOfRangeError,
    rate_limited: RateLimitedError, unavailable: UnavailableError,
    bad_data: RequestError, bad_channel: RequestError, unknown_namespace: RequestError, too_large: RequestError,
  };
  for (const [code, cls] of Object.entries(cases)) {
    const e = errorFor(code, "m");
    assert.ok(e instanceof cls && e instanceof TickwireError && e.code === code, code);
  }
  assert.equal(errorFor("rate_limited", "over the limit: retry after 250 ms").retryAfterMs, 250);
});

test("an order book survives a server restart: the reconnect's snapshot replaces it, deltas go on", async () => {
  const c = new TickwireClient({ url: srv.url, token: API_KEY, reconnectDelayMs: 50, maxReconnectDelayMs: 300 });
  await c.connect();
  const w = watchBook(c, "RESTB", () => {});
  await w.ready;
  await depth("RESTB", { snapshot: [{ side: "bid", price: "2.5", size: "1" }, { side: "ask", price: "2.6", size: "1" }] });
  await until(() => w.book.known && w.book.asks.length === 1, 10000, "the book");
  await srv.kill9();
  await srv.restart();
  await depth("RESTB", { updates: [{ action: "new", side: "bid", price: "2.55", size: "3" }] });
  await until(() => w.book.known && w.book.bestBid()?.[0] === "2.55", 15000, "the book after the restart");
  const latest = await (await fetch(`${srv.url}/v1/latest/book.RESTB`, { headers: { authorization: `Bearer ${API_KEY}` } })).json();
  assert.deepEqual(w.book.bids, latest.data.bids);
  assert.equal(w.book.checksum(), latest.data.checksum);
  await w.unsubscribe();
  await c.close();
});
