"""The asyncio client (docs/protocol.md is the wire protocol).

One WebSocket carries every subscription and publish. When it drops, the client reconnects
with backoff, subscribes each stream channel again from the offset after the last message it
delivered (with the stream's epoch), so nothing is missed and nothing delivered twice, and
sends every publish that was not acknowledged again with the same msg_id, so the server stores
it once.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidHandshake

from .book import OrderBook, Result
from .errors import (
    AuthError,
    ClosedError,
    RateLimitedError,
    RequestError,
    TickwireError,
    error_for,
)

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]], None]

_RETRYABLE = {"unavailable", "rate_limited"}
_CLOSED = object()


@dataclass(frozen=True)
class Message:
    """What a subscription delivers."""

    channel: str
    #: Position in the namespace's stream; grows within a channel.
    offset: int
    #: Server append time, Unix milliseconds.
    ts: int
    #: The current value of a state channel, sent on subscribe.
    snapshot: bool
    #: The data, parsed (prices are decimal strings and stay strings).
    data: Any
    #: The data's JSON text, byte for byte as published.
    raw_data: str


@dataclass(frozen=True)
class Ack:
    """A publish acknowledged: the message is durable at ``offset``."""

    channel: str
    offset: int
    #: The msg_id was stored before (an earlier attempt of this publish, or another).
    duplicate: bool
    msg_id: Optional[str]


def raw_data(frame: str) -> str:
    """The data member's text of a push: the server writes it last, after fields that cannot
    contain ``,"data":`` (a channel name, numbers, a boolean)."""
    i = frame.find(',"data":')
    return "null" if i < 0 else frame[i + 8 : len(frame) - 1]


def _ws_url(url: str) -> str:
    u = url.rstrip("/")
    if u.startswith(("ws://", "wss://")):
        return u if u.endswith("/v1/ws") else u + "/v1/ws"
    if u.startswith(("http://", "https://")):
        return "ws" + u[4:] + "/v1/ws"
    raise RequestError("bad_request", f"url {url}: give http(s):// or ws(s)://")


class Subscription:
    """A live subscription: iterate it (``async for m in sub``) or give ``on_message``.
    An error that ends it (refused on a reconnect, say) is raised by the iteration."""

    def __init__(self, client: "Client", channel: str, from_: Optional[int], epoch: Optional[str],
                 on_message: Optional[Callable[[Message], Any]],
                 on_retention_gap: Optional[Callable[[int, int], Any]]) -> None:
        self._client = client
        self.channel = channel
        #: "state" or "stream", once the server answered.
        self.kind: Optional[str] = None
        #: The stream's epoch (stream channels).
        self.epoch = epoch
        #: The offset of the last message delivered.
        self.last_offset: Optional[int] = None
        # Where a stream subscription resumes: after the last delivered, or where delivery began.
        self._next = from_
        self._last: Optional[int] = None
        self._since: Optional[int] = None
        self._depth: Optional[int] = None
        self._on_message = on_message
        self._on_retention_gap = on_retention_gap
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self._ready: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self.active = True
        #: The error that ended the subscription, if one did.
        self.error: Optional[TickwireError] = None

    def _deliver(self, m: Message) -> None:
        if self._on_message is not None:
            r = self._on_message(m)
            if inspect.isawaitable(r):
                asyncio.ensure_future(r)
        else:
            self._queue.put_nowait(m)

    def _end(self, err: Optional[TickwireError]) -> None:
        self.active = False
        self.error = err
        if not self._ready.done():
            if err is not None:
                self._ready.set_exception(err)
            else:
                self._ready.set_exception(ClosedError("the subscription ended"))
            self._ready.exception()  # retrieved: nobody need await it
        self._queue.put_nowait(err if err is not None else _CLOSED)

    async def get(self, timeout: Optional[float] = None) -> Message:
        """The next message (raises the error that ended the subscription, or
        ``asyncio.TimeoutError``)."""
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if item is _CLOSED:
            self._queue.put_nowait(item)
            raise ClosedError("the subscription ended")
        if isinstance(item, TickwireError):
            self._queue.put_nowait(item)
            raise item
        return item

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.get()
        except ClosedError:
            raise StopAsyncIteration

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        self._end(None)
        self._client._subs.pop(self.channel, None)
        if self._client.state == "open":
            try:
                await self._client._command({"op": "unsubscribe", "channel": self.channel})
            except TickwireError:
                pass


class _Pending:
    __slots__ = ("channel", "data", "msg_id", "future", "id", "attempts")

    def __init__(self, channel: str, data: Any, msg_id: Optional[str], future: "asyncio.Future[Ack]") -> None:
        self.channel = channel
        self.data = data
        self.msg_id = msg_id
        self.future = future
        self.id: Optional[int] = None
        self.attempts = 0


class Client:
    """``Client(url, token)``; ``await connect()`` (or ``async with``), then subscribe and
    publish. ``url`` is ``http(s)://host:port`` or the WebSocket URL. ``token`` is an API
    key, a JWT, or a function (sync or async) returning a fresh one, called at every connect
    and when the server says the token expired."""

    def __init__(self, url: str, token: TokenSource = None, *, reconnect_delay: float = 0.1,
                 max_reconnect_delay: float = 5.0, connect_timeout: float = 10.0,
                 on_error: Optional[Callable[[TickwireError], Any]] = None,
                 on_state: Optional[Callable[[str], Any]] = None) -> None:
        self._url = _ws_url(url)
        self._token_source = token
        self._delay0 = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._connect_timeout = connect_timeout
        self._on_error = on_error
        self._on_state = on_state
        self.state = "closed"
        self._subs: Dict[str, Subscription] = {}
        self._pending: List[_Pending] = []
        self._waiting: Dict[int, Callable[[dict], None]] = {}
        self._next_id = 1
        self._client_id = "py-" + secrets.token_hex(8)
        self._msg_seq = 0
        self._closed = False
        self._ever_opened = False
        self._task: Optional[asyncio.Task] = None
        self._connected: Optional[asyncio.Future] = None
        self._ws: Any = None
        self._out: Optional[asyncio.Queue] = None

    # -- public -------------------------------------------------------------------------

    async def connect(self) -> "Client":
        """Opens the connection; returns once it is open. A refused credential raises
        AuthError (no retry); a server that cannot be reached is retried."""
        if self._closed:
            raise ClosedError()
        if self._task is None:
            self._connected = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run())
        await asyncio.shield(self._connected)
        return self

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def subscribe(self, channel: str, on_message: Optional[Callable[[Message], Any]] = None, *,
                        from_: Optional[int] = None, epoch: Optional[str] = None,
                        last: Optional[int] = None, since: Optional[int] = None,
                        depth: Optional[int] = None,
                        on_retention_gap: Optional[Callable[[int, int], Any]] = None,
                        wait: bool = True) -> Subscription:
        """Subscribes to ``channel``; each message is delivered once, in order, across
        reconnects. Returns once the server accepted (raises its typed error if it refused),
        unless ``wait=False``. Stream channels: ``from_`` (and ``epoch``) replay from an
        offset; or ``last`` (the newest N messages) or ``since`` (Unix ms), then live. Book
        channels: ``depth`` serves the best N levels a side only (docs/books.md)."""
        if self._closed:
            raise ClosedError()
        if channel in self._subs:
            raise RequestError("already_subscribed", f"already subscribed to {channel}")
        s = Subscription(self, channel, from_, epoch, on_message, on_retention_gap)
        s._last, s._since, s._depth = last, since, depth
        self._subs[channel] = s
        if self.state == "open":
            self._send_subscribe(s)
        if wait:
            await s._ready
        return s

    async def publish(self, channel: str, data: Any, *, msg_id: Union[str, None, bool] = True) -> Ack:
        """Publishes ``data`` on ``channel`` and returns its Ack once it is durable.
        Publishes are pipelined (run many at once, e.g. with ``asyncio.gather``: they are
        sent and acknowledged in order) and idempotent: each carries a msg_id (``msg_id``, or
        one the client makes; ``msg_id=None`` sends none), and one interrupted by a reconnect
        or refused as unavailable / rate_limited is sent again with it, so it is stored once."""
        if self._closed:
            raise ClosedError()
        if msg_id is True:
            self._msg_seq += 1
            mid: Optional[str] = f"{self._client_id}-{self._msg_seq}"
        else:
            mid = msg_id or None
        fut: "asyncio.Future[Ack]" = asyncio.get_running_loop().create_future()
        p = _Pending(channel, data, mid, fut)
        self._pending.append(p)
        if self.state == "open":
            self._send_publish(p)
        return await fut

    async def close(self) -> None:
        """Closes the connection; pending publishes raise ClosedError."""
        self._closed = True
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(ClosedError())
        self._pending.clear()
        for s in list(self._subs.values()):
            s._end(None)
        self._subs.clear()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(ClosedError())
            self._connected.exception()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._set_state("closed")

    # -- connection ---------------------------------------------------------------------

    def _set_state(self, s: str) -> None:
        if self.state != s:
            self.state = s
            if self._on_state is not None:
                self._on_state(s)

    async def _token(self) -> Optional[str]:
        t = self._token_source
        if t is None or isinstance(t, str):
            return t
        r = t()
        if inspect.isawaitable(r):
            r = await r
        return r

    def _fail_connect(self, err: TickwireError) -> None:
        self._closed = True
        self._set_state("closed")
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(err)
        self._pending.clear()
        for s in list(self._subs.values()):
            s._end(err)
        self._subs.clear()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(err)

    async def _run(self) -> None:
        delay = self._delay0
        while not self._closed:
            self._set_state("reconnecting" if self._ever_opened else "connecting")
            try:
                token = await self._token()
            except Exception as e:  # the token function failed
                err = AuthError("unauthorized", f"the token function failed: {e}")
                if not self._ever_opened:
                    self._fail_connect(err)
                    return
                self._report(err)
                token = None
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                ws = await ws_connect(self._url, additional_headers=headers, open_timeout=self._connect_timeout,
                                      max_size=None, close_timeout=2)
            except InvalidStatus as e:
                status = e.response.status_code
                if status in (401, 403):
                    err = _refusal(status, e.response.body)
                    if not self._ever_opened:
                        self._fail_connect(err)
                        return
                    self._report(err)
            except (OSError, asyncio.TimeoutError, InvalidHandshake):
                pass
            else:
                await self._serve(ws)
                delay = self._delay0
            if self._closed:
                return
            self._set_state("reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def _serve(self, ws: Any) -> None:
        self._ws = ws
        self._ever_opened = True
        out: asyncio.Queue = asyncio.Queue()
        self._out = out

        async def sender() -> None:
            try:
                while True:
                    text = await out.get()
                    await ws.send(text)
            except ConnectionClosed:
                pass  # the reader sees it too: everything unanswered is sent again

        send_task = asyncio.create_task(sender())
        self._set_state("open")
        # Subscriptions first, in the order they were made, then unacknowledged publishes in
        # theirs: the server answers publishes in order.
        for s in list(self._subs.values()):
            self._send_subscribe(s)
        for p in list(self._pending):
            self._send_publish(p)
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            send_task.cancel()
            self._ws = None
            self._out = None
            if self.state == "open":
                self._set_state("reconnecting")
            self._on_disconnected()
            try:
                await asyncio.wait_for(ws.close(), 1)
            except Exception:
                pass

    def _on_disconnected(self) -> None:
        """Every in-flight command is void; publishes stay pending and are sent again."""
        for p in self._pending:
            p.id = None
        waiting = list(self._waiting.values())
        self._waiting.clear()
        for w in waiting:
            w({"id": None, "ok": False, "error": {"code": "connection_closed", "message": "the connection dropped"}})

    def _report(self, err: TickwireError) -> None:
        if self._on_error is not None:
            self._on_error(err)

    def _send(self, obj: Dict[str, Any]) -> None:
        if self._out is not None:
            self._out.put_nowait(json.dumps(obj, separators=(",", ":")))

    def _command(self, cmd: Dict[str, Any]) -> "asyncio.Future[dict]":
        fut: "asyncio.Future[dict]" = asyncio.get_running_loop().create_future()
        cid = self._next_id
        self._next_id += 1

        def answer(r: dict) -> None:
            if fut.done():
                return
            if r.get("ok"):
                fut.set_result(r)
            else:
                e = r.get("error") or {}
                fut.set_exception(error_for(e.get("code", "unknown"), e.get("message", "refused")))

        self._waiting[cid] = answer
        self._send({"id": cid, **cmd})
        return fut

    def _send_subscribe(self, s: Subscription) -> None:
        cid = self._next_id
        self._next_id += 1
        cmd: Dict[str, Any] = {"id": cid, "op": "subscribe", "channel": s.channel}
        if s.kind != "state" and s._next is not None:
            cmd["from"] = s._next
            if s.epoch:
                cmd["epoch"] = s.epoch
        elif s.kind is None and s._last is not None:
            cmd["last"] = s._last
        elif s.kind is None and s._since is not None:
            cmd["since"] = s._since
        if s._depth is not None:
            cmd["depth"] = s._depth
        self._waiting[cid] = lambda r: self._on_subscribed(s, r)
        self._send(cmd)

    def _on_subscribed(self, s: Subscription, r: dict) -> None:
        if not s.active:
            return
        if not r.get("ok"):
            e = r.get("error") or {}
            if e.get("code") == "connection_closed":
                return  # subscribed again on reconnect
            err = error_for(e.get("code", "unknown"), e.get("message", "refused"))
            self._subs.pop(s.channel, None)
            s._end(err)
            if s._ready.done():  # a refusal on a reconnect: nobody awaits it any more
                self._report(err)
            return
        s.kind = r.get("class")
        if s.kind == "stream":
            if r.get("epoch"):
                s.epoch = r["epoch"]
            # Without from_, delivery starts here: a reconnect resumes from it, not from "now".
            if s._next is None and r.get("offset") is not None:
                s._next = r["offset"]
        gap = r.get("retention_gap")
        if gap and s._on_retention_gap is not None:
            s._on_retention_gap(gap["requested"], gap["first_retained"])
        if not s._ready.done():
            s._ready.set_result(None)

    def _send_publish(self, p: _Pending) -> None:
        cid = self._next_id
        self._next_id += 1
        p.id = cid
        p.attempts += 1
        cmd: Dict[str, Any] = {"id": cid, "op": "publish", "channel": p.channel, "data": p.data}
        if p.msg_id is not None:
            cmd["msg_id"] = p.msg_id
        self._waiting[cid] = lambda r: self._on_published(p, cid, r)
        self._send(cmd)

    def _on_published(self, p: _Pending, cid: int, r: dict) -> None:
        if p.id != cid or p.future.done():
            return
        if r.get("ok"):
            self._remove_pending(p)
            p.future.set_result(Ack(p.channel, r["offset"], bool(r.get("duplicate")), p.msg_id))
            return
        e = r.get("error") or {}
        code = e.get("code", "unknown")
        if code == "connection_closed":
            return  # sent again on reconnect
        err = error_for(code, e.get("message", "refused"))
        if code in _RETRYABLE and p.msg_id is not None and not self._closed:
            wait = (err.retry_after_ms or 100) / 1000 if isinstance(err, RateLimitedError) else 0.2
            p.id = None

            def again() -> None:
                if self.state == "open" and p.id is None and p in self._pending:
                    self._send_publish(p)

            asyncio.get_running_loop().call_later(wait, again)
            return
        self._remove_pending(p)
        p.future.set_exception(err)

    def _remove_pending(self, p: _Pending) -> None:
        try:
            self._pending.remove(p)
        except ValueError:
            pass

    def _on_frame(self, text: str) -> None:
        if text.startswith('{"ch":'):
            self._on_push(text)
            return
        try:
            r = json.loads(text)
        except ValueError:
            return
        if r.get("op") == "disconnect":
            # Resume points: where each stream channel continues on the next connection.
            for ch, frm in (r.get("resume") or {}).items():
                s = self._subs.get(ch)
                if s is not None and (s._next is None or frm > s._next):
                    s._next = frm
            return
        rid = r.get("id")
        if rid is None:
            e = r.get("error") or {}
            if e.get("code") == "token_expired":
                asyncio.ensure_future(self._refresh())
            elif e:
                self._report(error_for(e.get("code", "unknown"), e.get("message", "")))
            return
        w = self._waiting.pop(rid, None)
        if w is not None:
            w(r)

    async def _refresh(self) -> None:
        if not callable(self._token_source):
            self._report(AuthError("token_expired", "the token expired and no token function was given"))
            return
        try:
            token = await self._token()
            await self._command({"op": "refresh", "token": token})
        except TickwireError as e:
            self._report(e)
        except Exception as e:
            self._report(AuthError("token_expired", str(e)))

    def _on_push(self, text: str) -> None:
        try:
            m = json.loads(text)
        except ValueError:
            return
        s = self._subs.get(m["ch"])
        if s is None or not s.active:
            return
        off = m["offset"]
        if s.kind == "state":
            # A resubscribe sends the current value again: skip it if it was delivered.
            if m.get("snapshot") and off == s.last_offset:
                return
        elif s.last_offset is not None and off <= s.last_offset:
            # A resume never repeats what was delivered; this guards against anything that would.
            return
        s.last_offset = off
        if s.kind != "state":
            s._next = off + 1
        s._deliver(Message(m["ch"], off, m.get("ts", 0), bool(m.get("snapshot")), m.get("data"), raw_data(text)))


def _refusal(status: int, body: Optional[bytes]) -> AuthError:
    code, detail = ("unauthorized" if status == 401 else "forbidden"), "the credential was refused"
    try:
        j = json.loads(body or b"{}")
        code = j.get("code", code)
        detail = j.get("detail", detail)
    except ValueError:
        pass
    return AuthError(code, detail)


class BookWatch:
    """A book kept by ``watch_book``: ``book`` is current after each ``on_book``."""

    def __init__(self, client: Client, symbol: str, on_book: Optional[Callable[[OrderBook], Any]],
                 on_resync: Optional[Callable[[Result], Any]], depth: Optional[int] = None) -> None:
        self.client = client
        self.depth = depth
        self.channel = f"book.{symbol}"
        self.book = OrderBook(symbol)
        #: How many times the book was fetched again after a gap or a mismatch.
        self.resyncs = 0
        self._on_book = on_book
        self._on_resync = on_resync
        self._resyncing = False
        self._stopped = False
        self._sub: Optional[Subscription] = None
        self._changed = asyncio.Event()

    def _handle(self, m: Message) -> None:
        v = m.data
        if self._resyncing and not v.get("snapshot"):
            return  # the old subscription's deltas: wait for the fresh snapshot
        r = self.book.apply(v)
        self.book.offset = m.offset
        if r == "ok":
            self._resyncing = False
            if self._on_book is not None:
                self._on_book(self.book)
            self._changed.set()
            return
        self.resyncs += 1
        self._resyncing = True
        if self._on_resync is not None:
            self._on_resync(r)
        asyncio.ensure_future(self._resubscribe())

    async def _resubscribe(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if not self._stopped:
            self._sub = await self.client.subscribe(self.channel, self._handle, depth=self.depth,
                                                    wait=False)

    async def wait_until(self, cond: Callable[[OrderBook], bool], timeout: float = 10.0) -> OrderBook:
        """Waits until ``cond(book)`` holds for a book that passed its checksum."""
        async def loop() -> OrderBook:
            while not (self.book.known and cond(self.book)):
                self._changed.clear()
                await self._changed.wait()
            return self.book
        return await asyncio.wait_for(loop(), timeout)

    async def unsubscribe(self) -> None:
        self._stopped = True
        if self._sub is not None:
            await self._sub.unsubscribe()


async def watch_book(client: Client, symbol: str, on_book: Optional[Callable[[OrderBook], Any]] = None, *,
                     on_resync: Optional[Callable[[Result], Any]] = None,
                     depth: Optional[int] = None) -> BookWatch:
    """Keeps ``symbol``'s order book from ``book.<SYM>``: a snapshot, then deltas, each
    checked (sequence and checksum). A gap or a mismatch subscribes again for a fresh
    snapshot (``on_resync`` is told); a reconnect gets a fresh snapshot too. ``depth``: the
    best N levels a side only."""
    w = BookWatch(client, symbol, on_book, on_resync, depth)
    w._sub = await client.subscribe(w.channel, w._handle, depth=depth)
    return w


__all__ = ["Client", "Message", "Ack", "Subscription", "BookWatch", "watch_book", "raw_data"]
