// Every ```js block of README.md runs against the real server, importing the built package:
// the README's examples cannot rot.
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

import { API_KEY, Server } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(here, "..", "README.md"), "utf8");
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

let srv;
before(async () => {
  srv = await Server.start();
});
after(async () => {
  await srv?.stop();
});

test("the README has examples", () => {
  assert.ok(blocks.length >= 3, `${blocks.length} blocks`);
});

blocks.forEach((code, i) => {
  test(`README example ${i + 1} runs`, async () => {
    process.env.TICKWIRE_URL = srv.url;
    process.env.TICKWIRE_TOKEN = API_KEY;
    const file = join(here, `.readme-example-${i + 1}.mjs`);
    const dist = pathToFileURL(join(here, "..", "dist", "index.js")).href;
    writeFileSync(file, code.replaceAll('"@tickwire/client"', JSON.stringify(dist)));
    try {
      const mod = await import(pathToFileURL(file).href);
      if (typeof mod.default === "function") await mod.default();
    } finally {
      rmSync(file, { force: true });
    }
  });
});
