// Drives the console in headless Chromium against a running server (identities configured, a FIX
// initiator on `tickwire fix-sim`, 2,500 imported 1m bars for HIST) fed by `tickwire sim`.
// Checks, in order:
//   1. prices and bars show within 5 s behind 3,000 chat lines; chat loads the newest 50 only,
//      each with its time, authors from the server's identity stamp (never the client's `user`);
//   2. a probe quote moves the last bar; a chat line sent from the page arrives;
//   3. the quotes table's Time column (and every other cell) is not clipped and the page has no
//      horizontal scrollbar at 360, 768, 1024, 1280 and 1920 px (screenshots at 360/1024/1920);
//   4. a symbol search filters the table and charts HIST; the chart loads 1,000 bars, and dragging it to the left fetches older pages from
//      /v1/candles until the whole 2,500-bar history is there, in order, without duplicates;
//   5. the Operations view shows health/readiness, connections per edge, namespaces with channel
//      counts and offsets, the FIX session active with its sequence numbers, projection lag;
//      with a key without the admin scope it says 403, with no credential 401.
// Usage: node console-test.cjs <base-url> <artifact-dir>   (NODE_PATH must hold playwright-core;
// CONSOLE_ADMIN_KEY, CONSOLE_READ_KEY, CONSOLE_USER_TOKEN from scripts/test-console.sh)
'use strict';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, art] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN = process.env.CONSOLE_ADMIN_KEY;
const READER = process.env.CONSOLE_READ_KEY;
const USER_TOKEN = process.env.CONSOLE_USER_TOKEN;
const CHECKS_EXPECTED = 16;
let checks = 0;
const passed = [];
function check(name) { checks += 1; passed.push(name); }

function fail(msg) {
  console.error(`CONSOLE TEST FAILED: ${msg}`);
  process.exitCode = 1;
}

async function publish(body, cred = ADMIN) {
  const r = await fetch(base + '/v1/publish', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${cred}` },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`publishing ${JSON.stringify(body).slice(0, 80)}: ${r.status} ${await r.text()}`);
  return r.json();
}

(async () => {
  if (!ADMIN || !READER || !USER_TOKEN) throw new Error('CONSOLE_ADMIN_KEY, CONSOLE_READ_KEY and CONSOLE_USER_TOKEN must be set');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tw-chromium-'));
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
  const shot = path.join(art, 'console.png');
  try {
    // ---- 1. chat history, recent lines only, stamped authors ----
    for (let k = 0; k < 3; k++) {
      const batch = [];
      for (let i = 0; i < 1000; i++) batch.push({ channel: 'chat.lobby', data: { text: `old line ${k * 1000 + i}` } });
      await publish(batch);
    }
    // A user's message, with a forged name in `user`: the server stamps from.sub/from.info.
    await publish({ channel: 'chat.lobby', data: { text: 'signed by a user token', user: 'mallory' } }, USER_TOKEN);
    // A back-end (API key) names the sender itself, without info.
    await publish({ channel: 'chat.lobby', data: { text: 'from the back end', from: { sub: '7' } } });
    // No stamp at all, only a client-written name: shown as anonymous, never as "mallory".
    await publish({ channel: 'chat.lobby', data: { text: 'unsigned line', user: 'mallory' } });

    await page.addInitScript((k) => { if (!sessionStorage.getItem('tw.test.init')) { localStorage.setItem('tw.credential', k); sessionStorage.setItem('tw.test.init', '1'); } }, ADMIN);
    // CONSOLE_TEST_INJECT_CSS: extra CSS for the page, to check that this test fails on a broken
    // layout (e.g. the old fixed 320 px quotes column: '#market{grid-template-columns:320px 1fr 300px!important}').
    if (process.env.CONSOLE_TEST_INJECT_CSS) {
      await page.addInitScript((css) => document.addEventListener('DOMContentLoaded', () => {
        const st = document.createElement('style'); st.textContent = css; document.head.appendChild(st);
      }), process.env.CONSOLE_TEST_INJECT_CSS);
    }
    const loadStart = Date.now();
    await page.goto(base + '/', { waitUntil: 'load' });
    await page.waitForFunction(() => window.tw && tw.connected && tw.symbol && tw.bars > 0 && tw.lastBar,
      null, { timeout: 30000 });
    await page.locator('#quotes tbody tr').first().waitFor({ timeout: 10000 });
    const loadMs = Date.now() - loadStart;
    if (loadMs > 5000) throw new Error(`prices and bars took ${loadMs} ms to show behind 3,000 chat messages`);
    check('prices and bars within 5 s behind 3,000 chat lines');

    await page.waitForFunction(() => tw.chat.length >= 50, null, { timeout: 10000 });
    await page.waitForTimeout(300);
    const chat = await page.evaluate(() => ({
      n: tw.chat.length,
      items: tw.chat.map((m) => ({ text: m.text, who: m.who })),
      lis: [...document.querySelectorAll('#chat li')].map((li) => ({
        time: li.querySelector('time') ? li.querySelector('time').textContent : '',
        dt: li.querySelector('time') ? li.querySelector('time').dateTime : '',
        who: li.querySelector('b') ? li.querySelector('b').textContent : '',
        text: li.textContent,
      })),
    }));
    if (chat.n !== 50) throw new Error(`the chat loaded ${chat.n} lines, not the newest 50`);
    if (chat.items[0].text !== 'old line 2953') throw new Error(`the oldest chat line shown is ${chat.items[0].text}, not old line 2953`);
    if (chat.items[49].text !== 'unsigned line') throw new Error(`the newest chat line is ${chat.items[49].text}`);
    for (const li of chat.lis) {
      if (!/^\d\d:\d\d:\d\d$/.test(li.time.trim())) throw new Error(`a chat line shows the time "${li.time}" (${li.text})`);
      const age = Date.now() - Date.parse(li.dt);
      if (!(age >= -5000 && age < 600000)) throw new Error(`a chat line's time ${li.dt} is not its append time`);
    }
    check('chat: newest 50 lines, each with its time');
    const byText = (t) => chat.lis.find((li) => li.text.includes(t));
    const expectWho = { 'signed by a user token': 'Ada Lovelace: ', 'from the back end': '7: ', 'unsigned line': 'anonymous: ', 'old line 2999': 'anonymous: ' };
    for (const [t, who] of Object.entries(expectWho)) {
      const li = byText(t);
      if (!li) throw new Error(`chat line "${t}" not shown`);
      if (li.who !== who) throw new Error(`chat line "${t}" shows author "${li.who}", expected "${who}"`);
    }
    if (chat.lis.some((li) => li.who.includes('mallory'))) throw new Error('a client-written name (mallory) was shown as an author');
    check('chat: authors from the identity stamp (info.name, sub), client names ignored');

    const canvases = await page.locator('#chart canvas').count();
    if (canvases === 0) throw new Error('the chart drew no canvas');
    const state = await page.evaluate(() => ({ symbol: tw.symbol, bars: tw.bars, last: tw.lastBar }));

    // ---- 2. a probe quote moves the last bar; chat from the page ----
    const dec = (state.last.close.split('.')[1] || '').length;
    let moved = false;
    let target = '';
    for (let attempt = 0; attempt < 3 && !moved; attempt++) {
      const cur = await page.evaluate(() => tw.lastBar);
      target = (Number(cur.high) * 1.05).toFixed(Math.max(dec, 1));
      await publish({ channel: `quotes.${state.symbol}`, data: { bid: target, ask: target } });
      moved = await page.waitForFunction((t) => tw.lastBar && Number(tw.lastBar.high) >= Number(t),
        target, { timeout: 5000 }).then(() => true, () => false);
    }
    if (!moved) throw new Error(`the last bar never reached the probe price ${target}`);
    check('a probe quote moves the last bar');

    const text = `hello from chromium ${Date.now()}`;
    await page.fill('#chat-text', text);
    await page.click('#chat-form button');
    await page.waitForFunction((t) => tw.chat.some((m) => m.text === t), text, { timeout: 10000 });
    await page.locator('#chat li', { hasText: text }).waitFor({ timeout: 5000 });
    check('chat sent from the page arrives');

    // ---- 3. no clipped cells, no horizontal scrollbar, at five widths ----
    const rows = await page.locator('#quotes tbody tr').count();
    if (rows < 4) throw new Error(`the quotes table has ${rows} rows`);
    const widths = [360, 768, 1024, 1280, 1920];
    for (const w of widths) {
      await page.setViewportSize({ width: w, height: 800 });
      await page.waitForTimeout(500);
      const r = await page.evaluate(() => {
        const pane = document.getElementById('quotes-pane');
        const pr = pane.getBoundingClientRect();
        const right = pr.left + pane.clientLeft + pane.clientWidth;
        const bad = [];
        const cells = [...document.querySelectorAll('#quotes th, #quotes td')];
        for (const c of cells) {
          const cr = c.getBoundingClientRect();
          if (c.scrollWidth > c.clientWidth) bad.push(`${c.textContent} scrollWidth ${c.scrollWidth} > clientWidth ${c.clientWidth}`);
          else if (cr.right > right + 0.5) bad.push(`${c.textContent} ends at ${cr.right.toFixed(1)} past the pane's ${right.toFixed(1)}`);
        }
        const times = [...document.querySelectorAll('#quotes tbody td:nth-child(5)')].map((c) => c.textContent);
        const de = document.documentElement;
        return {
          bad, times, cells: cells.length,
          pageScroll: de.scrollWidth > de.clientWidth ? `${de.scrollWidth} > ${de.clientWidth}` : null,
          paneScroll: pane.scrollWidth > pane.clientWidth ? `${pane.scrollWidth} > ${pane.clientWidth}` : null,
        };
      });
      if (r.bad.length) throw new Error(`at ${w} px the quotes table is clipped: ${r.bad.slice(0, 3).join('; ')}`);
      if (r.pageScroll) throw new Error(`at ${w} px the page scrolls sideways (${r.pageScroll})`);
      if (r.paneScroll) throw new Error(`at ${w} px the quotes pane scrolls sideways (${r.paneScroll})`);
      if (!r.times.length || !r.times.every((t) => /^\d\d:\d\d:\d\d\.\d{3}$/.test(t))) throw new Error(`at ${w} px the Time cells read ${r.times.join(',')}`);
      if ([360, 1024, 1920].includes(w)) await page.screenshot({ path: path.join(art, `console-${w}.png`), fullPage: true });
    }
    check(`Time column readable, nothing clipped, no sideways scroll at ${widths.join('/')} px`);
    await page.setViewportSize({ width: 1400, height: 800 });

    // ---- 4. chart scroll-back over 2,500 imported bars ----
    const auth = { headers: { authorization: `Bearer ${ADMIN}` } };
    const hist = await (await fetch(base + '/v1/candles/HIST?res=1m&limit=1', auth)).json();
    const histClose = hist.candles[0].close;
    await publish({ channel: 'quotes.HIST', data: { bid: histClose, ask: histClose } });
    await page.locator('#quotes tr[data-sym="HIST"]').waitFor({ timeout: 15000 });
    // Symbol search: typing filters the table to HIST, Enter charts it, clearing shows all rows.
    await page.fill('#symbol-search', 'his');
    const shown = await page.evaluate(() => [...document.querySelectorAll('#quotes tbody tr')].filter((r) => !r.hidden).map((r) => r.dataset.sym));
    if (shown.join(',') !== 'HIST') throw new Error(`searching "his" shows ${shown.join(',')}`);
    await page.press('#symbol-search', 'Enter');
    await page.waitForFunction(() => tw.symbol === 'HIST', null, { timeout: 5000 });
    await page.fill('#symbol-search', '');
    const all = await page.evaluate(() => [...document.querySelectorAll('#quotes tbody tr')].filter((r) => !r.hidden).length);
    if (all < 5) throw new Error(`clearing the search shows ${all} rows`);
    check('symbol search filters the table and Enter charts the match');
    await page.locator('#resolutions button[data-res="1m"]').click();
    await page.waitForFunction(() => tw.symbol === 'HIST' && tw.res === '1m' && tw.bars >= 1000, null, { timeout: 15000 });
    const first = await page.evaluate(() => ({ bars: tw.bars, oldest: tw.oldestMs, pages: tw.olderPages }));
    if (first.bars > 1001) throw new Error(`the chart loaded ${first.bars} bars at once, expected one page of 1,000`);
    const box = await page.locator('#chart').boundingBox();
    const deadline = Date.now() + 45000;
    while (Date.now() < deadline) {
      const st = await page.evaluate(() => ({ done: tw.historyDone, bars: tw.bars }));
      if (st.done) break;
      // Drag the chart to the right: the view moves back in time, as a user scrolls left.
      await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.4);
      await page.mouse.down();
      await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.4, { steps: 8 });
      await page.mouse.up();
      await page.waitForTimeout(250);
    }
    const after = await page.evaluate(() => ({
      bars: tw.bars, pages: tw.olderPages, done: tw.historyDone, times: tw.barTimes(),
      oldest: tw.oldestMs, visible: tw.visibleRange(),
    }));
    if (!after.done) throw new Error(`scrolling left stopped at ${after.bars} bars after ${after.pages} older pages`);
    if (after.pages < 2) throw new Error(`scroll-back fetched ${after.pages} older pages, expected 2 for 2,500 bars`);
    if (after.bars < 2500) throw new Error(`the chart holds ${after.bars} bars after scrolling back, expected the 2,500 imported`);
    for (let i = 1; i < after.times.length; i++) {
      if (after.times[i] <= after.times[i - 1]) throw new Error(`bar ${i} (${after.times[i]}) is not after bar ${i - 1} (${after.times[i - 1]}): duplicate or out of order`);
    }
    const older = await (await fetch(`${base}/v1/candles/HIST?res=1m&to=${after.oldest - 1}&limit=5`, auth)).json();
    if ((older.candles || []).length) throw new Error(`the server has bars before the chart's oldest (${after.oldest})`);
    if (!after.visible || after.visible.from * 1000 >= first.oldest) throw new Error('the visible range never reached bars older than the first page');
    check(`chart scroll-back: ${first.bars} bars, then ${after.pages} older pages to ${after.bars} bars in order`);

    await page.screenshot({ path: shot });

    // ---- 5. Operations view ----
    await page.click('#tabs button[data-view="ops"]');
    let ops = null;
    const opsDeadline = Date.now() + 20000;
    while (Date.now() < opsDeadline) {
      await page.evaluate(() => tw.refreshOps());
      ops = await page.evaluate(() => tw.ops);
      const fx = (ops.fix || []).find((s) => s.name === 'fixsim');
      if (fx && fx.state === 'active' && fx.next_target_seq > 2) break;
      await page.waitForTimeout(500);
    }
    // A second refresh a moment later: the namespace rates need two readings.
    await page.waitForTimeout(1200);
    await page.evaluate(() => tw.refreshOps());
    ops = await page.evaluate(() => tw.ops);
    const dom = await page.evaluate(() => ({
      health: document.getElementById('health-list').textContent,
      healthRows: document.querySelectorAll('#health-list dt').length,
      conns: document.getElementById('conns').textContent,
      ns: [...document.querySelectorAll('#namespaces tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)),
      fix: [...document.querySelectorAll('#fix tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)),
      proj: [...document.querySelectorAll('#projections tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)),
      visible: !document.getElementById('ops').hidden && document.getElementById('market').hidden,
    }));
    if (!dom.visible) throw new Error('the Operations tab did not switch the view');
    if (ops.healthz !== 200 || ops.readyz !== 200 || !/healthz200 ok/.test(dom.health) || !/readyz200 ready/.test(dom.health)) throw new Error(`health view: ${dom.health}`);
    if (dom.healthRows !== 3) throw new Error(`the health card has ${dom.healthRows} rows, expected 3 (overlapping refreshes?)`);
    check('operations: health and readiness');
    if (!ops.connections || !(ops.connections.websocket >= 1)) throw new Error(`connections per edge: ${JSON.stringify(ops.connections)} (${dom.conns})`);
    if (!/websocket\d+/.test(dom.conns)) throw new Error(`the connections table reads ${dom.conns}`);
    const nsRow = (n) => dom.ns.find((r) => r[0] === n);
    const chatNs = (ops.namespaces || []).find((n) => n.name === 'chat');
    const quotesNs = (ops.namespaces || []).find((n) => n.name === 'quotes');
    if (!chatNs || !(chatNs.next_offset >= 3004) || !(chatNs.channels >= 1)) throw new Error(`chat namespace: ${JSON.stringify(chatNs)}`);
    if (!quotesNs || !(quotesNs.channels >= 6) || !(quotesNs.next_offset > 0)) throw new Error(`quotes namespace: ${JSON.stringify(quotesNs)}`);
    if (!nsRow('chat') || Number(nsRow('chat')[7]) !== chatNs.next_offset || !/^[0-9a-f]{16}$/.test(nsRow('chat')[8])) throw new Error(`namespaces table row for chat: ${JSON.stringify(nsRow('chat'))}`);
    // The console's own WebSocket subscribes to chat and quotes: subscribers per namespace; the
    // simulator keeps publishing quotes, so a rate shows from the second refresh on.
    if (!(Number(nsRow('chat')[3]) >= 1) || !(Number(nsRow('quotes')[3]) >= 1)) throw new Error(`namespace subscribers: ${JSON.stringify(dom.ns)}`);
    if (!(Number(nsRow('quotes')[4]) > 0) || !/B|KiB|MiB|GiB/.test(nsRow('quotes')[6])) throw new Error(`quotes rate and log size: ${JSON.stringify(nsRow('quotes'))} (${JSON.stringify(ops.namespaceStats)})`);
    if (!/websocket\d+\d+/.test(dom.conns)) throw new Error(`subscriptions per edge: ${dom.conns}`);
    check(`operations: connections and subscriptions per edge, namespaces with subscribers, ${nsRow('quotes')[4]} quotes/s, log sizes and offsets`);
    // Channels: the quotes namespace by default, the busiest first, each with its subscribers
    // and a rate from the simulator's ticks; then chat, picked in the card's select.
    const chq = ops.channels || { rows: [] };
    const busy = chq.rows.filter((c) => c.rate > 0 && c.published > 0 && c.offset !== null && c.ts > 0);
    const watched = chq.rows.filter((c) => c.subscribers >= 1);
    const chDom = await page.evaluate(() => [...document.querySelectorAll('#channels tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)));
    if (chq.namespace !== 'quotes' || chq.rows.length < 6 || busy.length < 1 || watched.length < 1) throw new Error(`channels of quotes: ${JSON.stringify(chq).slice(0, 600)}`);
    if (chDom.length !== Math.min(100, chq.rows.length) || chDom[0][0] !== chq.rows[0].channel || !(Number(chDom[0][2]) > 0) || !/^\d\d:\d\d:\d\d\.\d{3}$/.test(chDom[0][5])) throw new Error(`channels table: ${JSON.stringify(chDom.slice(0, 3))}`);
    await page.selectOption('#channels-ns', 'chat');
    await page.waitForFunction(() => tw.ops && tw.ops.channels && tw.ops.channels.namespace === 'chat', null, { timeout: 10000 });
    const chc = await page.evaluate(() => tw.ops.channels);
    const lobby = chc.rows.find((c) => c.channel === 'chat.lobby');
    if (!lobby || !(lobby.published >= 3000) || !(lobby.subscribers >= 1) || lobby.offset !== chatNs.next_offset - 1) throw new Error(`chat.lobby row: ${JSON.stringify(lobby)} (chat next offset ${chatNs.next_offset})`);
    await page.selectOption('#channels-ns', 'quotes');
    check(`operations: channels with subscribers and rates (${busy.length} quotes channels ticking, top ${chDom[0][2]}/s), chat.lobby ${lobby.published} published`);
    // Live graphs: one point per refresh from /metrics; the simulator's quotes make the
    // published/s line non-zero, and each series is drawn as an SVG line of its points.
    const gr = (await page.evaluate(() => tw.ops.graphs)) || { series: {} };
    const pub = (gr.series['published/s'] || []).filter((v) => v !== null);
    const conns = gr.series.connections || [];
    const drawn = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#graphs .graph')]
      .map((g) => [g.dataset.series, (g.querySelector('polyline')?.getAttribute('points') || '').split(' ').filter(Boolean).length])));
    if (pub.length < 2 || !pub.some((v) => v > 0) || !conns.some((v) => v >= 1)) throw new Error(`graph series: ${JSON.stringify(gr.series)}`);
    if (!(drawn['published/s'] >= 2) || !(drawn.connections >= 2) || Object.keys(drawn).length !== 4) throw new Error(`graphs drawn: ${JSON.stringify(drawn)}`);
    check(`operations: live graphs of published/s, delivered/s, connections and subscriptions (${drawn['published/s']} points, newest ${Math.round(pub[pub.length - 1])}/s)`);
    // Clients: a second connection (another identity) is listed and kicked from the table; it
    // gets the operator's disconnect.
    await page.evaluate(({ key }) => new Promise((resolve, reject) => {
      const v = new WebSocket(`${location.origin.replace('http', 'ws')}/v1/ws?token=${encodeURIComponent(key)}`);
      window.victim = { frames: [], closed: false };
      v.onmessage = (e) => window.victim.frames.push(JSON.parse(e.data));
      v.onclose = () => { window.victim.closed = true; };
      v.onerror = () => reject(new Error('victim websocket failed'));
      v.onopen = () => { v.send(JSON.stringify({ id: 1, op: 'subscribe', channel: 'chat.lobby' })); resolve(); };
    }), { key: READER });
    let victimRow = null;
    for (const until = Date.now() + 10000; Date.now() < until && !victimRow;) {
      await page.evaluate(() => tw.refreshOps());
      const cs = await page.evaluate(() => tw.ops.clients || []);
      victimRow = cs.find((c) => c.identity === 'key:reader' && c.edge === 'websocket' && c.subscriptions === 1);
      if (!victimRow) await page.waitForTimeout(300);
    }
    if (!victimRow) throw new Error(`the second connection is not listed: ${JSON.stringify(await page.evaluate(() => tw.ops.clients))}`);
    const clientsText = await page.evaluate(() => document.getElementById('clients').textContent);
    if (!clientsText.includes('key:reader') || !clientsText.includes('key:ops')) throw new Error(`clients table: ${clientsText}`);
    await page.click(`#clients button.kick[data-id="${victimRow.id}"]`);
    await page.waitForFunction(() => window.victim.closed, null, { timeout: 10000 });
    const bye = await page.evaluate(() => window.victim.frames.find((f) => f.op === 'disconnect'));
    if (!bye || bye.code !== 'forbidden' || !/operator/.test(bye.message)) throw new Error(`the kicked client got ${JSON.stringify(bye)}`);
    const lastKick = await page.evaluate(() => tw.lastKick);
    if (!lastKick || lastKick.status !== 204) throw new Error(`kick answered ${JSON.stringify(lastKick)}`);
    check(`operations: clients listed (${victimRow.identity}), one kicked from the table and told why`);
    const fxRow = dom.fix.find((r) => r[0] === 'fixsim');
    if (!fxRow || fxRow[2] !== 'active' || !(Number(fxRow[3]) >= 2) || !(Number(fxRow[4]) > 2)) throw new Error(`FIX session row: ${JSON.stringify(fxRow)} (sessions ${JSON.stringify(ops.fix)})`);
    check(`operations: FIX session active, seq ${fxRow[3]}/${fxRow[4]}`);
    const candlesProj = dom.proj.find((r) => r[0] === 'candles');
    if (!candlesProj || !/^\d+$/.test(candlesProj[2])) throw new Error(`projections table: ${JSON.stringify(dom.proj)}`);
    check('operations: projection lag, every card unclipped at 1024 and 1920 px');
    // Every card shows all of its table at 1024 and 1920 px: nothing cut off or scrolled away.
    for (const w of [1024, 1920]) {
      await page.setViewportSize({ width: w, height: 800 });
      await page.waitForTimeout(400);
      const clipped = await page.evaluate(() => [...document.querySelectorAll('.ops-card')]
        .filter((c) => c.scrollHeight > c.clientHeight + 1 || c.scrollWidth > c.clientWidth + 1)
        .map((c) => `${c.id} ${c.scrollWidth}x${c.scrollHeight} in ${c.clientWidth}x${c.clientHeight}`));
      if (clipped.length) throw new Error(`at ${w} px Operations cards are clipped: ${clipped.join('; ')}`);
      await page.screenshot({ path: path.join(art, `console-ops-${w}.png`) });
    }
    await page.setViewportSize({ width: 1400, height: 800 });

    // Without the admin scope: 403; without a credential: 401 — said, not a blank table.
    await page.fill('#cred', READER);
    await page.click('#cred-form button[type="submit"]');
    await page.waitForFunction(() => /403/.test(document.getElementById('namespaces').textContent) &&
      /403/.test(document.getElementById('fix').textContent) && /403/.test(document.getElementById('conns').textContent), null, { timeout: 10000 });
    await page.click('#cred-clear');
    await page.waitForFunction(() => /401/.test(document.getElementById('namespaces').textContent) &&
      /401/.test(document.getElementById('fix').textContent), null, { timeout: 10000 });
    const anonHealth = await page.evaluate(() => document.getElementById('health-list').textContent);
    if (!/healthz200/.test(anonHealth)) throw new Error(`health without a credential: ${anonHealth}`);
    // The market view without a credential: quotes from the public candle symbol list (the
    // channel list is operator data) with a note saying why, and chat's refusal said.
    await page.click('#tabs button[data-view="market"]');
    await page.reload({ waitUntil: 'load' });
    await page.waitForFunction(() => document.querySelectorAll('#quotes tbody tr').length >= 4 &&
      /401/.test(document.getElementById('quotes-note').textContent) &&
      document.getElementById('chat-note').textContent.length > 0, null, { timeout: 15000 });
    check('operations: 403 without the admin scope, 401 without a credential, health still shown; anonymous market view still has quotes and says why chat is closed');

    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    if (checks !== CHECKS_EXPECTED) throw new Error(`${checks} checks ran, expected ${CHECKS_EXPECTED}`);
    console.log(`CONSOLE TEST PASSED: ${checks}/${CHECKS_EXPECTED} checks — ${passed.join('; ')}; ` +
      `${state.symbol} probe quote ${target}, ${rows} quote rows, prices ${loadMs} ms after load; screenshots in ${art}`);
    ok = true;
  } catch (e) {
    try { await page.screenshot({ path: shot }); } catch (_) { /* nothing to save */ }
    fail(`${e.message} (after ${checks} checks: ${passed.join('; ')}; screenshot ${shot})`);
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (!ok) process.exitCode = 1;
})().catch((e) => { fail(e.message); });
