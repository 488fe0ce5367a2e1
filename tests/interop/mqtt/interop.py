#!/usr/bin/env python3
"""Real MQTT clients against the real tickwire binary: paho-mqtt (TCP and WebSocket) and
mosquitto_sub / mosquitto_pub, each for MQTT 3.1.1 and 5.

Usage: interop.py /path/to/tickwire
Starts the server on free loopback ports with a temporary data directory, runs every
scenario, prints one line per check and a summary line, exits 1 if anything failed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

TIMEOUT = 15
FAILURES = []
PASSED = []
# Every check() call on the success path of every scenario. A scenario that stops early (an
# exception, a check that was never reached) must not pass as "0 failed": the run fails unless
# exactly this many checks passed. Change it together with the checks.
EXPECTED_CHECKS = 40


def check(name, ok, detail=""):
    (PASSED if ok else FAILURES).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data):
        self.binary, self.data = binary, data
        self.mqtt_port = free_port()
        self.proc = None

    def start(self):
        env = dict(os.environ, TICKWIRE_LOG="warn",
                   TICKWIRE_MQTT__LISTEN=f"127.0.0.1:{self.mqtt_port}")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--http", "127.0.0.1:0", "--data", self.data],
            stdout=subprocess.PIPE, stderr=open(self.data + ".stderr.log", "a"), env=env, text=True)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "listening on http://" in line:
                self.http = line.split("listening on http://")[1].strip()
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise RuntimeError("tickwire did not start")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def publish(self, items):
        req = urllib.request.Request(f"http://{self.http}/v1/publish", data=json.dumps(items).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return json.load(r)


def proto(v):
    return mqtt.MQTTv5 if v == 5 else mqtt.MQTTv311


class Client:
    """A paho client that records messages and waits for conditions."""

    def __init__(self, srv, version, client_id="", transport="tcp", persistent=False):
        self.msgs, self.lock = [], threading.Lock()
        self.connack = None
        self.disconnected = threading.Event()
        kw = {}
        if version != 5:
            kw["clean_session"] = not persistent
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=proto(version), transport=transport, **kw)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc))
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnected.set()
        port = srv.mqtt_port if transport == "tcp" else int(srv.http.rsplit(":", 1)[1])
        props = None
        if version == 5:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if persistent else 0
            self.c.connect("127.0.0.1", port, keepalive=30, clean_start=not persistent, properties=props)
        else:
            self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, m.payload.decode(), m.retain, m.qos))

    def wait(self, cond, what, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        raise TimeoutError(f"timed out waiting for {what}")

    def subscribe(self, topics):
        granted = []
        done = threading.Event()

        def on_sub(c, u, mid, codes, props):
            granted.extend(codes)
            done.set()
        self.c.on_subscribe = on_sub
        self.c.subscribe(topics)
        # Without the SUBACK nothing says the subscription exists: what the scenario then
        # publishes may be lost or arrive later, so a missing SUBACK ends the scenario.
        if not done.wait(TIMEOUT):
            raise TimeoutError(f"no SUBACK for {topics}")
        if len(granted) != len(topics):
            raise AssertionError(f"SUBACK has {len(granted)} codes for {len(topics)} topics: {granted}")
        return granted

    def received(self, topic=None):
        with self.lock:
            return [m for m in self.msgs if topic is None or m[0] == topic]

    def close(self):
        self.c.disconnect()
        self.disconnected.wait(5)
        self.c.loop_stop()


def scenario_one_connection(srv, version, transport):
    tag = f"v{'5' if version == 5 else '3.1.1'}/{transport}"
    sym = f"S{version}{transport[:2].upper()}"
    room = f"lobby{version}{transport[:2]}"
    srv.publish([{"channel": f"quotes.{sym}", "data": {"bid": "1.00001", "ask": "1.00003"}},
                 {"channel": f"quotes.{sym}", "data": {"bid": "1.00002", "ask": "1.00004"}}])
    c = Client(srv, version, transport=transport)
    granted = c.subscribe([("quotes/+", 1), (f"chat/{room}", 1)])
    codes = [int(getattr(g, "value", g)) for g in granted]
    check(f"{tag}: SUBACK grants QoS 0 for quotes/+ and QoS 1 for chat", codes == [0, 1], str(codes))
    c.wait(lambda: c.received(f"quotes/{sym}"), "snapshot")
    first = c.received(f"quotes/{sym}")[0]
    check(f"{tag}: newest quote arrives first as a retained snapshot",
          first[2] and json.loads(first[1])["bid"] == "1.00002", str(first))
    n_quotes, n_chat = 300, 60
    published = [{"bid": f"1.{10000 + j:05d}", "ask": "2.00000"} for j in range(n_quotes)]
    for i in range(0, n_quotes, 50):
        batch = [{"channel": f"quotes.{sym}", "data": published[j]} for j in range(i, i + 50)]
        batch += [{"channel": f"chat.{room}", "data": {"n": k}} for k in range(i // 5, i // 5 + 10)]
        srv.publish(batch)
    last_bid = f"1.{10000 + n_quotes - 1:05d}"
    c.wait(lambda: len(c.received(f"chat/{room}")) >= n_chat and
           any(json.loads(m[1])["bid"] == last_bid for m in c.received(f"quotes/{sym}")), "all chat + last quote")
    chat = [json.loads(m[1])["n"] for m in c.received(f"chat/{room}")]
    check(f"{tag}: chat arrives complete and in order ({n_chat})", chat == list(range(n_chat)), str(chat[:10]))
    check(f"{tag}: chat delivered at QoS 1", all(m[3] == 1 for m in c.received(f"chat/{room}")))
    live = c.received(f"quotes/{sym}")[1:]
    quotes = [json.loads(m[1]) for m in live]
    # A state channel conflates: a client sees a subset of the published values (which one
    # depends on timing), but exactly published values, each at most once, in publication
    # order, ending with the newest. So: the indexes of what arrived, in the published list,
    # must be strictly increasing and end at the last one.
    index = {json.dumps(q, sort_keys=True): k for k, q in enumerate(published)}
    seen = [index.get(json.dumps(q, sort_keys=True)) for q in quotes]
    exact = (bool(seen) and None not in seen and seen[-1] == n_quotes - 1
             and all(a < b for a, b in zip(seen, seen[1:])))
    check(f"{tag}: quotes are exactly published values, once each, in order, ending with the newest, "
          f"live (not retained) at QoS 0 ({len(quotes)} of {n_quotes} seen)",
          exact and all(m[3] == 0 and not m[2] for m in live),
          f"unknown {[q for q, k in zip(quotes, seen) if k is None][:3]}, order {seen[:5]}..{seen[-5:]}, "
          f"flags {[(m[2], m[3]) for m in live][:3]}")
    c.close()


def scenario_persistent(srv, version):
    tag = f"v{'5' if version == 5 else '3.1.1'}"
    cid, room = f"persist-{version}", f"room{version}"
    c = Client(srv, version, client_id=cid, persistent=True)
    c.subscribe([(f"chat/{room}", 1), (f"user/+", 2)])
    srv.publish([{"channel": f"chat.{room}", "data": {"n": i}} for i in range(5)])
    c.wait(lambda: len(c.received()) >= 5, "first 5")
    c.close()
    # Missed while away: 10 via HTTP, 10 via mosquitto_pub (QoS 1, acked after fsync), and a
    # channel that did not exist before (covered by the pattern subscription).
    srv.publish([{"channel": f"chat.{room}", "data": {"n": i}} for i in range(5, 15)])
    for i in range(15, 25):
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-q", "1",
                            "-V", "mqttv5" if version == 5 else "mqttv311",
                            "-t", f"chat/{room}", "-m", json.dumps({"n": i})], capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0:
            check(f"{tag}: mosquitto_pub while away", False, r.stderr.decode())
    srv.publish([{"channel": f"user.new{version}", "data": {"dm": k}} for k in range(3)])
    srv.kill9()
    srv.start()
    c2 = Client(srv, version, client_id=cid, persistent=True)
    flags = c2.connack[0]
    present = flags.session_present if hasattr(flags, "session_present") else flags.get("session present")
    check(f"{tag}: reconnect after kill -9 reports session present", bool(present), str(flags))
    c2.wait(lambda: len(c2.received(f"chat/{room}")) >= 20 and len(c2.received(f"user/new{version}")) >= 3,
            "missed messages")
    time.sleep(0.5)
    got = [json.loads(m[1])["n"] for m in c2.received(f"chat/{room}")]
    check(f"{tag}: every missed chat message, exactly once, in order", got == list(range(5, 25)), str(got))
    dms = [json.loads(m[1])["dm"] for m in c2.received(f"user/new{version}")]
    check(f"{tag}: channel created while away delivered through the pattern", dms == [0, 1, 2], str(dms))
    check(f"{tag}: user/+ granted QoS 2 delivered at QoS 2",
          all(m[3] == 2 for m in c2.received(f"user/new{version}")))
    c2.close()


def scenario_mosquitto_clients(srv, version):
    v = "mqttv5" if version == 5 else "mqttv311"
    tag = f"mosquitto {v}"
    room = f"mos{version}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-V", v, "-q", "1",
                            "-t", f"chat/{room}", "-t", f"quotes/MOS{version}", "-v", "-C", "11", "-W", str(TIMEOUT)],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.7)
    srv.publish([{"channel": f"quotes.MOS{version}", "data": {"bid": "1.50000", "ask": "1.50002"}}])
    for i in range(10):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-V", v, "-q", "1",
                        "-t", f"chat/{room}", "-m", json.dumps({"i": i})], check=True, timeout=TIMEOUT)
    out, _ = sub.communicate(timeout=TIMEOUT + 5)
    lines = out.strip().splitlines()
    chat = [json.loads(l.split(" ", 1)[1])["i"] for l in lines if l.startswith(f"chat/{room} ")]
    check(f"{tag}: mosquitto_sub receives mosquitto_pub's messages in order", chat == list(range(10)), out)
    check(f"{tag}: mosquitto_sub receives the quote", any(l.startswith(f"quotes/MOS{version} ") for l in lines), out)
    bad = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-V", v, "-q", "1",
                          "-t", f"chat/{room}", "-m", "not json"], capture_output=True, text=True, timeout=TIMEOUT)
    if version == 5:
        check(f"{tag}: non-JSON payload refused with 0x99 Payload format invalid",
              "Payload format invalid" in bad.stderr + bad.stdout, bad.stderr)
    else:
        check(f"{tag}: non-JSON payload closes the 3.1.1 connection", bad.returncode != 0, bad.stderr)


def scenario_will_and_qos2(srv, version):
    tag = f"v{'5' if version == 5 else '3.1.1'}"
    room = f"will{version}"
    watcher = Client(srv, version, transport="tcp")
    watcher.subscribe([(f"chat/{room}", 2)])
    doomed = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"doomed{version}", protocol=proto(version))
    doomed.will_set(f"chat/{room}", json.dumps({"will": "gone"}), qos=1)
    doomed.connect("127.0.0.1", srv.mqtt_port, keepalive=30)
    doomed.loop_start()
    time.sleep(0.5)
    doomed.loop_stop()
    doomed.socket().close()  # no DISCONNECT: the Will must be published
    try:
        watcher.wait(lambda: watcher.received(f"chat/{room}"), "will")
        ok = json.loads(watcher.received(f"chat/{room}")[0][1]) == {"will": "gone"}
    except TimeoutError as e:
        ok = False
    check(f"{tag}: last will published through the hub on an abrupt disconnect", ok, str(watcher.received()))
    v = "mqttv5" if version == 5 else "mqttv311"
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-V", v, "-q", "2",
                    "-t", f"chat/{room}", "-m", json.dumps({"q2": 1})], check=True, timeout=TIMEOUT)
    watcher.wait(lambda: len(watcher.received(f"chat/{room}")) >= 2, "QoS 2 message")
    time.sleep(0.3)
    got = [m for m in watcher.received(f"chat/{room}") if "q2" in m[1]]
    check(f"{tag}: QoS 2 publish stored once and delivered once at QoS 2",
          len(got) == 1 and got[0][3] == 2, str(got))
    watcher.close()
    first = Client(srv, version, client_id=f"twin{version}")
    second = Client(srv, version, client_id=f"twin{version}")
    check(f"{tag}: a second connection with the same client id takes over the first",
          first.disconnected.wait(TIMEOUT) and not second.disconnected.is_set())
    first.c.loop_stop()
    second.close()


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="tw-mqtt-interop-")
    srv = Server(binary, os.path.join(tmp, "data"))
    srv.start()
    scenarios = []
    for version in (4, 5):
        for transport in ("tcp", "websockets"):
            scenarios.append((f"one connection v{version} {transport}",
                              lambda v=version, t=transport: scenario_one_connection(srv, v, t)))
        scenarios.append((f"persistent session v{version}", lambda v=version: scenario_persistent(srv, v)))
        scenarios.append((f"mosquitto clients v{version}", lambda v=version: scenario_mosquitto_clients(srv, v)))
        scenarios.append((f"will and QoS 2 v{version}", lambda v=version: scenario_will_and_qos2(srv, v)))
    for name, run in scenarios:
        try:
            run()
        except Exception as e:  # a scenario that breaks is a failure, the others still run
            check(f"{name}: completed", False, repr(e))
    srv.kill9()
    shutil.rmtree(tmp, ignore_errors=True)
    if len(PASSED) + len(FAILURES) != EXPECTED_CHECKS and not FAILURES:
        FAILURES.append(f"{len(PASSED)} checks ran, {EXPECTED_CHECKS} expected")
    if FAILURES:
        print("failed: " + "; ".join(FAILURES), flush=True)
    print(f"MQTT interop: {len(PASSED)} passed, {len(FAILURES)} failed", flush=True)
    sys.exit(0 if not FAILURES and len(PASSED) == EXPECTED_CHECKS else 1)


if __name__ == "__main__":
    main()
