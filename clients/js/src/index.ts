// Tickwire client for browsers and Node (docs/protocol.md is the wire protocol).
//
// One WebSocket carries every subscription and publish. When it drops, the client reconnects
// with backoff, subscribes each stream channel again from the offset after the last message it
// delivered (so nothing is missed and nothing delivered twice), and sends every publish that
// was not acknowledged again with the same msg_id (the server stores it once). Prices are
// decimal strings on the wire and stay strings here; `rawData` is a message's data exactly as
// the server sent it, for data that holds JSON numbers a double cannot carry.

/** What a subscription delivers. */
export interface Message {
  channel: string;
  /** Position in the namespace's stream; grows within a channel. */
  offset: number;
  /** Server append time, Unix milliseconds. */
  ts: number;
  /** The current value of a state channel, sent on subscribe. */
  snapshot: boolean;
  /** The data, parsed (JSON numbers become doubles: use `rawData` for exact numbers). */
  data: unknown;
  /** The data's JSON text, byte for byte as published. */
  rawData: string;
}

/** A publish acknowledged: the message is durable at `offset`. */
export interface Ack {
  channel: string;
  offset: number;
  /** The msg_id was stored before (by an earlier attempt of this publish, or another). */
  duplicate: boolean;
  msgId: string | undefined;
}

/** A credential: an API key or a JWT, or a function that returns a fresh one (called at every
 * connect and when the server says the token expired). */
export type TokenSource = string | (() => string | Promise<string>);

/** A WebSocket constructor: the browser's, Node 22's global one, or the `ws` package's. */
export type WebSocketCtor = new (url: string) => WebSocket;

export interface ClientOptions {
  /** `http://host:7700`, `https://…`, or the WebSocket URL itself (`ws://host:7700/v1/ws`). */
  url: string;
  token?: TokenSource;
  /** Defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketCtor;
  /** First reconnect delay, ms (doubles up to `maxReconnectDelayMs`). Default 100. */
  reconnectDelayMs?: number;
  /** Default 5000. */
  maxReconnectDelayMs?: number;
  /** Called with errors that belong to no call: a subscription the server ended, a refresh
   * that failed. */
  onError?: (err: TickwireError) => void;
  /** Connection state changes. */
  onState?: (state: ConnectionState) => void;
  /** A WebSocket handshake not done in this time is given up and retried. Default 10000. */
  connectTimeoutMs?: number;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Every error the client reports: `code` is the server's error code (docs/protocol.md) or
 * one of the client's own (`connection_closed`, `client_closed`). */
export class TickwireError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "TickwireError";
    this.code = code;
  }
}
/** `unauthorized`, `forbidden`, `token_expired`: the credential does not allow it. */
export class AuthError extends TickwireError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "AuthError";
  }
}
/** `bad_data`, `bad_channel`, `bad_request`, `too_large`, `unknown_namespace`, …: the request
 * is wrong and retrying it cannot help. */
export class RequestError extends TickwireError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "RequestError";
  }
}
/** `epoch_mismatch`: the stream was recreated; offsets started again at 0. Subscribe again
 * without `from` (live) or with `from: 0` (replay the new stream). */
export class EpochMismatchError extends TickwireError {
  constructor(message: string) {
    super("epoch_mismatch", message);
    this.name = "EpochMismatchError";
  }
}
/** `offset_out_of_range`: `from` is past the stream's end. */
export class OffsetOutOfRangeError extends TickwireError {
  constructor(message: string) {
    super("offset_out_of_range", message);
    this.name = "OffsetOutOfRangeError";
  }
}
/** `rate_limited`: `retryAfterMs` says when to try again. */
export class RateLimitedError extends TickwireError {
  readonly retryAfterMs: number | undefined;
  constructor(message: string) {
    super("rate_limited", message);
    this.name = "RateLimitedError";
    const m = /retry after (\d+) ms/.exec(message);
    this.retryAfterMs = m ? Number(m[1]) : undefined;
  }
}
/** `unavailable`: storage failure or shutdown; publishes are retried with their msg_id. */
export class UnavailableError extends TickwireError {
  constructor(message: string) {
    super("unavailable", message);
    this.name = "UnavailableError";
  }
}
/** The client was closed (`client_closed`) before the call completed. */
export class ClosedError extends TickwireError {
  constructor(message: string) {
    super("client_closed", message);
    this.name = "ClosedError";
  }
}

/** The typed error for a server error code. */
export function errorFor(code: string, message: string): TickwireError {
  switch (code) {
    case "unauthorized":
    case "forbidden":
    case "token_expired":
      return new AuthError(code, message);
    case "epoch_mismatch":
      return new EpochMismatchError(message);
    case "offset_out_of_range":
      return new OffsetOutOfRangeError(message);
    case "rate_limited":
      return new RateLimitedError(message);
    case "unavailable":
      return new UnavailableError(message);
    default:
      return new RequestError(code, message);
  }
}

export interface SubscribeOptions {
  /** Stream channels: deliver stored messages from this offset, then live ones. */
  from?: number;
  /** The epoch `from` belongs to (refused with EpochMismatchError if the stream changed). */
  epoch?: string;
  /** Stream channels, instead of `from`: the newest `last` messages (1–10,000), then live. */
  last?: number;
  /** Stream channels, instead of `from`: the messages appended since this Unix ms, then live. */
  since?: number;
  /** Book channels (`book.<SYM>`): the best `depth` levels a side only, snapshot and deltas of
   * that view (docs/books.md); absent: every level the channel keeps. */
  depth?: number;
  /** The subscription ended with an error (refused, or refused again on a reconnect). */
  onError?: (err: TickwireError) => void;
  /** Retention removed messages between `from` (or the resume point) and what is delivered. */
  onRetentionGap?: (gap: { requested: number; firstRetained: number }) => void;
}

/** A live subscription. */
export interface Subscription {
  readonly channel: string;
  /** `state` or `stream`, once the server answered. */
  readonly kind: "state" | "stream" | undefined;
  /** The stream's epoch (stream channels). */
  readonly epoch: string | undefined;
  /** The last delivered offset. */
  readonly lastOffset: number | undefined;
  /** Resolves when the server accepted the subscription (rejects if it refused). */
  readonly ready: Promise<void>;
  unsubscribe(): Promise<void>;
}

interface SubState {
  channel: string;
  handler: (m: Message) => void;
  opts: SubscribeOptions;
  kind: "state" | "stream" | undefined;
  epoch: string | undefined;
  lastOffset: number | undefined;
  /** Where a stream subscription resumes: after the last delivered, or where delivery began. */
  next: number | undefined;
  active: boolean;
  readyResolve: () => void;
  readyReject: (e: TickwireError) => void;
  settled: boolean;
}

interface PendingPublish {
  channel: string;
  data: unknown;
  msgId: string | undefined;
  resolve: (a: Ack) => void;
  reject: (e: TickwireError) => void;
  /** The command id of the current attempt; undefined while not sent. */
  id: number | undefined;
  attempts: number;
}

type Reply = {
  id: number | null;
  ok: boolean;
  channel?: string;
  class?: "state" | "stream";
  offset?: number;
  epoch?: string;
  duplicate?: boolean;
  retention_gap?: { requested: number; first_retained: number };
  error?: { code: string; message: string };
  op?: string;
  code?: string;
  message?: string;
  resume?: Record<string, number>;
};

const RETRYABLE = new Set(["unavailable", "rate_limited"]);

/** The client: create it, `connect()`, then subscribe and publish. */
export class TickwireClient {
  private readonly opts: ClientOptions;
  private readonly wsUrl: string;
  private ws: WebSocket | undefined;
  private state: ConnectionState = "closed";
  private nextId = 1;
  private readonly subs = new Map<string, SubState>();
  /** Publishes not acknowledged yet, in the order they were made. */
  private readonly pending: PendingPublish[] = [];
  /** Command id → what answers it. */
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private readonly clientId = randomId();
  private msgSeq = 0;
  private closed = false;
  private delay: number;
  private connectedOnce: Promise<void> | undefined;
  /** The first connection opened: later failures are retried, never fatal. */
  private everOpened = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.wsUrl = toWsUrl(opts.url);
    this.delay = opts.reconnectDelayMs ?? 100;
  }

  /** Opens the connection; resolves once it is open and authenticated. A refused credential
   * rejects with AuthError and does not retry; a server that cannot be reached is retried. */
  connect(): Promise<void> {
    if (!this.connectedOnce) {
      this.closed = false;
      this.connectedOnce = new Promise((resolve, reject) => {
        this.open(resolve, reject);
      });
    }
    return this.connectedOnce;
  }

  /** Subscribes to `channel`; `handler` gets each message once, in order, across reconnects. */
  subscribe(
    channel: string,
    handler: (m: Message) => void,
    opts: SubscribeOptions = {},
  ): Subscription {
    if (this.subs.has(channel)) {
      throw new RequestError("already_subscribed", `already subscribed to ${channel}`);
    }
    let readyResolve!: () => void;
    let readyReject!: (e: TickwireError) => void;
    const ready = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    // Nobody may await `ready`: an unhandled rejection must not crash Node.
    ready.catch(() => {});
    const s: SubState = {
      channel,
      handler,
      opts,
      kind: undefined,
      epoch: opts.epoch,
      lastOffset: undefined,
      next: opts.from,
      active: true,
      readyResolve,
      readyReject,
      settled: false,
    };
    this.subs.set(channel, s);
    if (this.state === "open") this.sendSubscribe(s);
    const client = this;
    return {
      channel,
      get kind() {
        return s.kind;
      },
      get epoch() {
        return s.epoch;
      },
      get lastOffset() {
        return s.lastOffset;
      },
      ready,
      async unsubscribe() {
        s.active = false;
        client.subs.delete(channel);
        if (client.state === "open") {
          await client.command({ op: "unsubscribe", channel }).catch(() => {});
        }
      },
    };
  }

  /** Publishes `data` on `channel`. Publishes are pipelined (several in flight, acknowledged
   * in order) and idempotent: each carries a msg_id (`msgId`, or one the client makes), and
   * one interrupted by a reconnect or refused as `unavailable`/`rate_limited` is sent again
   * with it, so it is stored once. */
  publish(channel: string, data: unknown, opts: { msgId?: string | null } = {}): Promise<Ack> {
    if (this.closed) return Promise.reject(new ClosedError("the client is closed"));
    const msgId =
      opts.msgId === null ? undefined : (opts.msgId ?? `${this.clientId}-${++this.msgSeq}`);
    return new Promise<Ack>((resolve, reject) => {
      const p: PendingPublish = { channel, data, msgId, resolve, reject, id: undefined, attempts: 0 };
      this.pending.push(p);
      if (this.state === "open") this.sendPublish(p);
    });
  }

  /** Closes the connection; pending publishes reject with ClosedError. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    for (const p of this.pending.splice(0)) p.reject(new ClosedError("the client was closed"));
    for (const s of this.subs.values()) {
      if (!s.settled) {
        s.settled = true;
        s.readyReject(new ClosedError("the client was closed"));
      }
    }
    this.setState("closed");
    const ws = this.ws;
    this.ws = undefined;
    if (ws && ws.readyState <= 1) {
      await new Promise<void>((resolve) => {
        ws.addEventListener("close", () => resolve());
        ws.close(1000);
        setTimeout(resolve, 1000);
      });
    }
  }

  /** The connection's state. */
  get connectionState(): ConnectionState {
    return this.state;
  }

  // ---------------------------------------------------------------------------------------

  private setState(s: ConnectionState) {
    if (this.state !== s) {
      this.state = s;
      this.opts.onState?.(s);
    }
  }

  private async token(): Promise<string | undefined> {
    const t = this.opts.token;
    if (t === undefined) return undefined;
    return typeof t === "string" ? t : await t();
  }

  private open(resolve?: () => void, reject?: (e: TickwireError) => void) {
    if (this.closed) return;
    this.setState(this.everOpened ? "reconnecting" : "connecting");
    Promise.all([this.token(), webSocketCtor(this.opts.WebSocket)]).then(
      ([token, Ctor]) => {
        if (this.closed) return;
        if (!Ctor) {
          this.closed = true;
          this.setState("closed");
          reject?.(new TickwireError("no_websocket", "no WebSocket: install the `ws` package or pass `WebSocket`"));
          return;
        }
        // Browsers cannot set headers on a WebSocket: the credential goes in the query.
        const url = token ? `${this.wsUrl}?token=${encodeURIComponent(token)}` : this.wsUrl;
        let ws: WebSocket;
        try {
          ws = new Ctor(url);
        } catch (e) {
          reject?.(new RequestError("bad_request", `cannot open ${this.wsUrl}: ${String(e)}`));
          this.closed = true;
          this.setState("closed");
          return;
        }
        this.ws = ws;
        let opened = false;
        let over = false;
        // A handshake that hangs (a stopped server) is given up and retried.
        const handshakeTimer = setTimeout(() => failed(), this.opts.connectTimeoutMs ?? 10000);
        // The connection failed or closed: once per socket, whichever event says it first
        // (Node 20's WebSocket reports a refused TCP connection with `error` and no `close`).
        const failed = () => {
          if (over) return;
          over = true;
          clearTimeout(handshakeTimer);
          if (this.ws !== ws) return;
          this.ws = undefined;
          try {
            ws.close();
          } catch {
            // not open yet
          }
          this.onDisconnected();
          if (this.closed) return;
          if (!opened && !this.everOpened && reject) {
            // The first connection: a refused credential (401 at the upgrade, which WebSocket
            // APIs hide) is final; anything else is retried.
            this.setState("reconnecting");
            this.probeRefusal(token).then((refused) => {
              if (this.closed) return;
              if (refused) {
                this.closed = true;
                this.setState("closed");
                reject(refused);
              } else {
                this.scheduleReconnect(resolve, reject);
              }
            });
            return;
          }
          // A reconnect refused: say why (an expired static token, say), and keep trying (a
          // token function may give a good one next time).
          if (!opened && this.opts.onError) {
            void this.probeRefusal(token).then((refused) => refused && this.opts.onError?.(refused));
          }
          this.scheduleReconnect(resolve, reject);
        };
        ws.addEventListener("open", () => {
          if (over) return;
          clearTimeout(handshakeTimer);
          opened = true;
          this.everOpened = true;
          this.delay = this.opts.reconnectDelayMs ?? 100;
          this.setState("open");
          // Subscriptions first, in the order they were made, then unacknowledged publishes
          // in theirs: the server answers publishes in order.
          for (const s of this.subs.values()) this.sendSubscribe(s);
          for (const p of this.pending) this.sendPublish(p);
          resolve?.();
        });
        ws.addEventListener("message", (ev: MessageEvent) => {
          if (this.ws === ws) this.onFrame(String(ev.data));
        });
        ws.addEventListener("close", () => failed());
        ws.addEventListener("error", () => failed());
      },
      (e: unknown) => {
        const err = new AuthError("unauthorized", `the token function failed: ${String(e)}`);
        reject?.(err);
        this.opts.onError?.(err);
      },
    );
  }

  /** After a failed upgrade: was it the credential? (WebSocket APIs hide the status.) */
  private async probeRefusal(token: string | undefined): Promise<TickwireError | undefined> {
    if (typeof fetch !== "function") return undefined;
    try {
      // Any read checks the credential before anything else; 401 means it was refused.
      const http = this.wsUrl.replace(/^ws/, "http").replace(/\/v1\/ws$/, "/v1/latest/chat.probe");
      const r = await fetch(token ? `${http}?token=${encodeURIComponent(token)}` : http);
      if (r.status === 401) {
        const body = (await r.json().catch(() => ({}))) as { code?: string; detail?: string };
        return new AuthError(body.code ?? "unauthorized", body.detail ?? "the credential was refused");
      }
    } catch {
      // The server is not reachable: the reconnect loop handles it.
    }
    return undefined;
  }

  private scheduleReconnect(resolve?: () => void, reject?: (e: TickwireError) => void) {
    if (this.closed) return;
    this.setState("reconnecting");
    const d = this.delay;
    this.delay = Math.min(this.delay * 2, this.opts.maxReconnectDelayMs ?? 5000);
    this.reconnectTimer = setTimeout(() => this.open(resolve, reject), d);
  }

  /** The connection dropped: every in-flight command is void; publishes stay pending. */
  private onDisconnected() {
    for (const p of this.pending) p.id = undefined;
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) {
      w({ id: null, ok: false, error: { code: "connection_closed", message: "the connection dropped" } });
    }
  }

  private send(obj: Record<string, unknown>) {
    this.ws?.send(JSON.stringify(obj));
  }

  private command(cmd: Record<string, unknown>): Promise<Reply> {
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, (r) => (r.ok ? resolve(r) : reject(errorFor(r.error!.code, r.error!.message))));
      this.send({ id, ...cmd });
    });
  }

  private sendSubscribe(s: SubState) {
    const id = this.nextId++;
    const cmd: Record<string, unknown> = { id, op: "subscribe", channel: s.channel };
    if (s.kind !== "state" && s.next !== undefined) {
      cmd.from = s.next;
      if (s.epoch) cmd.epoch = s.epoch;
    } else if (s.kind === undefined && s.opts.last !== undefined) {
      cmd.last = s.opts.last;
    } else if (s.kind === undefined && s.opts.since !== undefined) {
      cmd.since = s.opts.since;
    }
    if (s.opts.depth !== undefined) cmd.depth = s.opts.depth;
    this.waiting.set(id, (r) => this.onSubscribed(s, r));
    this.send(cmd);
  }

  private onSubscribed(s: SubState, r: Reply) {
    if (!s.active) return;
    if (!r.ok) {
      if (r.error?.code === "connection_closed") return; // resubscribed on reconnect
      const err = errorFor(r.error?.code ?? "unknown", r.error?.message ?? "refused");
      s.active = false;
      this.subs.delete(s.channel);
      if (!s.settled) {
        s.settled = true;
        s.readyReject(err);
      }
      (s.opts.onError ?? this.opts.onError)?.(err);
      return;
    }
    s.kind = r.class;
    if (r.class === "stream") {
      if (r.epoch) s.epoch = r.epoch;
      // Without `from`, delivery starts here: a reconnect resumes from it, not from "now".
      if (s.next === undefined && r.offset !== undefined) s.next = r.offset;
    }
    if (r.retention_gap) {
      s.opts.onRetentionGap?.({
        requested: r.retention_gap.requested,
        firstRetained: r.retention_gap.first_retained,
      });
    }
    if (!s.settled) {
      s.settled = true;
      s.readyResolve();
    }
  }

  private sendPublish(p: PendingPublish) {
    const id = this.nextId++;
    p.id = id;
    p.attempts++;
    const cmd: Record<string, unknown> = { id, op: "publish", channel: p.channel, data: p.data };
    if (p.msgId !== undefined) cmd.msg_id = p.msgId;
    this.waiting.set(id, (r) => this.onPublished(p, id, r));
    this.send(cmd);
  }

  private onPublished(p: PendingPublish, id: number, r: Reply) {
    if (p.id !== id) return;
    if (r.ok) {
      this.removePending(p);
      p.resolve({ channel: p.channel, offset: r.offset!, duplicate: !!r.duplicate, msgId: p.msgId });
      return;
    }
    const code = r.error?.code ?? "unknown";
    if (code === "connection_closed") return; // sent again on reconnect
    if (RETRYABLE.has(code) && p.msgId !== undefined && !this.closed) {
      const err = errorFor(code, r.error!.message);
      const wait = err instanceof RateLimitedError ? (err.retryAfterMs ?? 100) : 200;
      p.id = undefined;
      setTimeout(() => {
        if (this.state === "open" && p.id === undefined && this.pending.includes(p)) this.sendPublish(p);
      }, wait);
      return;
    }
    this.removePending(p);
    p.reject(errorFor(code, r.error?.message ?? "refused"));
  }

  private removePending(p: PendingPublish) {
    const i = this.pending.indexOf(p);
    if (i >= 0) this.pending.splice(i, 1);
  }

  private onFrame(text: string) {
    if (text.startsWith('{"ch":')) {
      this.onPush(text);
      return;
    }
    let r: Reply;
    try {
      r = JSON.parse(text) as Reply;
    } catch {
      return;
    }
    if (r.op === "disconnect") {
      // Resume points: where each stream channel continues on the next connection.
      for (const [ch, from] of Object.entries(r.resume ?? {})) {
        const s = this.subs.get(ch);
        if (s && (s.next === undefined || from > s.next)) s.next = from;
      }
      return;
    }
    if (r.id === null || r.id === undefined) {
      if (r.error?.code === "token_expired") {
        this.refresh();
      } else if (r.error) {
        this.opts.onError?.(errorFor(r.error.code, r.error.message));
      }
      return;
    }
    const w = this.waiting.get(r.id);
    if (w) {
      this.waiting.delete(r.id);
      w(r);
    }
  }

  private refresh() {
    if (typeof this.opts.token !== "function") {
      this.opts.onError?.(new AuthError("token_expired", "the token expired and no token function was given"));
      return;
    }
    this.token()
      .then((token) => this.command({ op: "refresh", token }))
      .catch((e: unknown) =>
        this.opts.onError?.(e instanceof TickwireError ? e : new AuthError("token_expired", String(e))),
      );
  }

  private onPush(text: string) {
    let m: { ch: string; offset: number; ts: number; snapshot?: boolean; data: unknown };
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    const s = this.subs.get(m.ch);
    if (!s || !s.active) return;
    if (s.kind === "state") {
      // A resubscribe sends the current value again: skip it if it was delivered already.
      // (Offsets are not compared otherwise: a recreated stream starts again at 0.)
      if (m.snapshot && m.offset === s.lastOffset) return;
    } else if (s.lastOffset !== undefined && m.offset <= s.lastOffset) {
      // A resume never repeats what was delivered; this guards against anything that would.
      return;
    }
    s.lastOffset = m.offset;
    if (s.kind !== "state") s.next = m.offset + 1;
    s.handler({
      channel: m.ch,
      offset: m.offset,
      ts: m.ts,
      snapshot: !!m.snapshot,
      data: m.data,
      rawData: rawData(text),
    });
  }
}

/** The data member's text of a push: the server writes it last, after fields that cannot
 * contain `,"data":` (a channel name, numbers, a boolean). */
export function rawData(frame: string): string {
  const i = frame.indexOf(',"data":');
  return i < 0 ? "null" : frame.slice(i + 8, frame.length - 1);
}

/** The WebSocket to use: the one given, the global one (browsers, Node 22+), else the `ws`
 * package's (Node 18 and 20), loaded only then so that bundlers for browsers never see it. */
async function webSocketCtor(given: WebSocketCtor | undefined): Promise<WebSocketCtor | undefined> {
  if (given) return given;
  const g = (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (g) return g;
  try {
    const name = "ws";
    const m = (await import(/* @vite-ignore */ /* webpackIgnore: true */ name)) as {
      WebSocket?: WebSocketCtor;
      default?: WebSocketCtor;
    };
    return m.WebSocket ?? m.default;
  } catch {
    return undefined;
  }
}

function toWsUrl(url: string): string {
  const u = url.replace(/\/+$/, "");
  if (/^wss?:\/\//.test(u)) return u.endsWith("/v1/ws") ? u : `${u}/v1/ws`;
  if (/^https?:\/\//.test(u)) return `${u.replace(/^http/, "ws")}/v1/ws`;
  throw new RequestError("bad_request", `url ${url}: give http(s):// or ws(s)://`);
}

function randomId(): string {
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  const bytes = new Uint8Array(8);
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return "js-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -------------------------------------------------------------------------------------------
// Order books (docs/books.md): a snapshot, then deltas with sequence numbers and a checksum.

/** One price level: price and size as exact decimal strings, as last sent. */
export type Level = [price: string, size: string];

/** A `book.<SYM>` value: a snapshot (`snapshot: true`) or a delta (`prev` is the sequence
 * number of the book it applies to). */
export interface BookValue {
  snapshot?: boolean;
  seq: number;
  prev?: number;
  checksum: number;
  depth?: number;
  bids: Level[];
  asks: Level[];
}

/** Levels per side the checksum covers. */
export const CHECKSUM_LEVELS = 10;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32 (IEEE 802.3, zlib's) of an ASCII string. */
export function crc32(text: string): number {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function splitDecimal(d: string): { neg: boolean; int: string; frac: string } {
  const neg = d.startsWith("-");
  const [i, f = ""] = (neg ? d.slice(1) : d).split(".");
  const int = i.replace(/^0+/, "");
  const frac = f.replace(/0+$/, "");
  // -0 is 0.
  return { neg: neg && (int !== "" || frac !== ""), int, frac };
}

/** Compares two decimal strings exactly (no floats): negative, zero or positive. */
export function compareDecimal(a: string, b: string): number {
  const x = splitDecimal(a);
  const y = splitDecimal(b);
  if (x.neg !== y.neg) return x.neg ? -1 : 1;
  const sign = x.neg ? -1 : 1;
  if (x.int.length !== y.int.length) return sign * (x.int.length - y.int.length);
  if (x.int !== y.int) return sign * (x.int < y.int ? -1 : 1);
  const n = Math.max(x.frac.length, y.frac.length);
  const fx = x.frac.padEnd(n, "0");
  const fy = y.frac.padEnd(n, "0");
  return fx === fy ? 0 : sign * (fx < fy ? -1 : 1);
}

/** The key of a price level: "1.10" and "1.1" are one level. */
function levelKey(price: string): string {
  const d = splitDecimal(price);
  return `${d.neg ? "-" : ""}${d.int}.${d.frac}`;
}

function isZero(size: string): boolean {
  const d = splitDecimal(size);
  return d.int === "" && d.frac === "";
}

/** A decimal's text in the checksum: the point removed, then leading zeros. */
function checksumText(d: string): string {
  return d.replace(".", "").replace(/^0+/, "");
}

/** An order book kept from a book channel's snapshot and deltas, checked against each value's
 * sequence number and checksum. */
export class OrderBook {
  readonly symbol: string;
  /** The sequence number of the book held. */
  seq = 0;
  /** False until a snapshot, and after a gap or a checksum mismatch. */
  known = false;
  /** Offset of the last message applied (set by `watchBook`). */
  offset: number | undefined;
  private readonly bidMap = new Map<string, Level>();
  private readonly askMap = new Map<string, Level>();
  private sorted: { bids: Level[]; asks: Level[] } | undefined;

  constructor(symbol: string) {
    this.symbol = symbol;
  }

  /** Applies one value: "ok", "gap" (a delta that does not follow the book held) or
   * "mismatch" (the checksum differs). After "gap" or "mismatch" the book is unknown until
   * the next snapshot: subscribe again. */
  apply(v: BookValue): "ok" | "gap" | "mismatch" {
    if (v.snapshot) {
      this.bidMap.clear();
      this.askMap.clear();
    } else if (!this.known || v.prev !== this.seq) {
      this.known = false;
      return "gap";
    }
    for (const [side, levels] of [
      [this.bidMap, v.bids],
      [this.askMap, v.asks],
    ] as const) {
      for (const [price, size] of levels ?? []) {
        if (isZero(size)) side.delete(levelKey(price));
        else side.set(levelKey(price), [price, size]);
      }
    }
    this.sorted = undefined;
    this.seq = v.seq;
    this.known = true;
    if (this.checksum() !== v.checksum) {
      this.known = false;
      return "mismatch";
    }
    return "ok";
  }

  private levels(): { bids: Level[]; asks: Level[] } {
    if (!this.sorted) {
      this.sorted = {
        bids: [...this.bidMap.values()].sort((a, b) => compareDecimal(b[0], a[0])),
        asks: [...this.askMap.values()].sort((a, b) => compareDecimal(a[0], b[0])),
      };
    }
    return this.sorted;
  }

  /** Bids, best (highest) first. */
  get bids(): Level[] {
    return this.levels().bids.map((l) => [l[0], l[1]] as Level);
  }

  /** Asks, best (lowest) first. */
  get asks(): Level[] {
    return this.levels().asks.map((l) => [l[0], l[1]] as Level);
  }

  bestBid(): Level | undefined {
    return this.levels().bids[0];
  }

  bestAsk(): Level | undefined {
    return this.levels().asks[0];
  }

  /** CRC32 of the best 10 asks then the best 10 bids (docs/books.md, "The checksum"). */
  checksum(): number {
    const { bids, asks } = this.levels();
    let text = "";
    for (const [p, s] of asks.slice(0, CHECKSUM_LEVELS)) text += checksumText(p) + checksumText(s);
    for (const [p, s] of bids.slice(0, CHECKSUM_LEVELS)) text += checksumText(p) + checksumText(s);
    return crc32(text);
  }
}

/** A book being watched. */
export interface BookWatch {
  readonly book: OrderBook;
  /** Resolves when the first subscription is accepted. */
  readonly ready: Promise<void>;
  /** How many times the book was fetched again after a gap or a mismatch. */
  readonly resyncs: number;
  unsubscribe(): Promise<void>;
}

/** Keeps `symbol`'s order book from `book.<SYM>` and calls `onBook` after every value applied.
 * A gap or a checksum mismatch subscribes again for a fresh snapshot (`onResync` is told);
 * deltas are ignored until it arrives. A reconnect gets a fresh snapshot too. */
export function watchBook(
  client: TickwireClient,
  symbol: string,
  onBook: (book: OrderBook) => void,
  opts: {
    onError?: (e: TickwireError) => void;
    onResync?: (reason: "gap" | "mismatch") => void;
    /** The best `depth` levels a side only (absent: every level the channel keeps). */
    depth?: number;
  } = {},
): BookWatch {
  const channel = `book.${symbol}`;
  const book = new OrderBook(symbol);
  let resyncs = 0;
  let stopped = false;
  let resyncing = false;
  const handler = (m: Message) => {
    const v = m.data as BookValue;
    if (resyncing && !v.snapshot) return;
    const r = book.apply(v);
    book.offset = m.offset;
    if (r === "ok") {
      resyncing = false;
      onBook(book);
      return;
    }
    resyncs++;
    resyncing = true;
    opts.onResync?.(r);
    const old = sub;
    void old.unsubscribe().then(() => {
      if (!stopped) sub = client.subscribe(channel, handler, { onError: opts.onError, depth: opts.depth });
    });
  };
  let sub = client.subscribe(channel, handler, { onError: opts.onError, depth: opts.depth });
  return {
    book,
    ready: sub.ready,
    get resyncs() {
      return resyncs;
    },
    async unsubscribe() {
      stopped = true;
      await sub.unsubscribe();
    },
  };
}
