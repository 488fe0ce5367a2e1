// Tickwire console: quotes table, live candles, chat and health over ONE WebSocket, and an
// operations view (health, connections, live graphs, clients with kick, namespaces and
// channels with rates, FIX sessions, projections) from REST.
// Prices arrive as decimal strings and are shown as received; only the chart converts them to
// numbers, because lightweight-charts plots floats.
(function () {
  'use strict';
  const RESOLUTIONS = ['1s', '5s', '1m', '5m', '15m', '1h', '4h', '1D'];
  const MAX_QUOTES = 60;
  const CHAT_LAST = 50; // chat on load: the newest 50 lines, then live
  const MAX_CHAT_LINES = 500;
  const PAGE = 1000; // bars per /v1/candles request (first load and each scroll-back page)
  const $ = (id) => document.getElementById(id);

  // A credential (API key or JWT) the operator gave in the Operations view: REST sends it as a
  // Bearer token, the WebSocket as ?token=. Without one the console is anonymous.
  let cred = '';
  try { cred = localStorage.getItem('tw.credential') || ''; } catch (_) { /* storage off */ }
  function api(path) {
    const headers = cred ? { authorization: `Bearer ${cred}` } : {};
    return fetch(path, { headers });
  }
  // A 401/403 as a sentence for the page.
  function refused(r) {
    if (r.status === 401) return cred ? 'the credential was refused (401)' : 'needs a credential with the admin scope (401): enter one under Operations';
    if (r.status === 403) return 'needs the admin scope (403): enter an admin API key under Operations';
    return null;
  }

  // State exposed for tests and debugging (window.tw).
  const tw = (window.tw = {
    connected: false,
    symbol: null,
    res: '1m',
    bars: 0,
    lastBar: null,
    barUpdates: 0,
    quotes: {},
    chat: [],
    olderPages: 0,
    oldestMs: null,
    historyDone: false,
    ops: {},
  });

  // ---- chart ----
  const chart = LightweightCharts.createChart($('chart'), {
    autoSize: true,
    layout: { background: { color: '#0f1419' }, textColor: '#c8d0d8' },
    grid: { vertLines: { color: '#1d252d' }, horzLines: { color: '#1d252d' } },
    timeScale: { timeVisible: true, secondsVisible: true },
    rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.25 } },
  });
  const candleSeries = chart.addCandlestickSeries({
    upColor: '#26a69a', downColor: '#ef5350', borderVisible: false,
    wickUpColor: '#26a69a', wickDownColor: '#ef5350',
  });
  const volumeSeries = chart.addHistogramSeries({
    priceFormat: { type: 'volume' }, priceScaleId: '', color: '#3b4b5c',
  });
  volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

  function decimals(s) {
    const i = String(s).indexOf('.');
    return i < 0 ? 0 : String(s).length - i - 1;
  }
  function toBar(c) {
    return {
      time: Math.floor(c.start_ms / 1000),
      open: +c.open, high: +c.high, low: +c.low, close: +c.close,
    };
  }
  function toVol(c) {
    return {
      time: Math.floor(c.start_ms / 1000), value: +c.volume,
      color: +c.close >= +c.open ? 'rgba(38,166,154,.5)' : 'rgba(239,83,80,.5)',
    };
  }
  function showLast(c) {
    tw.lastBar = c;
    $('last-bar').textContent =
      `${tw.res} ${new Date(c.start_ms).toISOString().slice(11, 19)}Z  O ${c.open} H ${c.high} L ${c.low} C ${c.close} V ${c.volume}`;
  }

  // ---- one WebSocket for quotes, candles and chat ----
  let ws = null;
  let nextId = 1;
  const subs = new Set();
  const pending = new Map();
  function send(cmd) {
    cmd.id = nextId++;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(cmd));
    return new Promise((resolve) => pending.set(cmd.id, resolve));
  }
  function subscribe(channel, from, last) {
    subs.add(channel);
    const cmd = { op: 'subscribe', channel };
    if (from !== undefined) cmd.from = from;
    else if (last !== undefined) cmd.last = last;
    return send(cmd);
  }
  function unsubscribe(channel) {
    subs.delete(channel);
    return send({ op: 'unsubscribe', channel });
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = cred ? `?token=${encodeURIComponent(cred)}` : '';
    ws = new WebSocket(`${proto}://${location.host}/v1/ws${q}`);
    ws.onopen = () => {
      tw.connected = true;
      $('conn').textContent = 'live';
      $('conn').className = 'pill ok';
      const again = [...subs];
      subs.clear();
      again.filter((c) => !c.startsWith('chat.')).forEach((c) => subscribe(c));
      // A reconnect resumes where the chat was; a first load shows the newest lines only,
      // instead of replaying the whole channel before anything else arrives.
      if (tw.chatNext !== undefined) subscribe('chat.lobby', tw.chatNext);
      else subscribe('chat.lobby', undefined, CHAT_LAST).then((r) => {
        $('chat-note').textContent = r && r.ok === false ? `chat: ${r.error && r.error.message}` : '';
      });
      refreshSymbols();
    };
    ws.onclose = () => {
      tw.connected = false;
      $('conn').textContent = 'reconnecting…';
      $('conn').className = 'pill bad';
      setTimeout(connect, 1000);
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      if (m.id !== undefined && pending.has(m.id)) {
        pending.get(m.id)(m);
        pending.delete(m.id);
        return;
      }
      if (!m.ch) return;
      if (m.ch.startsWith('quotes.')) onQuote(m.ch.slice(7), m);
      else if (m.ch.startsWith('candles.')) onCandle(m);
      else if (m.ch.startsWith('chat.')) onChat(m);
    };
  }

  // ---- quotes ----
  function onQuote(sym, m) {
    const d = m.data || {};
    const prev = tw.quotes[sym];
    tw.quotes[sym] = { bid: d.bid, ask: d.ask, ts: m.ts };
    let row = document.querySelector(`tr[data-sym="${CSS.escape(sym)}"]`);
    if (!row) {
      row = document.createElement('tr');
      row.dataset.sym = sym;
      row.innerHTML = '<td></td><td></td><td></td><td></td><td></td>';
      row.onclick = () => select(sym);
      const rows = [...$('quotes').tBodies[0].rows];
      const after = rows.find((r) => r.dataset.sym > sym);
      $('quotes').tBodies[0].insertBefore(row, after || null);
      filterRows();
      $('quotes-empty').style.display = 'none';
      if (!tw.symbol) select(sym);
    }
    const cells = row.cells;
    const dir = prev && prev.bid !== undefined && d.bid !== undefined ? Math.sign(+d.bid - +prev.bid) : 0;
    cells[0].textContent = sym;
    cells[1].textContent = d.bid ?? d.last ?? '';
    cells[2].textContent = d.ask ?? '';
    cells[1].className = dir > 0 ? 'up' : dir < 0 ? 'down' : cells[1].className;
    if (d.bid !== undefined && d.ask !== undefined) {
      const p = Math.max(decimals(d.bid), decimals(d.ask));
      cells[3].textContent = (+d.ask - +d.bid).toFixed(p);
    }
    cells[4].textContent = new Date(m.ts).toISOString().slice(11, 23);
  }

  async function refreshSymbols() {
    try {
      let chans = [];
      const r = await api('/v1/channels/quotes');
      if (r.ok) {
        chans = (await r.json()).channels || [];
        $('quotes-note').textContent = '';
      } else {
        // The channel listing is operator data; the candle symbols are public.
        const c = await api('/v1/candles');
        if (c.ok) chans = ((await c.json()).symbols || []).map((s) => `quotes.${s.symbol}`);
        const why = refused(r);
        $('quotes-note').textContent = why ? `Symbols from the candle list: the channel list ${why}` : '';
      }
      for (const ch of chans.slice(0, MAX_QUOTES)) {
        if (!subs.has(ch)) subscribe(ch);
      }
    } catch (_) { /* next round */ }
  }

  // ---- symbol search: filters the table; Enter charts the first match, or any symbol the
  // candle store knows (GET /v1/candles) even without a quotes row ----
  function filterRows() {
    const q = $('symbol-search').value.trim().toUpperCase();
    for (const r of $('quotes').tBodies[0].rows) r.hidden = q !== '' && !r.dataset.sym.toUpperCase().includes(q);
  }
  $('symbol-search').oninput = filterRows;
  $('symbol-search').onkeydown = async (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    const q = $('symbol-search').value.trim().toUpperCase();
    if (!q) return;
    const row = [...$('quotes').tBodies[0].rows].find((r) => !r.hidden);
    if (row) { select(row.dataset.sym); return; }
    try {
      const r = await api('/v1/candles');
      const syms = r.ok ? ((await r.json()).symbols || []).map((x) => x.symbol) : [];
      const hit = syms.find((x) => x.toUpperCase() === q) || syms.find((x) => x.toUpperCase().includes(q));
      if (hit) select(hit);
    } catch (_) { /* nothing found */ }
  };

  // ---- candles ----
  let loadSeq = 0;
  async function select(sym) {
    const seq = ++loadSeq;
    const old = tw.symbol && `candles.${tw.symbol}.${tw.res}`;
    tw.symbol = sym;
    document.querySelectorAll('#quotes tr.sel').forEach((r) => r.classList.remove('sel'));
    const row = document.querySelector(`tr[data-sym="${CSS.escape(sym)}"]`);
    if (row) row.classList.add('sel');
    $('chart-symbol').textContent = sym;
    if (old && subs.has(old)) unsubscribe(old);
    const q = tw.quotes[sym];
    if (q && q.bid) {
      const p = decimals(q.bid) + 1;
      candleSeries.applyOptions({ priceFormat: { type: 'price', precision: p, minMove: Math.pow(10, -p) } });
    }
    // History first, then live: the live subscription's snapshot overwrites the last bar.
    let bars = [];
    try {
      const r = await api(`/v1/candles/${encodeURIComponent(sym)}?res=${tw.res}&limit=${PAGE}`);
      if (r.ok) bars = (await r.json()).candles || [];
    } catch (_) { /* empty chart, live fills it */ }
    if (seq !== loadSeq) return;
    // setData moves the visible range before scrollToRealTime puts it at the newest bars; that
    // transient range must not count as the user scrolling to the oldest bar.
    settled = false;
    data = bars.slice();
    tw.olderPages = 0;
    tw.historyDone = bars.length < PAGE;
    $('older').textContent = '';
    candleSeries.setData(data.map(toBar));
    volumeSeries.setData(data.map(toVol));
    tw.bars = data.length;
    tw.oldestMs = data.length ? data[0].start_ms : null;
    tw.lastBar = bars.length ? bars[bars.length - 1] : null;
    if (tw.lastBar) showLast(tw.lastBar);
    chart.timeScale().scrollToRealTime();
    setTimeout(() => { if (seq === loadSeq) settled = true; }, 300);
    subscribe(`candles.${sym}.${tw.res}`);
  }

  // Scroll-back: when the left edge of the chart comes within a few bars of the oldest loaded
  // bar, fetch the page before it (`to` = just before the oldest bar) and prepend it, keeping
  // the view where the user is.
  let data = [];
  let loadingOlder = false;
  let settled = false;
  async function loadOlder() {
    if (!settled || loadingOlder || tw.historyDone || !tw.symbol || !data.length) return;
    loadingOlder = true;
    const seq = loadSeq;
    const sym = tw.symbol;
    const res = tw.res;
    $('older').textContent = 'loading older bars…';
    try {
      const to = data[0].start_ms - 1;
      const r = await api(`/v1/candles/${encodeURIComponent(sym)}?res=${res}&to=${to}&limit=${PAGE}`);
      if (!r.ok) { $('older').textContent = `older bars: HTTP ${r.status}`; return; }
      const older = ((await r.json()).candles || []).filter((c) => c.start_ms < data[0].start_ms);
      if (seq !== loadSeq) return;
      if (!older.length) { tw.historyDone = true; $('older').textContent = 'start of history'; return; }
      const range = chart.timeScale().getVisibleLogicalRange();
      data = older.concat(data);
      candleSeries.setData(data.map(toBar));
      volumeSeries.setData(data.map(toVol));
      if (range) chart.timeScale().setVisibleLogicalRange({ from: range.from + older.length, to: range.to + older.length });
      tw.bars = data.length;
      tw.oldestMs = data[0].start_ms;
      tw.olderPages += 1;
      if (older.length < PAGE) tw.historyDone = true;
      $('older').textContent = `${data.length} bars`;
    } catch (e) {
      $('older').textContent = `older bars: ${e.message}`;
    } finally {
      loadingOlder = false;
    }
  }
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < 20) loadOlder();
  });
  tw.loadOlder = loadOlder;
  tw.barTimes = () => data.map((c) => c.start_ms);
  tw.visibleRange = () => chart.timeScale().getVisibleRange();
  tw.scrollLeft = (bars) => {
    const r = chart.timeScale().getVisibleLogicalRange();
    if (r) chart.timeScale().setVisibleLogicalRange({ from: r.from - bars, to: r.to - bars });
  };

  function onCandle(m) {
    const d = m.data;
    if (!d || d.symbol !== tw.symbol || d.resolution !== tw.res) return;
    if (tw.lastBar && d.start_ms < tw.lastBar.start_ms) return; // older than the chart's end
    if (!tw.lastBar || d.start_ms > tw.lastBar.start_ms) { tw.bars += 1; data.push(d); }
    else if (data.length && data[data.length - 1].start_ms === d.start_ms) data[data.length - 1] = d;
    candleSeries.update(toBar(d));
    volumeSeries.update(toVol(d));
    tw.barUpdates += 1;
    showLast(d);
  }

  function renderResolutions() {
    const box = $('resolutions');
    box.innerHTML = '';
    for (const r of RESOLUTIONS) {
      const b = document.createElement('button');
      b.textContent = r;
      b.dataset.res = r;
      b.className = r === tw.res ? 'on' : '';
      b.onclick = () => {
        const old = tw.symbol && `candles.${tw.symbol}.${tw.res}`;
        if (old && subs.has(old)) unsubscribe(old);
        tw.res = r;
        tw.lastBar = null;
        renderResolutions();
        if (tw.symbol) select(tw.symbol);
      };
      box.appendChild(b);
    }
  }

  // ---- chat ----
  function onChat(m) {
    tw.chatNext = m.offset + 1;
    const d = m.data || {};
    // The author is the server's identity stamp only (`from`, set from the publisher's token
    // or by a back-end key); a name the client wrote into the message (`user`) is never shown.
    const from = d.from && typeof d.from === 'object' ? d.from : {};
    const name = from.info && typeof from.info.name === 'string' && from.info.name ? from.info.name : null;
    const who = name || (from.sub !== undefined ? String(from.sub) : null);
    tw.chat.push({ text: d.text, who, ts: m.ts, offset: m.offset });
    const li = document.createElement('li');
    const t = document.createElement('time');
    const at = new Date(m.ts);
    t.dateTime = at.toISOString();
    t.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    t.title = at.toISOString();
    li.appendChild(t);
    const b = document.createElement('b');
    b.textContent = (who || 'anonymous') + ': ';
    if (!who) b.className = 'anon';
    if (from.sub !== undefined) b.title = `sub ${from.sub}`;
    li.appendChild(b);
    li.appendChild(document.createTextNode(String(d.text ?? JSON.stringify(d))));
    $('chat').appendChild(li);
    // A long-open page keeps the newest lines only.
    while ($('chat').children.length > MAX_CHAT_LINES) $('chat').firstElementChild.remove();
    if (tw.chat.length > MAX_CHAT_LINES) tw.chat.splice(0, tw.chat.length - MAX_CHAT_LINES);
    $('chat').scrollTop = $('chat').scrollHeight;
  }
  $('chat-form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('chat-text').value.trim();
    if (!text) return;
    // No name field: the server stamps who sent it from the connection's credential.
    send({ op: 'publish', channel: 'chat.lobby', msg_id: `c-${Date.now()}-${Math.random().toString(36).slice(2)}`, data: { text } })
      .then((r) => { $('chat-note').textContent = r && r.ok === false ? `not sent: ${r.error && r.error.message}` : ''; });
    $('chat-text').value = '';
  };

  // ---- metrics (Prometheus text) ----
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[3]) for (const p of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }
  const sum = (ms, name) => ms.filter((x) => x.name === name).reduce((a, x) => a + x.value, 0);

  // ---- health (header) ----
  async function health() {
    try {
      const ok = (await fetch('/healthz')).ok;
      $('health').textContent = ok ? 'health: ok' : 'health: failing';
      $('health').className = ok ? 'pill ok' : 'pill bad';
      const r = await api('/metrics');
      if (r.ok) {
        const ms = parseMetrics(await r.text());
        $('stats').textContent = `published ${sum(ms, 'tickwire_published_total')} · sessions ${sum(ms, 'tickwire_sessions')}`;
      } else {
        $('stats').textContent = refused(r) ? 'metrics need an admin key' : `metrics: HTTP ${r.status}`;
      }
    } catch (_) {
      $('health').textContent = 'health: unreachable';
      $('health').className = 'pill bad';
    }
  }

  // ---- operations view ----
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function table(head, rows) {
    const t = el('table');
    const tr = el('tr');
    head.forEach((h) => tr.appendChild(el('th', h)));
    t.appendChild(el('thead')).appendChild(tr);
    const tb = t.appendChild(el('tbody'));
    for (const r of rows) {
      const row = tb.appendChild(el('tr'));
      r.forEach((c) => row.appendChild(el('td', c === undefined || c === null ? '—' : c)));
    }
    return t;
  }
  function show(box, content) {
    const b = $(box);
    b.innerHTML = '';
    if (typeof content === 'string') b.appendChild(el('p', content, 'muted small msg'));
    else b.appendChild(content);
  }
  async function getJson(path) {
    const r = await api(path);
    if (r.ok) return { ok: true, body: await r.json() };
    const why = refused(r);
    return { ok: false, status: r.status, msg: why || `HTTP ${r.status}` };
  }

  const nsPrev = {};
  // Live graphs: one point per refresh (every 5 s while the view is open), the last 120
  // (10 minutes), from /metrics. Rates are the change of a counter since the previous refresh.
  const GRAPH_POINTS = 120;
  const graphHist = { at: [], series: {} };
  let graphPrev = null;
  function graphPoint(ms) {
    const now = Date.now();
    const totals = {
      published: sum(ms, 'tickwire_namespace_published_total'),
      delivered: sum(ms, 'tickwire_namespace_delivered_total'),
    };
    const dt = graphPrev ? (now - graphPrev.at) / 1000 : 0;
    const rate = (k) => (graphPrev && dt > 0 ? Math.max(0, (totals[k] - graphPrev[k]) / dt) : null);
    const point = {
      'published/s': rate('published'),
      'delivered/s': rate('delivered'),
      connections: sum(ms, 'tickwire_edge_connections'),
      subscriptions: sum(ms, 'tickwire_edge_subscriptions'),
    };
    graphPrev = { at: now, ...totals };
    graphHist.at.push(now);
    for (const [k, v] of Object.entries(point)) (graphHist.series[k] ||= []).push(v);
    if (graphHist.at.length > GRAPH_POINTS) {
      graphHist.at.shift();
      Object.values(graphHist.series).forEach((a) => a.shift());
    }
  }
  function renderGraphs() {
    const box = el('div', null, 'graphs');
    box.id = 'graphs';
    const svgNs = 'http://www.w3.org/2000/svg';
    for (const [name, values] of Object.entries(graphHist.series)) {
      const known = values.map((v, i) => [i, v]).filter(([, v]) => v !== null);
      const max = Math.max(1, ...known.map(([, v]) => v));
      const last = known.length ? known[known.length - 1][1] : null;
      const g = el('div', null, 'graph');
      g.dataset.series = name;
      const fmt = (v) => (v === null ? '—' : v < 10 ? (+v.toFixed(1)).toString() : String(Math.round(v)));
      g.appendChild(el('div', `${name}: ${fmt(last)} (max ${fmt(max)})`, 'muted'));
      const svg = document.createElementNS(svgNs, 'svg');
      svg.setAttribute('viewBox', `0 0 ${GRAPH_POINTS - 1} 100`);
      svg.setAttribute('preserveAspectRatio', 'none');
      const line = document.createElementNS(svgNs, 'polyline');
      line.setAttribute('points', known.map(([i, v]) => `${i},${(100 - (v * 100) / max).toFixed(1)}`).join(' '));
      svg.appendChild(line);
      g.appendChild(svg);
      box.appendChild(g);
    }
    if (!box.childNodes.length) box.appendChild(el('p', 'Waiting for /metrics.', 'muted small msg'));
    $('graphs').replaceWith(box);
  }
  function bytes(n) {
    if (n < 1024) return `${n}\u00a0B`;
    if (n < 1048576) return `${(n / 1024).toFixed(1)}\u00a0KiB`;
    if (n < 1073741824) return `${(n / 1048576).toFixed(1)}\u00a0MiB`;
    return `${+(n / 1073741824).toFixed(2)}\u00a0GiB`;
  }
  function age(s) {
    if (s % 86400 === 0) return `${s / 86400}\u00a0d`;
    if (s % 3600 === 0) return `${s / 3600}\u00a0h`;
    return `${s}\u00a0s`;
  }
  async function kick(id) {
    const headers = cred ? { authorization: `Bearer ${cred}` } : {};
    const r = await fetch(`/v1/connections/${id}`, { method: 'DELETE', headers });
    tw.lastKick = { id, status: r.status };
    if (!r.ok && r.status !== 404) show('clients', `Kick: ${refused(r) || `HTTP ${r.status}`}`);
    refreshOps();
  }

  // One refresh at a time (the 5 s timer, the tab, a credential change): a call while one runs
  // asks for one more run after it, so the view always ends with the newest credential's data.
  let opsRun = null;
  let opsAgain = false;
  function refreshOps() {
    if (opsRun) { opsAgain = true; return opsRun; }
    opsRun = (async () => {
      do { opsAgain = false; await refreshOpsOnce(); } while (opsAgain);
    })().finally(() => { opsRun = null; });
    return opsRun;
  }
  async function refreshOpsOnce() {
    const ops = { at: Date.now() };
    // Health and readiness: open endpoints.
    const hl = document.createElement('dl');
    hl.id = 'health-list';
    for (const [k, path] of [['healthz', '/healthz'], ['readyz', '/readyz']]) {
      let v;
      try {
        const r = await fetch(path);
        v = `${r.status} ${(await r.text()).trim()}`;
        ops[k] = r.status;
      } catch (e) { v = `unreachable (${e.message})`; ops[k] = 0; }
      hl.appendChild(el('dt', k));
      hl.appendChild(el('dd', v, ops[k] === 200 ? '' : 'warn'));
    }
    hl.appendChild(el('dt', 'websocket'));
    hl.appendChild(el('dd', tw.connected ? 'connected' : 'disconnected', tw.connected ? '' : 'warn'));
    $('health-list').replaceWith(hl);

    // Metrics: connections per edge, projections.
    let ms = null;
    try {
      const r = await api('/metrics');
      if (r.ok) ms = parseMetrics(await r.text());
      else ops.metricsError = refused(r) || `HTTP ${r.status}`;
    } catch (e) { ops.metricsError = e.message; }
    if (ms) {
      const edges = ms.filter((x) => x.name === 'tickwire_edge_connections');
      ops.connections = Object.fromEntries(edges.map((x) => [x.labels.edge, x.value]));
      const subsOf = (edge) => {
        const s = ms.find((y) => y.name === 'tickwire_edge_subscriptions' && y.labels.edge === edge);
        return s ? s.value : null;
      };
      const rows = edges.map((x) => [x.labels.edge, x.value, subsOf(x.labels.edge)]);
      rows.push(['sessions (every edge)', sum(ms, 'tickwire_sessions'), sum(ms, 'tickwire_edge_subscriptions')]);
      rows.push(['MQTT sessions connected', sum(ms, 'tickwire_mqtt_sessions_connected'), null]);
      show('conns', table(['edge', 'open', 'subscriptions'], rows));
      graphPoint(ms);
      ops.graphs = JSON.parse(JSON.stringify(graphHist));
      renderGraphs();
      const lag = ms.filter((x) => x.name === 'tickwire_projection_lag');
      const pos = ms.filter((x) => x.name === 'tickwire_projection_position');
      const live = ms.filter((x) => x.name === 'tickwire_projection_live');
      ops.projections = lag.map((x) => ({ projection: x.labels.projection, namespace: x.labels.namespace, lag: x.value }));
      show('projections', lag.length ? table(['projection', 'namespace', 'lag (publications)', 'position', 'live'],
        lag.map((x) => {
          const p = pos.find((y) => y.labels.projection === x.labels.projection && y.labels.namespace === x.labels.namespace);
          const l = live.find((y) => y.labels.projection === x.labels.projection);
          return [x.labels.projection, x.labels.namespace, x.value, p ? p.value : null, l ? (l.value ? 'yes' : 'catching up') : null];
        })) : 'No projections running.');
    } else {
      show('conns', `Metrics: ${ops.metricsError}`);
      show('graphs', `Metrics: ${ops.metricsError}`);
      show('projections', `Metrics: ${ops.metricsError}`);
    }

    // Namespaces: configuration, stream position, channels.
    try {
      const ns = await getJson('/v1/namespaces');
      if (ns.ok) {
        ops.namespaces = ns.body.namespaces;
        // Rates from the counters' change since the previous refresh (none on the first).
        const of = (name, n) => {
          const x = (ms || []).find((y) => y.name === name && y.labels.namespace === n);
          return x ? x.value : null;
        };
        const now = Date.now();
        const rate = (key, v) => {
          const prev = nsPrev[key];
          nsPrev[key] = { v, at: now };
          if (v === null || !prev || now <= prev.at) return null;
          return Math.max(0, (v - prev.v) * 1000 / (now - prev.at));
        };
        const perSec = (r) => (r === null ? null : r < 10 ? r.toFixed(1) : String(Math.round(r)));
        ops.namespaceStats = {};
        show('namespaces', table(['namespace', 'class', 'channels', 'subscribers', 'published/s', 'delivered/s', 'log size', 'next offset', 'epoch', 'subscribe / publish', 'retention'],
          ns.body.namespaces.map((n) => {
            const st = {
              subscribers: of('tickwire_namespace_subscriptions', n.name),
              published: rate(`p:${n.name}`, of('tickwire_namespace_published_total', n.name)),
              delivered: rate(`d:${n.name}`, of('tickwire_namespace_delivered_total', n.name)),
              logBytes: of('tickwire_log_bytes', n.name),
            };
            ops.namespaceStats[n.name] = st;
            return [n.name, n.class, n.channels, st.subscribers ?? 0, perSec(st.published), perSec(st.delivered),
              st.logBytes === null ? null : bytes(st.logBytes), n.next_offset, n.epoch, `${n.subscribe} / ${n.publish}`,
              [n.retention_bytes ? bytes(n.retention_bytes) : null, n.retention_age_s ? age(n.retention_age_s) : null].filter(Boolean).join(' / ') || '—'];
          })));
      } else {
        ops.namespacesError = ns.msg;
        show('namespaces', `Namespaces: ${ns.msg}`);
      }
    } catch (e) { show('namespaces', `Namespaces: ${e.message}`); }

    // Channels of one namespace: subscribers, published/s (the change of each channel's count
    // since the previous refresh), newest message. The busiest first, at most 100 rows.
    try {
      const pick = $('channels-ns');
      const names = (ops.namespaces || []).map((n) => n.name);
      if (names.join() !== Array.from(pick.options).map((o) => o.value).join()) {
        const keep = pick.value;
        pick.innerHTML = '';
        names.forEach((n) => pick.appendChild(el('option', n)));
        pick.value = names.includes(keep) ? keep : (names.includes('quotes') ? 'quotes' : names[0] || '');
      }
      const nsName = pick.value;
      if (!nsName) {
        show('channels', ops.namespacesError ? `Channels: ${ops.namespacesError}` : 'No namespaces.');
      } else {
        const ch = await getJson(`/v1/channels/${encodeURIComponent(nsName)}`);
        if (ch.ok) {
          const now = Date.now();
          const rows = (ch.body.stats || []).map((c) => {
            const key = `c:${c.channel}`;
            const prev = nsPrev[key];
            nsPrev[key] = { v: c.published, at: now };
            const r = prev && now > prev.at ? Math.max(0, (c.published - prev.v) * 1000 / (now - prev.at)) : null;
            return { ...c, rate: r };
          });
          rows.sort((a, b) => (b.rate ?? -1) - (a.rate ?? -1) || a.channel.localeCompare(b.channel));
          ops.channels = { namespace: nsName, rows };
          const shown = rows.slice(0, 100);
          const t = table(['channel', 'subscribers', 'published/s', 'published', 'newest offset', 'newest (UTC)'],
            shown.map((c) => [c.channel, c.subscribers,
              c.rate === null ? null : c.rate < 10 ? c.rate.toFixed(1) : String(Math.round(c.rate)),
              c.published, c.offset, c.ts ? new Date(c.ts).toISOString().slice(11, 23) : null]));
          const wrap = el('div');
          if (rows.length > shown.length) wrap.appendChild(el('p', `the busiest 100 of ${rows.length} channels`, 'muted small'));
          wrap.appendChild(t);
          show('channels', rows.length ? wrap : `No channels in ${nsName} on this node.`);
        } else {
          ops.channelsError = ch.msg;
          show('channels', `Channels: ${ch.msg}`);
        }
      }
    } catch (e) { show('channels', `Channels: ${e.message}`); }

    // Clients: every live connection on this node, with a kick button (admin scope).
    try {
      const edge = $('clients-edge').value;
      const cs = await getJson(`/v1/connections${edge ? `?edge=${encodeURIComponent(edge)}` : ''}`);
      if (cs.ok) {
        const list = cs.body.connections || [];
        ops.clients = list;
        const t = table(['id', 'edge', 'identity', 'client id', 'address', 'subscriptions', 'connected', ''],
          list.map((c) => [c.id, c.edge, c.identity, c.client_id, c.ip, c.subscriptions,
            new Date(c.connected_at).toISOString().slice(11, 19) + 'Z', '']));
        t.querySelectorAll('tbody tr').forEach((row, i) => {
          const b = el('button', 'Kick', 'kick');
          b.type = 'button';
          b.title = 'close this connection (the client may reconnect: revoke its credential to keep it out)';
          b.dataset.id = String(list[i].id);
          b.onclick = () => kick(list[i].id);
          row.lastChild.appendChild(b);
        });
        show('clients', list.length ? t : (edge ? `No ${edge} connections.` : 'No connections.'));
      } else {
        ops.clientsError = cs.msg;
        show('clients', `Clients: ${cs.msg}`);
      }
    } catch (e) { show('clients', `Clients: ${e.message}`); }

    // FIX sessions: absent (404) when FIX is not configured.
    try {
      const fx = await getJson('/v1/fix/sessions');
      if (fx.ok) {
        const ss = fx.body.sessions || [];
        ops.fix = ss;
        const wrap = el('div');
        wrap.appendChild(el('p', fx.body.acceptor ? `acceptor listening on ${fx.body.acceptor}` : 'no acceptor', 'muted small'));
        wrap.appendChild(ss.length ? table(['session', 'role', 'state', 'next sender seq', 'next target seq', 'logons', 'msgs in', 'msgs out', 'last error'],
          ss.map((x) => [x.name || x.session || `${x.sender_comp_id}-${x.target_comp_id}`, x.role, x.state,
            x.next_sender_seq ?? x.next_out_seq, x.next_target_seq ?? x.next_in_seq, x.logons, x.messages_in, x.messages_out, x.last_error]))
          : el('p', 'No FIX sessions.', 'muted small'));
        show('fix', wrap);
      } else if (fx.status === 404) {
        ops.fixError = 'not configured';
        show('fix', 'FIX is not configured on this server ([fix] in the configuration).');
      } else {
        ops.fixError = fx.msg;
        show('fix', `FIX sessions: ${fx.msg}`);
      }
    } catch (e) { show('fix', `FIX sessions: ${e.message}`); }
    $('ops-updated').textContent = `updated ${new Date().toISOString().slice(11, 19)}Z · every 5 s while this view is open`;
    ops.done = true;
    tw.ops = ops;
  }

  let view = 'market';
  function setView(v) {
    view = v;
    $('market').hidden = v !== 'market';
    $('ops').hidden = v !== 'ops';
    document.querySelectorAll('#tabs button').forEach((b) => b.classList.toggle('on', b.dataset.view === v));
    if (v === 'ops') refreshOps();
    if (location.hash !== `#${v}`) history.replaceState(null, '', `#${v}`);
  }
  document.querySelectorAll('#tabs button').forEach((b) => { b.onclick = () => setView(b.dataset.view); });
  $('clients-edge').onchange = () => refreshOps();
  $('channels-ns').onchange = () => refreshOps();
  $('cred').value = cred;
  $('cred-form').onsubmit = (e) => {
    e.preventDefault();
    cred = $('cred').value.trim();
    try { localStorage.setItem('tw.credential', cred); } catch (_) { /* storage off */ }
    if (ws) ws.close(); // reconnects with the new credential
    refreshOps();
  };
  $('cred-clear').onclick = () => {
    cred = '';
    $('cred').value = '';
    try { localStorage.removeItem('tw.credential'); } catch (_) { /* storage off */ }
    if (ws) ws.close();
    refreshOps();
  };
  tw.setView = setView;
  tw.refreshOps = refreshOps;

  renderResolutions();
  connect();
  health();
  if (location.hash === '#ops') setView('ops');
  setInterval(health, 5000);
  setInterval(() => { if (view === 'ops') refreshOps(); }, 5000);
  setInterval(refreshSymbols, 5000);
})();
