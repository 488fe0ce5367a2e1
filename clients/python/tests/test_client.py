"""The SDK against the real server (scripts/test-clients.sh): every claim of the README."""

import asyncio
import threading

import pytest

from server import API_KEY, jwt

import tickwire
from tickwire import (
    AuthError,
    Client,
    EpochMismatchError,
    OffsetOutOfRangeError,
    OrderBook,
    RequestError,
    watch_book,
)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond, timeout=10.0, what="condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_connects_with_an_api_key_or_a_jwt_and_a_bad_token_is_an_auth_error(srv):
    async def main():
        async with Client(srv.url, API_KEY) as a:
            assert a.state == "open"
        async with Client(srv.url, lambda: jwt("42")) as u:
            ack = await u.publish("chat.lobby", {"text": "hello"})
            assert isinstance(ack.offset, int)
        bad = Client(srv.url, "not-a-valid-token")
        with pytest.raises(AuthError) as e:
            await bad.connect()
        assert e.value.code == "unauthorized"
        assert bad.state == "closed"
        expired = Client(srv.url, jwt("42", ttl=-3600))
        with pytest.raises(AuthError):
            await expired.connect()
    run(main())


def test_state_channel_snapshot_then_updates_with_exact_decimals(srv):
    async def main():
        px = "1.0841234567890123456789012345"
        srv.publish({"channel": "quotes.PYUSD", "data": {"bid": px, "ask": "1.0843"}})
        async with Client(srv.url, API_KEY) as c:
            sub = await c.subscribe("quotes.PYUSD")
            assert sub.kind == "state"
            first = await sub.get(5)
            assert first.snapshot is True
            assert first.data["bid"] == px
            assert f'"bid":"{px}"' in first.raw_data
            await c.publish("quotes.PYUSD", {"bid": "1.0850", "ask": "1.0852"})
            second = await sub.get(5)
            assert second.snapshot is False
            assert second.data["bid"] == "1.0850"
            assert second.offset > first.offset
    run(main())


def test_stream_channel_history_from_an_offset_then_live_raw_data_keeps_big_numbers(srv):
    async def main():
        first = srv.publish(b'{"channel":"chat.pyhist","data":{"n":12345678901234567890.5}}')
        async with Client(srv.url, API_KEY) as c:
            for i in range(5):
                await c.publish("chat.pyhist", {"i": i})
            sub = await c.subscribe("chat.pyhist", from_=first["offset"])
            assert sub.kind == "stream"
            assert len(sub.epoch) == 16
            await c.publish("chat.pyhist", {"live": True})
            got = [await sub.get(5) for _ in range(7)]
            assert got[0].raw_data == '{"n":12345678901234567890.5}'
            assert [m.data["i"] for m in got[1:6]] == [0, 1, 2, 3, 4]
            assert got[6].data == {"live": True}
            assert all(b.offset > a.offset for a, b in zip(got, got[1:]))
    run(main())


def test_pipelined_publishes_are_acknowledged_in_order_and_a_retry_gets_the_same_offset(srv):
    async def main():
        async with Client(srv.url, API_KEY) as c, Client(srv.url, API_KEY) as other:
            # Counts the publishes handed to the socket before the first ack comes back:
            # pipelined, not one by one. (Instance attributes wrap the client's own methods.)
            sent, at_first_ack = [], []
            send, on_frame = c._send, c._on_frame

            def counting_send(obj):
                if obj.get("op") == "publish":
                    sent.append(1)
                send(obj)

            def watching(text):
                if not at_first_ack and '"offset"' in text:
                    at_first_ack.append(len(sent))
                on_frame(text)

            c._send, c._on_frame = counting_send, watching
            acks = await asyncio.gather(*(c.publish("chat.pypipe", {"i": i}) for i in range(500)))
            assert at_first_ack[0] >= 100, f"{at_first_ack[0]} publishes sent before the first ack"
            assert all(b.offset > a.offset for a, b in zip(acks, acks[1:]))
            assert not any(a.duplicate for a in acks)
            again = await other.publish("chat.pypipe", {"i": 0}, msg_id=acks[0].msg_id)
            assert again.duplicate is True
            assert again.offset == acks[0].offset
        assert len(srv.history("chat.pypipe")) == 500
    run(main())


def test_cut_sockets_after_lost_acks_and_deliveries_resume_with_no_gap_no_duplicate_and_store_each_publish_once(srv):
    async def main():
        sub_c = Client(srv.url, API_KEY, reconnect_delay=0.02, max_reconnect_delay=0.1)
        pub_c = Client(srv.url, API_KEY, reconnect_delay=0.02, max_reconnect_delay=0.1)
        await sub_c.connect()
        await pub_c.connect()
        got, offsets = [], []

        def on_message(m):
            got.append(m.data["i"])
            offsets.append(m.offset)

        sub = await sub_c.subscribe("chat.pycut", on_message)
        rounds = 4
        n = rounds * 100
        tasks = []
        i = 0
        for _ in range(rounds):
            await until(lambda: sub_c._ws is not None and pub_c._ws is not None, 10, "reconnected")
            for _k in range(50):
                tasks.append(asyncio.ensure_future(pub_c.publish("chat.pycut", {"i": i})))
                i += 1
            await asyncio.sleep(0)  # those 50 are sent
            # The clients go deaf, as on a dying network: acks of stored publishes and
            # deliveries are lost. (Instance attributes shadow the client's frame handler.)
            for c in (sub_c, pub_c):
                c._on_frame = lambda text: None
            for _k in range(50):
                tasks.append(asyncio.ensure_future(pub_c.publish("chat.pycut", {"i": i})))
                i += 1
            stored = i
            deadline = asyncio.get_running_loop().time() + 10
            while len(srv.history("chat.pycut")) < stored:
                assert asyncio.get_running_loop().time() < deadline, "the server stored the round"
                await asyncio.sleep(0.02)
            # Stored on the server, unacknowledged and undelivered on the clients: now cut.
            for c in (sub_c, pub_c):
                c._ws.transport.abort()
                del c._on_frame
        acks = await asyncio.gather(*tasks)
        await until(lambda: len(got) >= n, 20, f"{n} messages (have {len(got)})")
        await asyncio.sleep(0.2)
        assert got == list(range(n)), "every message once, in order"
        assert sum(a.duplicate for a in acks) >= rounds * 50, "the lost acks were retried with their msg_id"
        assert len(srv.history("chat.pycut")) == n, "each retried publish stored once"
        assert [a.offset for a in acks] == offsets
        assert sub.last_offset == offsets[-1]
        await sub_c.close()
        await pub_c.close()
    run(main())


def test_a_kill_9_and_restart_mid_stream_loses_and_repeats_nothing(srv):
    async def main():
        sub_c = Client(srv.url, API_KEY, reconnect_delay=0.05, max_reconnect_delay=0.3)
        pub_c = Client(srv.url, API_KEY, reconnect_delay=0.05, max_reconnect_delay=0.3)
        await sub_c.connect()
        await pub_c.connect()
        got = []
        await sub_c.subscribe("chat.pykill", lambda m: got.append(m.data["i"]))
        n = 600
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(pub_c.publish("chat.pykill", {"i": i})))
            if i % 50 == 49:
                await asyncio.sleep(0.01)
            if i == 300:
                srv.kill9()
                threading.Timer(0.3, srv.launch).start()
        acks = await asyncio.gather(*tasks)
        await until(lambda: len(got) >= n, 30, f"{n} messages (have {len(got)})")
        await asyncio.sleep(0.2)
        assert got == list(range(n))
        stored = srv.history("chat.pykill")
        assert len(stored) == n
        assert len({m["msg_id"] for m in stored}) == n
        assert len({a.offset for a in acks}) == n
        await sub_c.close()
        await pub_c.close()
    run(main(), 90)


def test_a_sigterm_drain_follows_the_servers_resume_points(srv):
    async def main():
        async with Client(srv.url, API_KEY, reconnect_delay=0.05, max_reconnect_delay=0.3) as c:
            got = []
            await c.subscribe("chat.pydrain", lambda m: got.append(m.data["i"]), from_=0)
            for i in range(10):
                srv.publish({"channel": "chat.pydrain", "data": {"i": i}})
            await until(lambda: len(got) == 10, 5, "before")
            srv.terminate()
            srv.launch()
            for i in range(10, 20):
                srv.publish({"channel": "chat.pydrain", "data": {"i": i}})
            await until(lambda: len(got) == 20, 10, f"after (have {len(got)})")
            assert got == list(range(20))
    run(main())


def test_refusals_are_typed_errors(srv):
    async def main():
        async with Client(srv.url, API_KEY) as c:
            with pytest.raises(RequestError) as e:
                await c.publish("quotes.PYUSD", {"bid": 1.08, "ask": "1.09"})
            assert e.value.code == "bad_data"
            with pytest.raises(EpochMismatchError):
                await c.subscribe("chat.pyepoch", from_=0, epoch="0000000000000000")
            with pytest.raises(OffsetOutOfRangeError):
                await c.subscribe("chat.pyfar", from_=10**12)
            with pytest.raises(RequestError) as e:
                await c.subscribe("nosuchns.x")
            assert e.value.code == "unknown_namespace"
        async with Client(srv.url, jwt("7")) as user:
            await user.subscribe("user.7")
            with pytest.raises(AuthError) as e:
                await user.subscribe("user.8")
            assert e.value.code == "forbidden"
            with pytest.raises(AuthError) as e:
                await user.publish("quotes.PYUSD", {"bid": "1", "ask": "2"})
            assert e.value.code == "forbidden"
    run(main())


def test_the_book_checksum_is_the_one_docs_books_md_gives():
    b = OrderBook("X")
    snap = {"snapshot": True, "seq": 41, "checksum": 1082956473, "bids": [["1.1", "5"]], "asks": [["1.12", "3"], ["1.2", "3"]]}
    assert b.apply(snap) == "ok"
    assert b.apply({"seq": 43, "prev": 42, "checksum": 0, "bids": [], "asks": []}) == "gap"
    assert b.known is False
    assert b.apply(snap) == "ok"
    # "1.10" is the level "1.1": size 0 deletes it, then the checksum no longer matches 1.
    assert b.apply({"seq": 42, "prev": 41, "checksum": 1, "bids": [["1.10", "0"]], "asks": []}) == "mismatch"
    assert b.bids == []


def test_an_order_book_from_snapshot_and_deltas_with_every_checksum_verified(srv):
    def depth(data):
        srv.publish({"channel": "depth.PYBOOK", "data": data})

    async def main():
        async with Client(srv.url, API_KEY) as c:
            resyncs = []
            applied = []
            w = await watch_book(c, "PYBOOK", lambda b: applied.append(b.seq), on_resync=resyncs.append)
            depth({"snapshot": [
                {"side": "bid", "price": "1.10000000000000000001", "size": "5"},
                {"side": "bid", "price": "1.1", "size": "3"},
                {"side": "ask", "price": "1.2", "size": "7"},
                {"side": "ask", "price": "1.19999999999999999999", "size": "1"},
            ]})
            await w.wait_until(lambda b: len(b.asks) == 2)
            assert w.book.bids == [("1.10000000000000000001", "5"), ("1.1", "3")]
            assert w.book.asks == [("1.19999999999999999999", "1"), ("1.2", "7")]
            for i in range(20):
                depth({"updates": [{"action": "new", "side": "bid", "price": f"1.0{90 + i}", "size": str(i + 1)}]})
                if i % 5 == 0:
                    await asyncio.sleep(0.03)
            depth({"updates": [{"action": "delete", "side": "ask", "price": "1.2"}]})
            await w.wait_until(lambda b: len(b.asks) == 1 and len(b.bids) == 10)
            latest = srv.latest("book.PYBOOK")["data"]
            assert latest["seq"] == w.book.seq
            assert [list(l) for l in w.book.bids] == latest["bids"]
            assert [list(l) for l in w.book.asks] == latest["asks"]
            assert w.book.checksum() == latest["checksum"]
            assert len(applied) >= 2 and resyncs == []

            # Corrupt the local book: the next delta's checksum tells, and a fresh snapshot repairs it.
            bad = {"seq": w.book.seq + 1, "prev": w.book.seq, "checksum": 0, "bids": [["5", "5"]], "asks": []}
            assert w.book.apply(bad) == "mismatch"
            depth({"updates": [{"action": "new", "side": "ask", "price": "1.3", "size": "2"}]})
            await w.wait_until(lambda b: len(b.asks) == 2)
            assert w.resyncs == 1 and resyncs == ["gap"]
            assert all(p != "5" for p, _ in w.book.bids)
            after = srv.latest("book.PYBOOK")["data"]
            assert [list(l) for l in w.book.asks] == after["asks"]
            assert w.book.checksum() == after["checksum"]
            await w.unsubscribe()
    run(main())


def test_a_book_watched_at_a_depth_of_its_own_holds_the_best_levels_only(srv):
    def depth(data):
        srv.publish({"channel": "depth.PYDEPTH", "data": data})

    async def main():
        async with Client(srv.url, API_KEY) as c:
            resyncs = []
            w = await watch_book(c, "PYDEPTH", on_resync=resyncs.append, depth=2)
            depth({"snapshot": [lvl for i in range(1, 5) for lvl in (
                {"side": "bid", "price": f"1.{10 - i}", "size": str(i)},
                {"side": "ask", "price": f"1.{10 + i}", "size": str(i)},
            )]})
            await w.wait_until(lambda b: len(b.bids) == 2 and len(b.asks) == 2)
            assert w.book.bids == [("1.9", "1"), ("1.8", "2")]
            # The best bid goes: the third level moves up into the view, checksum verified.
            depth({"updates": [{"action": "delete", "side": "bid", "price": "1.9"}]})
            await w.wait_until(lambda b: b.bids and b.bids[0][0] == "1.8")
            assert w.book.bids == [("1.8", "2"), ("1.7", "3")]
            assert w.book.asks == [("1.11", "1"), ("1.12", "2")]
            assert resyncs == [] and w.resyncs == 0
            await w.unsubscribe()
    run(main())


def test_package_exports_typed_errors():
    assert issubclass(tickwire.AuthError, tickwire.TickwireError)
    e = tickwire.error_for("rate_limited", "retry after 250 ms")
    assert isinstance(e, tickwire.RateLimitedError) and e.retry_after_ms == 250


def test_an_expiring_token_is_refreshed_on_the_open_connection():
    from server import Server

    short = Server(TICKWIRE_AUTH__LEEWAY_SECS="0", TICKWIRE_AUTH__TOKEN_GRACE_SECS="3")

    async def main():
        calls = []
        states, errors, stale = [], [], []

        def token():
            calls.append(1)
            return jwt("42", 1)

        c = Client(short.url, token, on_state=states.append, on_error=errors.append)
        await c.connect()
        sub = await c.subscribe("chat.refresh")
        # A static token that expires: the client says so (no function to get a new one).
        s = Client(short.url, jwt("43", 1), on_error=stale.append)
        await s.connect()
        await until(lambda: len(calls) >= 2 and stale, 8, "the expiry")
        await asyncio.sleep(3.5)  # past the grace period of the first token
        short.publish({"channel": "chat.refresh", "data": {"n": 1}})
        m = await sub.get(5)
        assert m.data == {"n": 1}
        assert states == ["connecting", "open"], "never reconnected"
        assert errors == []
        assert isinstance(stale[0], AuthError) and stale[0].code == "token_expired"
        await c.close()
        await s.close()

    try:
        run(main())
    finally:
        short.stop()


def test_last_n_then_a_wiped_servers_new_epoch_ends_the_resumed_subscription():
    from server import Server

    w = Server()

    async def main():
        for i in range(5):
            w.publish({"channel": "chat.epochs", "data": {"i": i}})
        errors = []
        async with Client(w.url, API_KEY, reconnect_delay=0.05, max_reconnect_delay=0.2, on_error=errors.append) as c:
            sub = await c.subscribe("chat.epochs", last=2)
            assert [(await sub.get(5)).data["i"] for _ in range(2)] == [3, 4]
            epoch = sub.epoch
            w.kill9()
            w.wipe()
            w.launch()
            with pytest.raises(EpochMismatchError):
                await sub.get(10)
            assert isinstance(errors[0], EpochMismatchError)
            # What the client does next is its choice: replay the new stream from 0.
            w.publish({"channel": "chat.epochs", "data": {"i": 100}})
            fresh = await c.subscribe("chat.epochs", from_=0)
            assert fresh.epoch != epoch
            assert (await fresh.get(5)).data == {"i": 100}

    try:
        run(main())
    finally:
        w.stop()


def test_an_order_book_survives_a_server_restart(srv):
    def depth(data):
        srv.publish({"channel": "depth.PYREST", "data": data})

    async def main():
        async with Client(srv.url, API_KEY, reconnect_delay=0.05, max_reconnect_delay=0.3) as c:
            w = await watch_book(c, "PYREST")
            depth({"snapshot": [{"side": "bid", "price": "2.5", "size": "1"}, {"side": "ask", "price": "2.6", "size": "1"}]})
            await w.wait_until(lambda b: len(b.asks) == 1)
            srv.kill9()
            srv.launch()
            depth({"updates": [{"action": "new", "side": "bid", "price": "2.55", "size": "3"}]})
            book = await w.wait_until(lambda b: b.best_bid()[0] == "2.55", 15)
            latest = srv.latest("book.PYREST")["data"]
            assert [list(l) for l in book.bids] == latest["bids"]
            assert book.checksum() == latest["checksum"]
            await w.unsubscribe()
    run(main())
