// The real tickwire binary on a free loopback port with a temporary data directory, for the
// SDK tests. TICKWIRE_BIN names the binary (scripts/test-clients.sh builds it).
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** $TICKWIRE_BIN, else $CARGO_TARGET_DIR/debug/tickwire, else the repository's target/debug. */
function defaultBin() {
  const t = process.env.CARGO_TARGET_DIR;
  return t ? join(t, "debug", "tickwire") : join(ROOT, "target", "debug", "tickwire");
}

/** Every server started and not stopped: stopped at exit, whatever happened. */
const running = new Set();
process.on("exit", () => {
  for (const s of running) {
    try {
      s.child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
});

export const API_KEY = "sdk-test-admin-key-0123456789abcdef";
export const JWT_SECRET = "sdk-test-jwt-secret-0123456789abcdef0123";

/** An HS256 token for `sub`, valid `ttl` seconds. */
export function jwt(sub, ttl = 3600, extra = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttl, ...extra })}`;
  const sig = createHmac("sha256", JWT_SECRET).update(body).digest("base64url");
  return `${body}.${sig}`;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class Server {
  static async start(env = {}) {
    const bin = process.env.TICKWIRE_BIN || defaultBin();
    if (!existsSync(bin)) throw new Error(`no server binary at ${bin}: set TICKWIRE_BIN or run scripts/test-clients.sh`);
    const s = new Server();
    s.bin = bin;
    s.port = await freePort();
    s.url = `http://127.0.0.1:${s.port}`;
    s.data = mkdtempSync(join(tmpdir(), "tickwire-sdk-js-"));
    s.env = env;
    running.add(s);
    try {
      await s.launch();
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  async launch() {
    // The server reads every TICKWIRE_* variable as configuration: pass on none of the caller's.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TICKWIRE_")));
    this.child = spawn(this.bin, ["serve", "--data", this.data, "--http", `127.0.0.1:${this.port}`], {
      env: {
        ...env,
        TICKWIRE_LOG: "warn",
        TICKWIRE_API_KEYS: JSON.stringify([API_KEY]),
        TICKWIRE_AUTH__JWT_HMAC_SECRET: JWT_SECRET,
        ...this.env,
      },
      stdio: ["ignore", "ignore", "inherit"],
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20000;
    for (;;) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`the server exited at start (${this.child.exitCode ?? this.child.signalCode})`);
      }
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error("the server did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGKILL: nothing flushed, nothing answered. */
  async kill9() {
    this.child.kill("SIGKILL");
    await this.exited;
  }

  /** SIGTERM: clients get a disconnect with resume points. */
  async terminate() {
    this.child.kill("SIGTERM");
    return this.exited;
  }

  /** Empties the data directory (the server must be stopped): its streams get new epochs. */
  wipe() {
    rmSync(this.data, { recursive: true, force: true });
    mkdirSync(this.data);
  }

  async restart() {
    await this.launch();
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    running.delete(this);
    rmSync(this.data, { recursive: true, force: true });
  }

  /** POST /v1/publish with `text` as the body, byte for byte. */
  async publishRaw(text) {
    const r = await fetch(`${this.url}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: text,
    });
    if (!r.ok) throw new Error(`publish: ${r.status} ${await r.text()}`);
    return r.json();
  }

  async publish(body) {
    const r = await fetch(`${this.url}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`publish: ${r.status} ${await r.text()}`);
    return r.json();
  }

  async history(channel) {
    const out = [];
    let from = 0;
    for (;;) {
      const r = await fetch(`${this.url}/v1/history/${channel}?from=${from}&limit=1000`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      });
      const page = await r.json();
      out.push(...page.messages);
      if (page.messages.length === 0 && page.next === from) return out;
      from = page.next;
    }
  }
}

/** Resolves when `cond()` holds, polling; fails after `ms`. */
export async function until(cond, ms = 20000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
