#!/usr/bin/env python3
"""Real TLS peers against the real tickwire binary: curl, Python websockets (wss),
mosquitto_sub / mosquitto_pub and paho-mqtt (mqtts, and MQTT over wss), and a FIX client over
Python's ssl module, each a TLS stack other than rustls (OpenSSL). Tokens are minted with
PyJWT and with `tickwire token`. Certificates come from the openssl CLI: a test CA and server
certificates for 127.0.0.1 and localhost; SIGHUP swaps them under live connections.

QuickFIX is not used here: the PyPI quickfix wheel is built without SSL (its SSLSocketInitiator
fails with "HAVE_SSL not enabled"); FIX over TLS is checked with the FIX client below and in
crates/cli/tests/tls.rs (our own engine over rustls).

Usage: interop.py /path/to/tickwire
Starts the server on free loopback ports with a temporary directory, runs every check, prints
one line per check and a summary line, exits 1 if anything failed. Every process it starts is
stopped before it exits.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import jwt
import paho.mqtt.client as mqtt
from websockets.asyncio.client import connect as ws_connect_async

TIMEOUT = 15
SECRET = "tls-interop-secret-of-at-least-32-bytes"
KEY = "tls-interop-api-key"
FAILURES = []
PASSED = []
# Every check() call on the success path. A scenario that stops early must not pass as
# "0 failed": the run fails unless exactly this many checks passed. Change it with the checks.
EXPECTED_CHECKS = 34


def check(name, ok, detail=""):
    (PASSED if ok else FAILURES).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    """Runs a command with a bound; its CompletedProcess (stdout and stderr as text)."""
    kw.setdefault("timeout", TIMEOUT)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---- certificates (openssl CLI) ----

class Pki:
    def __init__(self, d):
        self.d = d
        self.ca, self.ca_key = f"{d}/ca.pem", f"{d}/ca.key"
        self.cert, self.key = f"{d}/server.pem", f"{d}/server.key"
        self.serial = 1000
        ossl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=tickwire interop CA",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        self.issue(self.cert, self.key)

    def issue(self, cert, key):
        """A new server certificate and key (a new serial each time) written to cert, key."""
        self.serial += 1
        csr, ext = f"{self.d}/server.csr", f"{self.d}/server.ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                    "basicConstraints=CA:FALSE\n")
        ossl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key + ".new", "-out", csr, "-subj", "/CN=127.0.0.1"])
        ossl(["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial",
              str(self.serial), "-days", "2", "-extfile", ext, "-out", cert + ".new"])
        # Renamed into place, as a certificate manager would: the server never reads half a file.
        os.replace(key + ".new", key)
        os.replace(cert + ".new", cert)
        return fingerprint_of_file(cert)


def ossl(args):
    r = run(["openssl"] + args)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


def fingerprint_of_file(path):
    """SHA-256 of the certificate in path, as `openssl x509 -fingerprint -sha256` prints it."""
    out = run(["openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"]).stdout
    return out.strip().split("=", 1)[1]


def presented(port, pki):
    """The SHA-256 fingerprint of the certificate a new TLS connection to port is shown."""
    ctx = ssl.create_default_context(cafile=pki.ca)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


# ---- the server ----

class Server:
    def __init__(self, binary, d, pki):
        self.binary, self.d, self.pki = binary, d, pki
        self.http_port, self.mqtts_port, self.fix_port = free_port(), free_port(), free_port()
        self.cfg = f"{d}/tickwire.toml"
        with open(self.cfg, "w") as f:
            f.write(f"""
[auth]
jwt_hmac_secret = "{SECRET}"
[[auth.api_keys]]
name = "ops"
key = "{KEY}"

[tls]
cert_file = "{pki.cert}"
key_file = "{pki.key}"

[mqtt]
tls_listen = "127.0.0.1:{self.mqtts_port}"

[fix.acceptor]
listen = "127.0.0.1:{self.fix_port}"
tls = true
allowed_comp_ids = ["*"]
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.cfg, "--http", f"127.0.0.1:{self.http_port}",
             "--data", f"{self.d}/data", "--fsync", "never"],
            stdout=subprocess.PIPE, stderr=open(f"{self.d}/stderr.log", "a"),
            env=dict(os.environ, TICKWIRE_LOG="info"), text=True)
        deadline = time.time() + TIMEOUT
        self.banner = []
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.banner.append(line.rstrip())
            if line.strip().startswith("data:"):
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise RuntimeError(f"tickwire did not start: {self.banner}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def base(self):
        return f"https://127.0.0.1:{self.http_port}"

    def curl(self, *args):
        return run(["curl", "-sS", "--max-time", str(TIMEOUT), "--cacert", self.pki.ca,
                    "-o", "-", "-w", "\n%{http_code}"] + list(args))

    def publish(self, channel, data):
        r = self.curl("-X", "POST", "-H", f"Authorization: Bearer {KEY}",
                      "-H", "content-type: application/json",
                      "--data", json.dumps({"channel": channel, "data": data}), f"{self.base}/v1/publish")
        return r.stdout.rsplit("\n", 1)[-1] == "200"


def pyjwt_token(sub, ttl=3600):
    return jwt.encode({"sub": sub, "exp": int(time.time()) + ttl}, SECRET, algorithm="HS256")


def cli_token(binary, sub):
    r = run([binary, "token", "--sub", sub, "--ttl", "1h"],
            env=dict(os.environ, TICKWIRE_AUTH__JWT_HMAC_SECRET=SECRET))
    if r.returncode != 0:
        raise RuntimeError(f"tickwire token: {r.stderr}")
    return r.stdout.strip()


# ---- WebSocket over TLS ----

class WsConn:
    """A wss:// connection with a blocking API, driven by websockets' asyncio client on an event
    loop of its own. Not `websockets.sync`: its background thread reads the TLS socket while the
    caller's thread writes it, and Python's ssl objects are not safe for that. About one
    handshake in a few hundred never sent its HTTP request (the server read the TLS handshake and
    nothing more, its socket had nothing queued) and the check failed at the header timeout."""

    def __init__(self, url, ssl_ctx, open_timeout=TIMEOUT):
        self.loop = asyncio.new_event_loop()
        try:
            self.ws = self.loop.run_until_complete(
                ws_connect_async(url, ssl=ssl_ctx, open_timeout=open_timeout))
        except BaseException:
            self.loop.close()
            raise

    def send(self, text):
        self.loop.run_until_complete(self.ws.send(text))

    def recv(self, timeout=TIMEOUT):
        return self.loop.run_until_complete(asyncio.wait_for(self.ws.recv(), timeout))

    def close(self):
        if not self.loop.is_closed():
            try:
                self.loop.run_until_complete(asyncio.wait_for(self.ws.close(), TIMEOUT))
            except Exception:
                pass
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ws_connect(url, ssl, open_timeout=TIMEOUT):
    """Opens a wss:// connection (see WsConn); raises websockets' InvalidStatus when the server
    answers the upgrade with an HTTP error."""
    return WsConn(url, ssl, open_timeout)


class Wss:
    def __init__(self, srv, token, path="/v1/ws"):
        ctx = ssl.create_default_context(cafile=srv.pki.ca)
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(
            ws_connect(f"wss://127.0.0.1:{srv.http_port}{path}?token={token}", ssl=ctx,
                       open_timeout=TIMEOUT))
        self.next_id = 1
        self.pushes = []

    def cmd(self, v):
        v["id"] = self.next_id
        self.next_id += 1
        self.ws.send(json.dumps(v))
        while True:
            f = json.loads(self.ws.recv(timeout=TIMEOUT))
            if f.get("id") == v["id"]:
                return f
            if "ch" in f:
                self.pushes.append(f)

    def push(self):
        if self.pushes:
            return self.pushes.pop(0)
        while True:
            f = json.loads(self.ws.recv(timeout=TIMEOUT))
            if "ch" in f:
                return f

    def close(self):
        self.stack.close()


# ---- paho-mqtt ----

class Paho:
    def __init__(self, srv, token, client_id, transport="tcp"):
        self.msgs, self.connack, self.subacks = [], None, {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.c.tls_set(ca_certs=srv.pki.ca)
        self.c.username_pw_set("any", token)
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload.decode()))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        port = srv.mqtts_port if transport == "tcp" else srv.http_port
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        wait(lambda: self.connack is not None, "paho CONNACK")

    def subscribe(self, topic):
        _, mid = self.c.subscribe(topic, qos=1)
        wait(lambda: mid in self.subacks, "paho SUBACK")
        return [int(rc.value) for rc in self.subacks[mid]]

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait(cond, what, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


# ---- FIX over TLS (Python ssl: OpenSSL) ----

SOH = "\x01"


def fix_message(msg_type, seq, sender, fields):
    body = [("35", msg_type), ("49", sender), ("56", "TICKWIRE"), ("34", str(seq)),
            ("52", time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()))] + fields
    text = SOH.join(f"{t}={v}" for t, v in body) + SOH
    head = f"8=FIX.4.4{SOH}9={len(text.encode())}{SOH}"
    msg = (head + text).encode()
    return msg + f"10={sum(msg) % 256:03d}{SOH}".encode()


class FixTls:
    def __init__(self, srv, sender, password):
        ctx = ssl.create_default_context(cafile=srv.pki.ca)
        raw = socket.create_connection(("127.0.0.1", srv.fix_port), timeout=TIMEOUT)
        self.s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.sender, self.seq, self.buf = sender, 1, b""
        self.send("A", [("98", "0"), ("108", "30"), ("554", password)])

    def send(self, msg_type, fields):
        self.s.sendall(fix_message(msg_type, self.seq, self.sender, fields))
        self.seq += 1

    def recv(self):
        """The next message as a list of (tag, value)."""
        while True:
            end = self.buf.find(b"\x0110=")
            if end >= 0 and self.buf.find(b"\x01", end + 1) >= 0:
                stop = self.buf.find(b"\x01", end + 1) + 1
                msg, self.buf = self.buf[:stop], self.buf[stop:]
                return [tuple(f.split("=", 1)) for f in msg.decode().split(SOH) if f]
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError("FIX connection closed")
            self.buf += chunk

    def next_app(self):
        while True:
            m = self.recv()
            kind = dict(m).get("35")
            if kind == "1":  # TestRequest: answer it
                self.send("0", [("112", dict(m).get("112", ""))])
            elif kind not in ("0", "A"):
                return m

    def close(self):
        self.s.close()


# ---- scenarios ----

def https_checks(srv, binary):
    r = srv.curl(f"{srv.base}/healthz")
    check("curl --cacert https /healthz", r.returncode == 0 and r.stdout.endswith("200"), r.stderr)
    r = run(["curl", "-sS", "--max-time", "5", f"{srv.base}/healthz"])
    check("curl without the CA refuses the certificate", r.returncode == 60, (r.returncode, r.stderr))
    token = pyjwt_token("alice")
    r = srv.curl("-H", f"Authorization: Bearer {token}", f"{srv.base}/v1/history/chat.lobby?from=0")
    check("curl https GET with a PyJWT token", r.stdout.endswith("200"), r.stdout)
    r = srv.curl(f"{srv.base}/v1/history/chat.lobby?from=0")
    check("curl https GET without a token is 401", r.stdout.endswith("401"), r.stdout)
    r = srv.curl("-H", f"Authorization: Bearer {KEY}", f"{srv.base}/metrics")
    check("curl https /metrics with the API key shows TLS handshakes",
          r.stdout.endswith("200") and 'tickwire_tls_handshakes_total{listener="http",result="ok"}' in r.stdout,
          r.stdout[-300:])
    check("banner names https, wss and mqtts",
          any("https://" in l for l in srv.banner) and any("wss://" in l for l in srv.banner)
          and any(f"mqtts://127.0.0.1:{srv.mqtts_port}" in l for l in srv.banner), srv.banner)


def wss_checks(srv, binary):
    ws = Wss(srv, pyjwt_token("alice"))
    r = ws.cmd({"op": "subscribe", "channel": "user.alice"})
    check("wss: PyJWT user subscribes to its own channel", r.get("ok") is True, r)
    r = ws.cmd({"op": "subscribe", "channel": "user.bob"})
    check("wss: PyJWT user is refused another user's channel",
          r.get("ok") is False and r["error"]["code"] == "forbidden", r)
    ok = srv.publish("user.alice", {"otp": "123456"})
    p = ws.push()
    check("wss: a message published with the API key arrives",
          ok and p["ch"] == "user.alice" and p["data"] == {"otp": "123456"}, p)
    ws.close()
    ws = Wss(srv, cli_token(binary, "bob"))
    r = ws.cmd({"op": "subscribe", "channel": "user.bob"})
    check("wss: a `tickwire token` user subscribes to its own channel", r.get("ok") is True, r)
    ws.close()


def mosquitto(srv, args, timeout=TIMEOUT):
    return run(args + ["-h", "127.0.0.1", "-p", str(srv.mqtts_port), "--cafile", srv.pki.ca,
                       "-V", "mqttv5"], timeout=timeout)


def mosquitto_checks(srv):
    alice = pyjwt_token("alice")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(srv.mqtts_port), "--cafile", srv.pki.ca,
         "-V", "mqttv5", "-u", "any", "-P", alice, "-i", "mosq-alice", "-q", "1",
         "-t", "user/alice", "-C", "1", "-W", str(TIMEOUT), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # mosquitto_sub has no "subscribed" output; give it its SUBACK
        r = mosquitto(srv, ["mosquitto_pub", "-u", "any", "-P", KEY, "-q", "1", "-t", "user/alice",
                            "-m", '{"text":"via mosquitto"}'])
        check("mosquitto_pub --cafile with the API key as password", r.returncode == 0, r.stderr)
        out, err = sub.communicate(timeout=TIMEOUT)
        check("mosquitto_sub --cafile with a PyJWT token receives it",
              sub.returncode == 0 and out.strip() == 'user/alice {"text":"via mosquitto"}', (out, err))
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    r = mosquitto(srv, ["mosquitto_sub", "-u", "any", "-P", alice, "-t", "user/bob", "-E"])
    check("mosquitto_sub: another user's topic is refused",
          "denied" in (r.stdout + r.stderr).lower(), (r.returncode, r.stdout, r.stderr))
    r = mosquitto(srv, ["mosquitto_pub", "-u", "any", "-P", alice, "-q", "1", "-t", "user/bob",
                        "-m", '{"text":"forged"}'])
    # mosquitto_pub reports a refused PUBACK as a warning and exits 0: what counts is the
    # reason and that nothing was stored.
    stored = srv.curl("-H", f"Authorization: Bearer {KEY}", f"{srv.base}/v1/history/user.bob?from=0")
    check("mosquitto_pub: a user may not publish to user/bob (PUBACK Not authorized, nothing stored)",
          "not authorized" in (r.stdout + r.stderr).lower() and stored.stdout.endswith("200")
          and "forged" not in stored.stdout, (r.returncode, r.stderr, stored.stdout))
    r = mosquitto(srv, ["mosquitto_sub", "-u", "any", "-P", "not-a-token", "-t", "user/alice", "-E"])
    check("mosquitto_sub: a bad password is refused at CONNECT", r.returncode != 0,
          (r.returncode, r.stdout, r.stderr))
    r = run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(srv.mqtts_port), "--tls-use-os-certs",
             "-V", "mqttv5", "-u", "any", "-P", alice, "-t", "user/alice", "-E"])
    check("mosquitto_sub refuses the server without the test CA", r.returncode != 0,
          (r.returncode, r.stdout, r.stderr))


def paho_checks(srv):
    alice = Paho(srv, pyjwt_token("alice"), "paho-alice")
    check("paho mqtts: CONNACK with a PyJWT token", alice.connack == 0, alice.connack)
    check("paho mqtts: own topic granted QoS 1", alice.subscribe("user/alice") == [1])
    check("paho mqtts: another user's topic refused", alice.subscribe("user/bob") == [0x87])
    ws = Paho(srv, pyjwt_token("alice"), "paho-alice-ws", transport="websockets")
    check("paho MQTT over wss: CONNACK", ws.connack == 0, ws.connack)
    check("paho MQTT over wss: own topic granted", ws.subscribe("user/alice") == [1])
    feed = Paho(srv, KEY, "paho-feed")
    info = feed.c.publish("user/alice", json.dumps({"text": "via paho"}), qos=1)
    info.wait_for_publish(TIMEOUT)
    check("paho mqtts: the API key publishes (PUBACK)", info.is_published())
    want = ("user/alice", '{"text": "via paho"}')
    wait(lambda: want in alice.msgs and want in ws.msgs, "paho deliveries")
    check("paho: delivered over mqtts and over wss", want in alice.msgs and want in ws.msgs,
          (alice.msgs, ws.msgs))
    bad = Paho(srv, "not-a-token", "paho-bad")
    check("paho mqtts: a bad password gets CONNACK 0x86", int(bad.connack.value) == 0x86, bad.connack)
    for c in (alice, ws, feed, bad):
        c.stop()


def fix_checks(srv):
    srv.publish("quotes.EURUSD", {"bid": "1.08412", "ask": "1.08414"})
    c = FixTls(srv, "PYCLIENT", pyjwt_token("alice"))
    logon = dict(c.recv())
    check("FIX over TLS (Python ssl): Logon answered", logon.get("35") == "A", logon)
    c.send("V", [("262", "py-1"), ("263", "1"), ("264", "1"), ("265", "1"), ("267", "2"),
                 ("269", "0"), ("269", "1"), ("146", "1"), ("55", "EURUSD")])
    w = c.next_app()
    fields = dict(w)
    prices = [v for t, v in w if t == "270"]
    check("FIX over TLS: W with the exact bid and offer",
          fields.get("35") == "W" and fields.get("55") == "EURUSD" and prices == ["1.08412", "1.08414"], w)
    c.send("5", [])
    bye = dict(c.recv())
    check("FIX over TLS: Logout answered", bye.get("35") == "5", bye)
    c.close()


def reload_checks(srv, pki):
    first = fingerprint_of_file(pki.cert)
    ports = {"https": srv.http_port, "mqtts": srv.mqtts_port, "fix": srv.fix_port}
    check("every listener presents the configured certificate",
          all(presented(p, pki) == first for p in ports.values()))
    # Connections opened with the first certificate.
    ws = Wss(srv, pyjwt_token("alice"))
    ws.cmd({"op": "subscribe", "channel": "user.alice"})
    paho = Paho(srv, pyjwt_token("alice"), "paho-reload")
    paho.subscribe("user/alice")

    second = pki.issue(pki.cert, pki.key)
    srv.proc.send_signal(signal.SIGHUP)
    def all_new():
        return all(presented(p, pki) == second for p in ports.values())
    try:
        wait(all_new, "the new certificate")
        check("SIGHUP: new connections on https, mqtts and fix see the new certificate", True)
    except TimeoutError:
        check("SIGHUP: new connections on https, mqtts and fix see the new certificate", False,
              {k: presented(p, pki) for k, p in ports.items()})
    r = srv.curl(f"{srv.base}/healthz")
    check("SIGHUP: curl --cacert still verifies the server", r.stdout.endswith("200"), r.stderr)
    srv.publish("user.alice", {"text": "after reload"})
    p = ws.push()
    check("SIGHUP: the wss connection opened before keeps working", p["data"] == {"text": "after reload"}, p)
    def got():
        return any(t == "user/alice" and json.loads(m) == {"text": "after reload"} for t, m in paho.msgs)
    try:
        wait(got, "the old mqtts connection's delivery")
    except TimeoutError:
        pass
    check("SIGHUP: the mqtts connection opened before keeps working", got(), paho.msgs)
    ws.close()
    paho.stop()

    # A broken file: the reload fails, the server keeps the second certificate and runs on.
    with open(pki.cert, "w") as f:
        f.write("not a certificate\n")
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    check("a failed reload keeps the last good certificate",
          srv.proc.poll() is None and all(presented(p, pki) == second for p in ports.values()))
    r = srv.curl("-H", f"Authorization: Bearer {KEY}", f"{srv.base}/metrics")
    check("the failed reload is counted", 'tickwire_tls_reloads_total{result="failed"} 1' in r.stdout,
          [l for l in r.stdout.splitlines() if "reloads" in l])


def main():
    binary = os.path.abspath(sys.argv[1])
    d = tempfile.mkdtemp(prefix="tickwire-tls-interop-")
    pki = Pki(d)
    srv = Server(binary, d, pki)
    try:
        srv.start()
        for name, scenario in [("https", lambda: https_checks(srv, binary)),
                               ("wss", lambda: wss_checks(srv, binary)),
                               ("mosquitto", lambda: mosquitto_checks(srv)),
                               ("paho", lambda: paho_checks(srv)),
                               ("fix", lambda: fix_checks(srv)),
                               ("reload", lambda: reload_checks(srv, pki))]:
            try:
                scenario()
            except Exception as e:  # a scenario that stops early fails, and the rest still run
                check(f"{name} scenario ran to its end", False, repr(e))
    finally:
        srv.stop()
    if len(PASSED) != EXPECTED_CHECKS and not FAILURES:
        FAILURES.append(f"{len(PASSED)} checks passed, {EXPECTED_CHECKS} expected")
    print(f"TLS interop: {len(PASSED)} passed, {len(FAILURES)} failed"
          + (f" ({'; '.join(FAILURES)})" if FAILURES else ""))
    if FAILURES:
        print(f"server log: {d}/stderr.log", flush=True)
        sys.exit(1)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
