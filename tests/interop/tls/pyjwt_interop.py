#!/usr/bin/env python3
"""PyJWT against the real tickwire binary, over TLS.

Tokens are minted with PyJWT (https://pyjwt.readthedocs.io) — HS256 from the shared secret,
RS256, ES256 and EdDSA (Ed25519) from keys made with the `cryptography` package — the way a
customer's own auth server would. The public keys reach the server the way an identity
provider publishes them: a JWKS document served by a small HTTP server on 127.0.0.1 (this
process), named by `[auth] jwks_url`. Each kind of token must be accepted by REST
(`Authorization: Bearer`), SSE (`?token=`) and the WebSocket (`?token=` and the `connect`
command); expired tokens, tokens for another audience or issuer, tokens signed by the wrong key
and unsigned tokens must be refused with the documented errors (docs/protocol.md: 401 with
problem code `token_expired` or `unauthorized`; the `connect` command's error code). A key the
provider adds later (a rotation) is picked up when a token first names it. MQTT over TLS (paho)
takes a JWKS-verified token as its password.

Usage: pyjwt_interop.py /path/to/tickwire
Prints one line per check and a summary line `PyJWT interop: N passed, M failed`; exits 1 if
anything failed or fewer checks ran than expected. Every process and server it starts is
stopped before it exits.
"""

import http.client
import http.server
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

import interop  # noqa: E402  (the TLS interop's helpers: test CA, server, paho, checks)
from interop import KEY, SECRET, TIMEOUT, Paho, Pki, check, free_port, wait, ws_connect  # noqa: E402

AUDIENCE = "tickwire-interop"
ISSUER = "https://idp.interop.test"
# Every check() call on the success path; a run that stops early must not pass as "0 failed".
EXPECTED_CHECKS = 33


# ---- the identity provider: keys and a JWKS endpoint on 127.0.0.1 ----

class Key:
    """A signing key: PyJWT's algorithm name, its kid, the private key and the public JWK."""

    def __init__(self, alg, kid, private):
        self.alg, self.kid, self.private = alg, kid, private
        algo = jwt.get_algorithm_by_name(alg)
        self.jwk = dict(algo.to_jwk(private.public_key(), as_dict=True), kid=kid, alg=alg, use="sig")

    def token(self, sub, **claims):
        body = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 3600}
        body.update(claims)
        return jwt.encode(body, self.private, algorithm=self.alg, headers={"kid": self.kid})


def rsa_key(kid):
    return Key("RS256", kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid):
    return Key("ES256", kid, ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid):
    return Key("EdDSA", kid, ed25519.Ed25519PrivateKey.generate())


def hs_token(sub, secret=SECRET, **claims):
    body = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 3600}
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


class Jwks:
    """Serves {"keys": [...]} at /jwks.json over plain HTTP on 127.0.0.1 (tickwire allows http
    only to a loopback address) and counts the fetches."""

    def __init__(self, keys):
        self.keys, self.hits = list(keys), 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                # An encryption key beside the signing keys, as Keycloak publishes: the server
                # must skip it, not refuse the document.
                enc = dict(outer.keys[0].jwk) if outer.keys and outer.keys[0].jwk["kty"] == "RSA" else None
                keys = [k.jwk for k in outer.keys]
                if enc:
                    enc.update(kid="enc-1", use="enc", alg="RSA-OAEP")
                    keys.append(enc)
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- clients ----

def rest(srv, path, token):
    """GET over HTTPS with a bearer token: (status, JSON body or None)."""
    conn = http.client.HTTPSConnection("127.0.0.1", srv.http_port, timeout=TIMEOUT,
                                       context=ssl.create_default_context(cafile=srv.pki.ca))
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


def sse_first(srv, channel, token):
    """Opens /v1/sse for channel from offset 0 with ?token=: (status, first data object or
    the problem body)."""
    q = urllib.parse.urlencode({"channel": channel, "from": "0", "token": token})
    conn = http.client.HTTPSConnection("127.0.0.1", srv.http_port, timeout=TIMEOUT,
                                       context=ssl.create_default_context(cafile=srv.pki.ca))
    try:
        conn.request("GET", f"/v1/sse?{q}")
        r = conn.getresponse()
        if r.status != 200:
            return r.status, json.loads(r.read() or b"null")
        while True:
            line = r.fp.readline()
            if not line:
                return r.status, None
            if line.startswith(b"data:"):
                return r.status, json.loads(line[5:])
    finally:
        conn.close()


def ws_open(srv, query=""):
    ctx = ssl.create_default_context(cafile=srv.pki.ca)
    return ws_connect(f"wss://127.0.0.1:{srv.http_port}/v1/ws{query}", ssl=ctx,
                      open_timeout=TIMEOUT)


def ws_cmd(ws, v):
    ws.send(json.dumps(v))
    while True:
        f = json.loads(ws.recv(timeout=TIMEOUT))
        if f.get("id") == v["id"]:
            return f


def ws_subscribe_own(srv, sub, token):
    """Connects with ?token= and subscribes to user.<sub>: the reply."""
    with ws_open(srv, f"?token={token}") as ws:
        return ws_cmd(ws, {"id": 1, "op": "subscribe", "channel": f"user.{sub}"})


def ws_upgrade_refusal(srv, token):
    """Connects with ?token=, expecting a refusal at the upgrade: (status, problem code)."""
    try:
        with ws_open(srv, f"?token={token}"):
            return 101, None
    except InvalidStatus as e:
        body = e.response.body or b"{}"
        return e.response.status_code, json.loads(body).get("code")


def ws_connect_op(srv, token):
    """Connects without a credential and sends {"op":"connect","token":...}: the reply."""
    with ws_open(srv) as ws:
        return ws_cmd(ws, {"id": 1, "op": "connect", "token": token})


# ---- the server ----

def server(binary, d, pki, jwks_url):
    srv = interop.Server(binary, d, pki)
    with open(srv.cfg, "w") as f:
        f.write(f"""
[auth]
jwt_hmac_secret = "{SECRET}"
jwks_url = "{jwks_url}"
jwt_audience = ["{AUDIENCE}"]
jwt_issuer = "{ISSUER}"
leeway_secs = 0
[[auth.api_keys]]
name = "ops"
key = "{KEY}"

[tls]
cert_file = "{pki.cert}"
key_file = "{pki.key}"

[mqtt]
tls_listen = "127.0.0.1:{srv.mqtts_port}"
""")
    return srv


# ---- scenarios ----

def accepted_everywhere(srv, keys):
    """Every algorithm, every edge: REST, SSE, WebSocket (?token= and connect)."""
    minted = [("HS256", lambda sub: hs_token(sub))] + [(k.alg, k.token) for k in keys]
    for alg, mint in minted:
        sub = f"{alg.lower()}-user"
        token = mint(sub)
        # Something to read on the user's own private channel.
        if not srv.publish(f"user.{sub}", {"for": alg}):
            raise RuntimeError(f"publish to user.{sub} failed")
        status, body = rest(srv, f"/v1/history/user.{sub}?from=0", token)
        check(f"{alg}: REST history of the user's own channel",
              status == 200 and body["messages"][0]["data"] == {"for": alg}, (status, body))
        status, first = sse_first(srv, f"user.{sub}", token)
        check(f"{alg}: SSE ?token= streams the user's own channel",
              status == 200 and first and first["data"] == {"for": alg}, (status, first))
        r = ws_subscribe_own(srv, sub, token)
        check(f"{alg}: WebSocket ?token= subscribes to the user's own channel", r.get("ok") is True, r)
        r = ws_connect_op(srv, token)
        check(f"{alg}: WebSocket connect command names the user",
              r.get("ok") is True and r.get("identity") == f"user:{sub}", r)
    # The token's identity is what counts: another user's channel stays closed.
    status, body = rest(srv, "/v1/history/user.someone-else?from=0", keys[0].token("rs-user"))
    check("RS256: another user's channel is 403 forbidden",
          status == 403 and body["code"] == "forbidden", (status, body))


def refused_everywhere(srv, keys):
    rsa_k, ec_k, ed_k = keys
    now = int(time.time())
    cases = [
        ("expired (RS256)", rsa_k.token("late", exp=now - 60), "token_expired"),
        ("expired (HS256)", hs_token("late", exp=now - 60), "token_expired"),
        ("another audience (ES256)", ec_k.token("aud", aud="someone-else"), "unauthorized"),
        ("another issuer (EdDSA)", ed_k.token("iss", iss="https://evil.test"), "unauthorized"),
        # The provider's kid, another key: a forgery.
        ("wrong key, same kid (EdDSA)",
         Key("EdDSA", ed_k.kid, ed25519.Ed25519PrivateKey.generate()).token("forged"), "unauthorized"),
        ("wrong key, same kid (RS256)",
         Key("RS256", rsa_k.kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))
         .token("forged"), "unauthorized"),
        ("wrong HMAC secret (HS256)", hs_token("forged", secret="x" * 40), "unauthorized"),
        ("unsigned (alg none)",
         jwt.encode({"sub": "none", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 3600}, None,
                    algorithm="none"), "unauthorized"),
    ]
    for name, token, code in cases:
        rs, rb = rest(srv, "/v1/history/chat.lobby?from=0", token)
        ss, sb = sse_first(srv, "chat.lobby", token)
        ws, wc = ws_upgrade_refusal(srv, token)
        co = ws_connect_op(srv, token)
        ok = (rs == 401 and rb and rb.get("code") == code
              and ss == 401 and sb and sb.get("code") == code
              and ws == 401 and wc == code
              and co.get("ok") is False and co.get("error", {}).get("code") == code)
        check(f"{name}: REST, SSE and WebSocket upgrade 401 `{code}`, connect command `{code}`", ok,
              {"rest": (rs, rb), "sse": (ss, sb), "ws": (ws, wc), "connect": co})


def rotation(srv, jwks, keys):
    """The provider adds a key: the first token naming it starts a fetch, then it verifies."""
    new = rsa_key("rsa-2")
    jwks.keys.append(new)
    hits = jwks.hits
    token = new.token("rotated")
    status, body = rest(srv, "/v1/history/chat.lobby?from=0", token)
    check("rotation: a token naming a key not yet fetched is 401 `unauthorized` (retry)",
          status == 401 and body["code"] == "unauthorized" and "retry" in body.get("detail", ""),
          (status, body))
    try:
        wait(lambda: rest(srv, "/v1/history/chat.lobby?from=0", token)[0] == 200,
             "the rotated key", timeout=10)
        ok = True
    except TimeoutError:
        ok = False
    check("rotation: the new key verifies once the server refetched the JWKS", ok)
    check("rotation: one fetch for the unknown kid", jwks.hits == hits + 1, (hits, jwks.hits))
    # The provider withdraws the first RSA key; the server learns of it at its next refresh
    # (jwks_refresh_secs), not here: what matters is that the new key keeps working.
    status, _ = rest(srv, "/v1/history/chat.lobby?from=0", keys[1].token("still"))
    check("rotation: the other keys still verify", status == 200, status)


def mqtt_over_tls(srv, keys):
    alice = Paho(srv, keys[2].token("alice"), "pyjwt-eddsa")
    check("paho mqtts: an EdDSA (JWKS) token as password gets CONNACK 0", alice.connack == 0, alice.connack)
    check("paho mqtts: own topic granted", alice.subscribe("user/alice") == [1])
    alice.stop()
    late = Paho(srv, keys[0].token("alice", exp=int(time.time()) - 60), "pyjwt-late")
    # docs/mqtt.md: a credential that does not verify is refused at CONNECT with v5 0x86.
    check("paho mqtts: an expired token gets CONNACK 0x86 Bad user name or password",
          int(late.connack.value) == 0x86, late.connack)
    late.stop()


def main():
    binary = os.path.abspath(sys.argv[1])
    d = tempfile.mkdtemp(prefix="tickwire-pyjwt-interop-")
    pki = Pki(d)
    keys = [rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1")]
    jwks = Jwks(keys)
    srv = server(binary, d, pki, jwks.url)
    try:
        srv.start()
        check("the JWKS was fetched at start", jwks.hits >= 1, jwks.hits)
        for name, scenario in [("accepted", lambda: accepted_everywhere(srv, keys)),
                               ("refused", lambda: refused_everywhere(srv, keys)),
                               ("rotation", lambda: rotation(srv, jwks, keys)),
                               ("mqtt", lambda: mqtt_over_tls(srv, keys))]:
            try:
                scenario()
            except Exception as e:  # a scenario that stops early fails, and the rest still run
                check(f"{name} scenario ran to its end", False, repr(e))
    finally:
        srv.stop()
        jwks.stop()
    passed, failures = interop.PASSED, interop.FAILURES
    if len(passed) != EXPECTED_CHECKS and not failures:
        failures.append(f"{len(passed)} checks passed, {EXPECTED_CHECKS} expected")
    print(f"PyJWT interop: {len(passed)} passed, {len(failures)} failed"
          + (f" ({'; '.join(failures)})" if failures else ""))
    if failures:
        print(f"server log: {d}/stderr.log", flush=True)
        sys.exit(1)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
