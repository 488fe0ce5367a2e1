// The built package in a real browser (headless Chromium, driven by playwright-core): a page of
// another origin imports dist/index.js and uses the browser's own WebSocket and fetch against
// the real server, which allows that origin (http.allowed_origins, http.cors_allowed_origins).
// CHROMIUM names the browser (default /usr/bin/chromium; scripts/test-clients.sh installs it).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { API_KEY, Server } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let page;
let web;
let srv;
let ctx;
let profile;
before(async () => {
  // The page's origin: a static server for the page and the package.
  web = createServer((req, res) => {
    if (req.url === "/index.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(readFileSync(join(here, "..", "dist", "index.js")));
    } else {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>tickwire sdk</title><p>sdk test</p>");
    }
  });
  await new Promise((r) => web.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${web.address().port}`;
  srv = await Server.start({
    TICKWIRE_HTTP__ALLOWED_ORIGINS: JSON.stringify([origin]),
    TICKWIRE_HTTP__CORS_ALLOWED_ORIGINS: JSON.stringify([origin]),
  });
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: set CHROMIUM or run scripts/test-clients.sh`);
  profile = mkdtempSync(join(tmpdir(), "tw-sdk-chromium-"));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  page = ctx.pages()[0] || (await ctx.newPage());
  await page.goto(origin + "/");
});
after(async () => {
  await ctx?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await srv?.stop();
  web?.close();
});

test("in a browser: the global WebSocket, a stream from an offset, pipelined publishes, a book, typed errors", async () => {
  const r = await page.evaluate(
    async ({ url, key }) => {
      const sdk = await import("/index.js");
      const c = new sdk.TickwireClient({ url, token: key });
      await c.connect();
      const got = [];
      const sub = c.subscribe("chat.browser", (m) => got.push(m.data.i), { from: 0 });
      await sub.ready;
      const acks = await Promise.all([0, 1, 2, 3, 4].map((i) => c.publish("chat.browser", { i })));
      const deadline = Date.now() + 5000;
      while (got.length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      let shown;
      const first = new Promise((res) => (shown = res));
      const w = sdk.watchBook(c, "BRWSR", (b) => b.asks.length > 0 && shown(b));
      await w.ready;
      await c.publish("depth.BRWSR", {
        snapshot: [
          { side: "bid", price: "1.5", size: "2" },
          { side: "ask", price: "1.50000000000000000000000001", size: "1" },
        ],
      });
      const book = await first;
      let badToken = "";
      try {
        await new sdk.TickwireClient({ url, token: "not-a-token" }).connect();
      } catch (e) {
        badToken = `${e.name}:${e.code}`;
      }
      let badData = "";
      try {
        await c.publish("quotes.EURUSD", { bid: 1.08, ask: "1.09" });
      } catch (e) {
        badData = `${e.name}:${e.code}`;
      }
      await c.close();
      return {
        native: typeof WebSocket === "function",
        got,
        inOrder: acks.every((a, i) => i === 0 || a.offset > acks[i - 1].offset),
        asks: book.asks,
        bids: book.bids,
        checksumOk: book.known,
        badToken,
        badData,
      };
    },
    { url: srv.url, key: API_KEY },
  );
  assert.equal(r.native, true);
  assert.deepEqual(r.got, [0, 1, 2, 3, 4]);
  assert.equal(r.inOrder, true);
  assert.deepEqual(r.asks, [["1.50000000000000000000000001", "1"]]);
  assert.deepEqual(r.bids, [["1.5", "2"]]);
  assert.equal(r.checksumOk, true);
  assert.equal(r.badToken, "AuthError:unauthorized");
  assert.equal(r.badData, "RequestError:bad_data");
});
