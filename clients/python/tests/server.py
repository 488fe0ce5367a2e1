"""The real tickwire binary on a free loopback port with a temporary data directory, for the
SDK tests. TICKWIRE_BIN names the binary (scripts/test-clients.sh builds it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List, Optional

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "sdk-test-admin-key-0123456789abcdef"
JWT_SECRET = "sdk-test-jwt-secret-0123456789abcdef0123"


def binary() -> str:
    b = os.environ.get("TICKWIRE_BIN")
    if b:
        return b
    t = os.environ.get("CARGO_TARGET_DIR")
    return str(Path(t) / "debug" / "tickwire") if t else str(ROOT / "target" / "debug" / "tickwire")


def jwt(sub: str, ttl: int = 3600, **extra: Any) -> str:
    """An HS256 token for ``sub``, valid ``ttl`` seconds."""
    def b64(o: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    body = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': sub, 'exp': int(time.time()) + ttl, **extra})}"
    sig = hmac.new(JWT_SECRET.encode(), body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, **extra_env: str) -> None:
        self.extra_env = extra_env
        self.bin = binary()
        if not os.path.exists(self.bin):
            raise RuntimeError(f"no server binary at {self.bin}: set TICKWIRE_BIN or run scripts/test-clients.sh")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="tickwire-sdk-py-")
        self.proc: Optional[subprocess.Popen] = None
        self.launch()

    def launch(self) -> None:
        # The server reads every TICKWIRE_* variable as configuration: pass on none of the caller's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")}
        env.update(TICKWIRE_LOG="warn", TICKWIRE_API_KEYS=json.dumps([API_KEY]),
                   TICKWIRE_AUTH__JWT_HMAC_SECRET=JWT_SECRET)
        env.update(self.extra_env)
        self.proc = subprocess.Popen([self.bin, "serve", "--data", self.data, "--http", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited at start ({self.proc.returncode})")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)

    def wipe(self) -> None:
        """Empties the data directory (the server must be stopped): its streams get new epochs."""
        shutil.rmtree(self.data, ignore_errors=True)
        os.mkdir(self.data)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def publish(self, body: Any) -> Any:
        return self.request("POST", "/v1/publish", body)

    def latest(self, channel: str) -> Any:
        return self.request("GET", f"/v1/latest/{channel}")

    def history(self, channel: str) -> List[Any]:
        out: List[Any] = []
        frm = 0
        while True:
            page = self.request("GET", f"/v1/history/{channel}?from={frm}&limit=1000")
            out.extend(page["messages"])
            if not page["messages"] and page["next"] == frm:
                return out
            frm = page["next"]
