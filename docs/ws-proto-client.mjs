// A small client of Tickwire's binary WebSocket encoding (docs/protocol.md, "Binary
// encoding"): the protobuf messages of proto/tickwire/v1/tickwire.proto over /v1/ws, selected
// by the `tickwire.v1.proto` subprotocol. It loads the .proto at run time with protobufjs (no
// code generation), sends each command as a `ClientMessage` binary frame and decodes every
// frame the server sends as a `ServerMessage`.
//
//   npm install protobufjs@7        (and `ws` in Node before 22, which has no WebSocket)
//
//   import { connect, jsonPayload } from "./ws-proto-client.mjs";
//   const tw = await connect("ws://127.0.0.1:7700/v1/ws", { protoUrl: "tickwire.proto" });
//   tw.onpush = (p) => console.log(p.channel, p.offset, p.data);   // data: typed or JSON
//   const r = await tw.subscribe("chat.lobby", { from: 0 });        // r.subscribed.epoch
//   await tw.publish("chat.lobby", jsonPayload({ text: "hi" }));    // r.published.offset
//
// Field names are the .proto's (snake_case: `prev_seq`, `retention_gap`, `msg_id`). Prices
// and sizes are decimal strings, exactly as published; 64-bit integers (offsets, `ts`,
// sequence numbers) are JavaScript numbers, exact up to 2^53.
import protobuf from "protobufjs";

export const SUBPROTOCOL = "tickwire.v1.proto";

/** The two frame types, from the .proto file (a path in Node, a URL in a browser). */
export async function loadTypes(protoUrl) {
  const root = await new protobuf.Root().load(protoUrl, { keepCase: true });
  return {
    ClientMessage: root.lookupType("tickwire.v1.ClientMessage"),
    ServerMessage: root.lookupType("tickwire.v1.ServerMessage"),
  };
}

// `defaults`: a zero offset or a `false` flag is absent on the wire (proto3) but present
// here; fields marked `optional` in the .proto (a reply's `id`, `Subscribed.offset`) stay
// absent when the server did not set them.
const AS_OBJECT = { longs: Number, enums: String, defaults: true };
const utf8 = new TextDecoder();

/** A `Payload` holding one JSON value (for namespaces with schema `any`). */
export function jsonPayload(value) {
  return { json: new TextEncoder().encode(JSON.stringify(value)) };
}

/** What a push carries: the typed message (`quote`, `trade`, `book`, `candle`) or the JSON
 *  value as published. */
export function dataOf(payload) {
  if (!payload) return undefined;
  if (payload.json !== undefined) return JSON.parse(utf8.decode(payload.json));
  return payload.quote ?? payload.trade ?? payload.book ?? payload.candle;
}

/** Decodes one binary frame: `{kind: "push" | "reply" | "disconnect", ...}`. */
export function decodeFrame(types, bytes) {
  const m = types.ServerMessage.toObject(
    types.ServerMessage.decode(new Uint8Array(bytes)),
    AS_OBJECT,
  );
  if (m.push) {
    const p = m.push;
    return {
      kind: "push",
      channel: p.channel,
      offset: p.offset,
      ts: p.ts,
      snapshot: p.snapshot,
      data: dataOf(p.payload),
    };
  }
  if (m.reply) return { kind: "reply", ...m.reply };
  if (m.disconnect) return { kind: "disconnect", ...m.disconnect };
  return { kind: "unknown", message: m };
}

/** Encodes one command (`{subscribe: {...}}`, `{publish: {...}}`, ...) with its id. */
export function encodeCommand(types, id, op) {
  const T = types.ClientMessage;
  return T.encode(T.fromObject({ id, ...op })).finish();
}

/** A refused command: `code` is the protocol's error code (`epoch_mismatch`, ...). */
export class TickwireError extends Error {
  constructor(error) {
    super(error?.message ?? "refused");
    this.code = error?.code ?? "";
  }
}

export class Client {
  constructor(ws, types) {
    this.ws = ws;
    this.types = types;
    this.nextId = 1;
    this.pending = new Map();
    /** Every push, in order. */
    this.onpush = () => {};
    /** The server's reason for closing, with `resume` (the `from` per stream channel). */
    this.ondisconnect = () => {};
    /** An error that answers no command (an undecodable frame, the token expiry notice). */
    this.onerror = () => {};
    ws.onmessage = (e) => this.frame(e.data);
    ws.onclose = () => {
      for (const { fail } of this.pending.values()) fail(new TickwireError({ code: "closed" }));
      this.pending.clear();
    };
  }

  frame(data) {
    const f = decodeFrame(this.types, data);
    if (f.kind === "push") return this.onpush(f);
    if (f.kind === "disconnect") return this.ondisconnect(f);
    if (f.kind !== "reply") return undefined;
    const waiting = f.id === undefined ? undefined : this.pending.get(f.id);
    if (!waiting) return this.onerror(new TickwireError(f.error));
    this.pending.delete(f.id);
    return f.ok ? waiting.ok(f) : waiting.fail(new TickwireError(f.error));
  }

  /** Sends a command; resolves with its `Reply`, rejects with a `TickwireError`. Commands
   *  may be pipelined: publishes are answered in the order sent. */
  command(op) {
    const id = this.nextId++;
    const done = new Promise((ok, fail) => this.pending.set(id, { ok, fail }));
    this.ws.send(encodeCommand(this.types, id, op));
    return done;
  }

  /** `opts`: `from` and `epoch`, or `last`, or `since_ms` (stream channels); `depth` (book channels). */
  subscribe(channel, opts = {}) {
    return this.command({ subscribe: { channel, ...opts } });
  }

  unsubscribe(channel) {
    return this.command({ unsubscribe: channel });
  }

  /** `payload`: `{quote: {bid: "1.1", ...}}`, `{book: {...}}`, or `jsonPayload(value)`. */
  publish(channel, payload, msg_id = "") {
    return this.command({ publish: { channel, msg_id, payload } });
  }

  ping() {
    return this.command({ ping: true });
  }

  close() {
    this.ws.close();
  }
}

/** Opens a binary connection. `WebSocket`: the browser's by default; in Node before 22 pass
 *  the `ws` package's. */
export async function connect(url, { protoUrl, WebSocket = globalThis.WebSocket } = {}) {
  const types = await loadTypes(protoUrl);
  const ws = new WebSocket(url, SUBPROTOCOL);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = (e) => fail(e.error ?? new Error("WebSocket error"));
  });
  // A server that does not speak the encoding echoes no subprotocol: it would read our
  // frames as JSON commands.
  if (ws.protocol !== SUBPROTOCOL) {
    ws.close();
    throw new Error(`the server did not choose ${SUBPROTOCOL}`);
  }
  return new Client(ws, types);
}
