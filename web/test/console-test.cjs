// Drives the console in headless Chromium against a running server fed by `tickwire sim`:
// the chart renders bars, a new quote moves the last bar, a chat message appears.
// Usage: node console-test.cjs <base-url> <screenshot.png>   (NODE_PATH must hold playwright-core)
'use strict';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, shot] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(msg) {
  console.error(`CONSOLE TEST FAILED: ${msg}`);
  process.exitCode = 1;
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tw-chromium-'));
  // The required flags; --user-data-dir is passed as the persistent-context profile.
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 800 },
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  let ok = false;
  try {
    // 0. A long chat history: the page must not replay it before showing prices (with 3,000
    //    messages it once showed "No quotes yet" and an empty chart for a minute).
    for (let k = 0; k < 3; k++) {
      const batch = [];
      for (let i = 0; i < 1000; i++) {
        batch.push({ channel: 'chat.lobby', data: { user: 'history', text: `old line ${k * 1000 + i}` } });
      }
      const r = await fetch(base + '/v1/publish', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(batch),
      });
      if (!r.ok) throw new Error(`publishing chat history: ${r.status} ${await r.text()}`);
    }
    const loadStart = Date.now();
    await page.goto(base + '/', { waitUntil: 'load' });
    // 1. The chart renders bars: history + live for the first symbol.
    await page.waitForFunction(() => window.tw && tw.connected && tw.symbol && tw.bars > 0 && tw.lastBar,
      null, { timeout: 30000 });
    await page.locator('#quotes tbody tr').first().waitFor({ timeout: 10000 });
    const loadMs = Date.now() - loadStart;
    if (loadMs > 5000) throw new Error(`prices and bars took ${loadMs} ms to show behind 3,000 chat messages`);
    // Only the newest chat lines, each with its time.
    await page.waitForFunction(() => tw.chat.length >= 100, null, { timeout: 10000 });
    const chat = await page.evaluate(() => ({
      n: tw.chat.length,
      last: tw.chat[tw.chat.length - 1].text,
      times: document.querySelectorAll('#chat li time').length,
    }));
    if (chat.n !== 100) throw new Error(`the chat loaded ${chat.n} lines, not the newest 100`);
    if (chat.last !== 'old line 2999') throw new Error(`the newest chat line is ${chat.last}`);
    if (chat.times !== 100) throw new Error(`${chat.times} of 100 chat lines show their time`);
    const canvases = await page.locator('#chart canvas').count();
    if (canvases === 0) throw new Error('the chart drew no canvas');
    const state = await page.evaluate(() => ({ symbol: tw.symbol, bars: tw.bars, last: tw.lastBar }));
    const rows = await page.locator('#quotes tbody tr').count();
    if (rows === 0) throw new Error('the quotes table is empty');

    // 2. A new quote moves the last bar: a price far above anything the sim makes.
    const dec = (state.last.close.split('.')[1] || '').length;
    let moved = false;
    let target = '';
    for (let attempt = 0; attempt < 3 && !moved; attempt++) {
      const cur = await page.evaluate(() => tw.lastBar);
      target = (Number(cur.high) * 1.05).toFixed(Math.max(dec, 1));
      const r = await fetch(base + '/v1/publish', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ channel: `quotes.${state.symbol}`, data: { bid: target, ask: target } }),
      });
      if (!r.ok) throw new Error(`publishing the probe quote: ${r.status} ${await r.text()}`);
      moved = await page.waitForFunction((t) => tw.lastBar && Number(tw.lastBar.high) >= Number(t),
        target, { timeout: 5000 }).then(() => true, () => false);
    }
    if (!moved) throw new Error(`the last bar never reached the probe price ${target}`);

    // 3. Chat over the same WebSocket.
    const text = `hello from chromium ${Date.now()}`;
    await page.fill('#chat-name', 'e2e');
    await page.fill('#chat-text', text);
    await page.click('#chat-form button');
    await page.waitForFunction((t) => tw.chat.some((m) => m.text === t), text, { timeout: 10000 });
    await page.locator('#chat li', { hasText: text }).waitFor({ timeout: 5000 });

    await page.waitForTimeout(500);
    await page.screenshot({ path: shot });
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    const fin = await page.evaluate(() => ({ bars: tw.bars, updates: tw.barUpdates }));
    console.log(`CONSOLE TEST PASSED: ${state.symbol} ${fin.bars} bars (${fin.updates} live updates), ` +
      `probe quote moved the last bar to ${target}, chat message shown, ${rows} quote rows, ` +
      `prices ${loadMs} ms after load behind 3,000 chat lines (newest 100 shown with times), screenshot ${shot}`);
    ok = true;
  } catch (e) {
    try { await page.screenshot({ path: shot }); } catch (_) { /* nothing to save */ }
    fail(`${e.message} (screenshot ${shot})`);
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (!ok) process.exitCode = 1;
})();
