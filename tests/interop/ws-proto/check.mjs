// Drives docs/ws-proto-client.mjs (copied beside this file, where npm installed protobufjs
// and ws) against a real server, and prints what it saw as one JSON line, then
// "WS PROTO CLIENT PASSED". crates/cli/tests/ws_proto_client_js.rs compares that line with the
// server's own answers. Usage: node check.mjs <ws url> <path of tickwire.proto>
import WebSocket from "ws";
import { connect, jsonPayload, TickwireError } from "./ws-proto-client.mjs";

const [url, protoUrl] = process.argv.slice(2);
const fail = (what) => { console.error("FAILED: " + what); process.exit(1); };
const check = (ok, what) => { if (!ok) fail(what); };
const open = () => connect(url, { protoUrl, WebSocket });

/** Resolves with the next `n` pushes of `client`. */
function pushes(client, n, ms = 10000) {
  return new Promise((ok, bad) => {
    const got = [];
    const timer = setTimeout(() => bad(new Error(`${got.length} of ${n} pushes`)), ms);
    client.onpush = (p) => {
      got.push(p);
      if (got.length === n) { clearTimeout(timer); client.onpush = () => {}; ok(got); }
    };
  });
}

const out = {};
const a = await open();
check((await a.ping()).ok, "ping");

// A typed quote: published, then the snapshot of a subscription, decimals exact.
const bid = "1.084120000000000000000000001";
const q = await a.publish("quotes.JSPB", { quote: { bid, ask: "1.0843" } });
check(q.ok && q.published.offset >= 0, "quote published");
let next = pushes(a, 1);
const qs = await a.subscribe("quotes.JSPB");
check(qs.subscribed.class === "CHANNEL_CLASS_STATE" && qs.subscribed.snapshot, "state subscribed");
const [snap] = await next;
check(snap.snapshot && snap.data.bid === bid && snap.data.ask === "1.0843", "typed snapshot");
out.quote = { offset: snap.offset, bid: snap.data.bid, ask: snap.data.ask };

// A stream channel from 0: pipelined publishes answered in order, pushes with their offsets.
const sub = await a.subscribe("chat.jspb", { from: 0 });
check(sub.subscribed.class === "CHANNEL_CLASS_STREAM" && sub.subscribed.offset === 0, "stream subscribed");
out.epoch = sub.subscribed.epoch;
next = pushes(a, 3);
const acks = await Promise.all([0, 1, 2].map((n) => a.publish("chat.jspb", jsonPayload({ n }))));
const got = await next;
check(got.every((p, i) => p.offset === acks[i].published.offset), "pushes at the acknowledged offsets");
out.chat = got.map((p) => ({ offset: p.offset, data: p.data }));

// Refusals carry the protocol's codes.
const code = async (promise) => {
  try { await promise; return "accepted"; } catch (e) { return e instanceof TickwireError ? e.code : String(e); }
};
out.errors = {
  epoch: await code(a.subscribe("chat.jspb2", { from: 0, epoch: "0000000000000001" })),
  decimal: await code(a.publish("quotes.JSPB", { quote: { bid: "1.5e3" } })),
  channel: await code(a.subscribe("no such channel")),
};
a.close();

// Resume in the epoch after messages published while away: exactly those, in order.
const b = await open();
const more = [];
for (const n of [3, 4]) more.push((await b.publish("chat.jspb", jsonPayload({ n }))).published.offset);
const c = await open();
next = pushes(c, 2);
const last = out.chat[out.chat.length - 1].offset;
const resumed = await c.subscribe("chat.jspb", { from: last + 1, epoch: out.epoch });
check(resumed.subscribed.offset === last + 1, "resumed where asked");
out.resumed = (await next).map((p) => ({ offset: p.offset, data: p.data }));
check(out.resumed.map((p) => p.offset).join() === more.join(), "no gap, no duplicate");
b.close();
c.close();

console.log(JSON.stringify(out));
console.log("WS PROTO CLIENT PASSED");
process.exit(0);
