#!/usr/bin/env python3
"""A Python grpcio client, generated at test time from proto/tickwire/v1/tickwire.proto with
grpcio-tools, against the real tickwire binary: publish (unary and streaming), subscribe,
resume a stream channel after a disconnect, errors, identity, health (Check and Watch).

Usage: interop.py /path/to/tickwire
Starts the server on free loopback ports with a temporary data directory, runs every
scenario, prints one line per check and a summary line, exits 1 if anything failed or if
fewer checks ran than EXPECTED_CHECKS.
"""

import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TIMEOUT = 15
FAILURES = []
PASSED = []
# Every check() call on the success path of every scenario. A scenario that stops early (an
# exception, a check never reached) must not pass as "0 failed": the run fails unless exactly
# this many checks passed. Change it together with the checks.
EXPECTED_CHECKS = 30


def check(name, ok, detail=""):
    (PASSED if ok else FAILURES).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(out):
    """The client modules from the proto file, with grpcio-tools' bundled protoc."""
    os.makedirs(out, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{os.path.join(ROOT, 'proto')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "tickwire/v1/tickwire.proto",
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc})")
    for d in ("tickwire", "tickwire/v1"):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)


class Server:
    def __init__(self, binary, data, env=None):
        self.binary, self.data = binary, data
        self.grpc_port = free_port()
        self.env = env or {}
        self.proc = None

    def start(self):
        env = dict(os.environ, TICKWIRE_LOG="warn",
                   TICKWIRE_GRPC__LISTEN=f"127.0.0.1:{self.grpc_port}", **self.env)
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--http", "127.0.0.1:0", "--data", self.data],
            stdout=subprocess.PIPE, stderr=open(self.data + ".stderr.log", "a"), env=env, text=True)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "listening on http://" in line:
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        raise RuntimeError("tickwire did not start")

    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def trailer(err, key="tickwire-code"):
    for k, v in (err.trailing_metadata() or ()):
        if k == key:
            return v
    return None


def json_item(pb, channel, data, msg_id=""):
    return pb.PublishItem(channel=channel, msg_id=msg_id, payload=pb.Payload(json=data.encode()))


class Subscriber:
    """A Subscribe call read on a thread into a queue, so a test waits with a timeout."""

    def __init__(self, stub, pb, subs, metadata=None):
        self.call = stub.Subscribe(pb.SubscribeRequest(subscriptions=subs), metadata=metadata)
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for m in self.call:
                self.q.put(m)
            self.q.put(None)
        except grpc.RpcError as e:
            self.q.put(e)

    def next(self, timeout=TIMEOUT):
        return self.q.get(timeout=timeout)

    def pushes(self, n):
        out = []
        while len(out) < n:
            m = self.next()
            if not hasattr(m, "WhichOneof") or m.WhichOneof("kind") != "push":
                raise AssertionError(f"a push, not {m!r}")
            out.append((m.push.offset, m.push.payload.json.decode()))
        return out

    def cancel(self):
        self.call.cancel()


def scenario_publish_subscribe_resume(srv, pb, pbg):
    ch = grpc.insecure_channel(srv.target())
    stub = pbg.TickwireStub(ch)
    bid = "1.084120000000000000000000001"
    r = stub.Publish(pb.PublishRequest(items=[pb.PublishItem(
        channel="quotes.EURUSD", payload=pb.Payload(quote=pb.Quote(bid=bid, ask="1.0843")))]),
        timeout=TIMEOUT)
    check("publish: a typed quote is stored", len(r.results) == 1 and not r.results[0].HasField("error"), r)

    s = Subscriber(stub, pb, [pb.Subscription(channel="quotes.EURUSD"),
                              pb.Subscription(channel="chat.py", **{"from": 0})])
    a, b = s.next(), s.next()
    check("subscribe: one Subscribed per channel, in order",
          a.subscribed.channel == "quotes.EURUSD" and a.subscribed.snapshot
          and b.subscribed.channel == "chat.py" and b.subscribed.offset == 0, (a, b))
    epoch = b.subscribed.epoch
    check("subscribe: a stream channel says its epoch", len(epoch) == 16, epoch)
    snap = s.next()
    check("subscribe: a state channel starts with a snapshot, decimals exact",
          snap.push.snapshot and snap.push.payload.quote.bid == bid, snap)

    # PublishStream: three batches pipelined; answers in order, echoing ids.
    reqs = [pb.PublishRequest(id=i, items=[json_item(pb, "chat.py", f'{{"n":{2 * (i - 1) + k}}}')
                                           for k in range(2)]) for i in (1, 2, 3)]
    answers = list(stub.PublishStream(iter(reqs), timeout=TIMEOUT))
    check("publish stream: answers in the order sent", [a.id for a in answers] == [1, 2, 3], answers)
    check("publish stream: consecutive offsets",
          [r.offset for a in answers for r in a.results] == list(range(6)), answers)

    first = s.pushes(4)
    check("subscribe: pushes in offset order", first == [(n, f'{{"n":{n}}}') for n in range(4)], first)
    s.cancel()

    r = stub.Publish(pb.PublishRequest(items=[json_item(pb, "chat.py", f'{{"n":{n}}}') for n in range(6, 9)]),
                     timeout=TIMEOUT)
    check("publish: a batch while the subscriber is away", [x.offset for x in r.results] == [6, 7, 8], r)

    s = Subscriber(stub, pb, [pb.Subscription(channel="chat.py", epoch=epoch, **{"from": 4})])
    m = s.next()
    check("resume: delivery starts at the offset asked for", m.subscribed.offset == 4, m)
    rest = s.pushes(5)
    check("resume: no gap, no duplicate", rest == [(n, f'{{"n":{n}}}') for n in range(4, 9)], rest)
    try:
        extra = s.next(timeout=0.3)
    except queue.Empty:
        extra = None
    check("resume: nothing after the last message", extra is None, extra)
    s.cancel()

    s = Subscriber(stub, pb, [pb.Subscription(channel="chat.py", last=2)])
    m = s.next()
    got = s.pushes(2)
    check("recent: `last` gives the newest messages, then live",
          m.subscribed.offset == 7 and got == [(7, '{"n":7}'), (8, '{"n":8}')], (m, got))
    s.cancel()

    h = stub.History(pb.HistoryRequest(channel="chat.py", limit=3, epoch=epoch, **{"from": 2}), timeout=TIMEOUT)
    check("history: one page from an offset", [m.offset for m in h.messages] == [2, 3, 4] and h.next == 5, h)
    l = stub.Latest(pb.LatestRequest(channel="quotes.EURUSD"), timeout=TIMEOUT)
    check("latest: the newest value, typed", l.message.payload.quote.bid == bid, l)
    ch.close()
    return epoch


def scenario_errors(srv, pb, pbg, epoch):
    ch = grpc.insecure_channel(srv.target())
    stub = pbg.TickwireStub(ch)

    def refused(call):
        try:
            r = call()
            if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
                list(r)
            return None
        except grpc.RpcError as e:
            return e

    e = refused(lambda: stub.Subscribe(pb.SubscribeRequest(subscriptions=[pb.Subscription(channel="no spaces")]),
                                       timeout=TIMEOUT))
    check("error: a bad channel is INVALID_ARGUMENT / bad_channel",
          e is not None and e.code() == grpc.StatusCode.INVALID_ARGUMENT and trailer(e) == "bad_channel", e)
    other = "0" * 15 + ("1" if epoch[-1] != "1" else "2")
    e = refused(lambda: stub.Subscribe(pb.SubscribeRequest(subscriptions=[
        pb.Subscription(channel="chat.py", epoch=other, **{"from": 0})]), timeout=TIMEOUT))
    check("error: another epoch is FAILED_PRECONDITION / epoch_mismatch",
          e is not None and e.code() == grpc.StatusCode.FAILED_PRECONDITION and trailer(e) == "epoch_mismatch", e)
    e = refused(lambda: stub.Subscribe(pb.SubscribeRequest(subscriptions=[
        pb.Subscription(channel="chat.py", **{"from": 10_000})]), timeout=TIMEOUT))
    check("error: a `from` past the end is OUT_OF_RANGE / offset_out_of_range",
          e is not None and e.code() == grpc.StatusCode.OUT_OF_RANGE and trailer(e) == "offset_out_of_range", e)
    e = refused(lambda: stub.Publish(pb.PublishRequest(items=[pb.PublishItem(
        channel="quotes.X", payload=pb.Payload(quote=pb.Quote(bid="1.5e3")))]), timeout=TIMEOUT))
    check("error: a float-style price is INVALID_ARGUMENT / bad_data",
          e is not None and e.code() == grpc.StatusCode.INVALID_ARGUMENT and trailer(e) == "bad_data", e)
    answers = list(stub.PublishStream(iter([pb.PublishRequest(id=9, items=[
        json_item(pb, "chat.py", '{"n":9}'), json_item(pb, "bad channel", "{}")])]), timeout=TIMEOUT))
    check("error: in a stream a refused item has its error, the rest is stored",
          len(answers) == 1 and answers[0].results[0].offset == 9
          and answers[0].results[1].error.code == "bad_channel", answers)
    e = refused(lambda: stub.Latest(pb.LatestRequest(channel="quotes.NOPE"), timeout=TIMEOUT))
    check("error: no value is NOT_FOUND", e is not None and e.code() == grpc.StatusCode.NOT_FOUND, e)
    ch.close()


def scenario_health(srv):
    ch = grpc.insecure_channel(srv.target())
    h = health_pb2_grpc.HealthStub(ch)
    r = h.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    check("health: Check says SERVING", r.status == health_pb2.HealthCheckResponse.SERVING, r)
    r = h.Check(health_pb2.HealthCheckRequest(service="tickwire.v1.Tickwire"), timeout=TIMEOUT)
    check("health: the Tickwire service is SERVING", r.status == health_pb2.HealthCheckResponse.SERVING, r)
    watch = h.Watch(health_pb2.HealthCheckRequest(service=""))
    first = next(watch)
    check("health: Watch starts with SERVING", first.status == health_pb2.HealthCheckResponse.SERVING, first)
    return ch, watch


def scenario_shutdown(srv, pb, pbg, health_watch):
    """SIGTERM: a subscriber gets a Disconnect with its resume offset; Watch sees NOT_SERVING."""
    ch = grpc.insecure_channel(srv.target())
    stub = pbg.TickwireStub(ch)
    s = Subscriber(stub, pb, [pb.Subscription(channel="chat.py", **{"from": 8})])
    s.next()
    s.pushes(2)  # offsets 8 and 9
    statuses = []

    def watch():
        try:
            for m in health_watch:
                statuses.append(m.status)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    srv.stop()
    d = s.next()
    check("shutdown: a Disconnect with code unavailable and the resume offset",
          getattr(d, "WhichOneof", lambda _: None)("kind") == "disconnect"
          and d.disconnect.code == "unavailable" and d.disconnect.resume.get("chat.py") == 10, d)
    end = s.next()
    check("shutdown: then the call ends UNAVAILABLE",
          isinstance(end, grpc.RpcError) and end.code() == grpc.StatusCode.UNAVAILABLE, end)
    t.join(timeout=TIMEOUT)
    check("shutdown: Watch saw NOT_SERVING or the end",
          health_pb2.HealthCheckResponse.SERVING not in statuses, statuses)
    ch.close()


def scenario_identity(binary, tmp, pb, pbg):
    srv = Server(binary, os.path.join(tmp, "auth"), {"TICKWIRE_API_KEYS": '["k-py-1"]'}).start()
    try:
        ch = grpc.insecure_channel(srv.target())
        stub = pbg.TickwireStub(ch)
        req = pb.PublishRequest(items=[json_item(pb, "chat.id", '{"n":1}')])
        try:
            stub.Publish(req, timeout=TIMEOUT)
            e = None
        except grpc.RpcError as err:
            e = err
        check("identity: publishing without a credential is UNAUTHENTICATED",
              e is not None and e.code() == grpc.StatusCode.UNAUTHENTICATED and trailer(e) == "unauthorized", e)
        try:
            stub.Publish(req, metadata=[("authorization", "Bearer wrong")], timeout=TIMEOUT)
            e = None
        except grpc.RpcError as err:
            e = err
        check("identity: a wrong key is UNAUTHENTICATED", e is not None and e.code() == grpc.StatusCode.UNAUTHENTICATED, e)
        r = stub.Publish(req, metadata=[("authorization", "Bearer k-py-1")], timeout=TIMEOUT)
        check("identity: the key as a bearer token publishes", r.results[0].offset == 0, r)
        s = Subscriber(stub, pb, [pb.Subscription(channel="chat.id", **{"from": 0})],
                       metadata=[("x-api-key", "k-py-1")])
        s.next()
        got = s.pushes(1)
        check("identity: the key as x-api-key subscribes", got == [(0, '{"n":1}')], got)
        s.cancel()
        ch.close()
    finally:
        srv.stop()


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="tickwire-grpc-interop-")
    srv = None
    try:
        generate(os.path.join(tmp, "gen"))
        from tickwire.v1 import tickwire_pb2 as pb, tickwire_pb2_grpc as pbg
        srv = Server(binary, os.path.join(tmp, "main")).start()
        epoch = scenario_publish_subscribe_resume(srv, pb, pbg)
        scenario_errors(srv, pb, pbg, epoch)
        hch, watch = scenario_health(srv)
        scenario_shutdown(srv, pb, pbg, watch)
        hch.close()
        scenario_identity(binary, tmp, pb, pbg)
    except Exception as e:  # a scenario that stops early fails the run (and the count)
        FAILURES.append(f"exception: {type(e).__name__}: {e}")
        print(f"FAIL exception: {type(e).__name__}: {e}", flush=True)
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if len(PASSED) + len(FAILURES) != EXPECTED_CHECKS and not FAILURES:
        FAILURES.append(f"{len(PASSED)} checks ran, {EXPECTED_CHECKS} expected")
    if FAILURES:
        print("failed: " + "; ".join(FAILURES), flush=True)
    print(f"gRPC interop: {len(PASSED)} passed, {len(FAILURES)} failed", flush=True)
    sys.exit(0 if not FAILURES and len(PASSED) == EXPECTED_CHECKS else 1)


if __name__ == "__main__":
    main()
