// Tickwire console: quotes table, live candles, chat and health over ONE WebSocket.
// Prices arrive as decimal strings and are shown as received; only the chart converts them to
// numbers, because lightweight-charts plots floats.
(function () {
  'use strict';
  const RESOLUTIONS = ['1s', '5s', '1m', '5m', '15m', '1h', '4h', '1D'];
  const MAX_QUOTES = 60;
  const $ = (id) => document.getElementById(id);

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
    ws = new WebSocket(`${proto}://${location.host}/v1/ws`);
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
      else subscribe('chat.lobby', undefined, 100);
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
      const r = await fetch('/v1/channels/quotes');
      const j = await r.json();
      for (const ch of (j.channels || []).slice(0, MAX_QUOTES)) {
        if (!subs.has(ch)) subscribe(ch);
      }
    } catch (_) { /* next round */ }
  }

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
      const r = await fetch(`/v1/candles/${encodeURIComponent(sym)}?res=${tw.res}&limit=500`);
      if (r.ok) bars = (await r.json()).candles || [];
    } catch (_) { /* empty chart, live fills it */ }
    if (seq !== loadSeq) return;
    candleSeries.setData(bars.map(toBar));
    volumeSeries.setData(bars.map(toVol));
    tw.bars = bars.length;
    tw.lastBar = bars.length ? bars[bars.length - 1] : null;
    if (tw.lastBar) showLast(tw.lastBar);
    chart.timeScale().scrollToRealTime();
    subscribe(`candles.${sym}.${tw.res}`);
  }

  function onCandle(m) {
    const d = m.data;
    if (!d || d.symbol !== tw.symbol || d.resolution !== tw.res) return;
    if (tw.lastBar && d.start_ms < tw.lastBar.start_ms) return; // older than the chart's end
    if (!tw.lastBar || d.start_ms > tw.lastBar.start_ms) tw.bars += 1;
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
    tw.chat.push(d);
    const li = document.createElement('li');
    // The sender as the server stamped it (a signed-in user), else what the client wrote.
    const from = d.from || {};
    const who = (from.info && from.info.name) || from.sub || d.user || 'anon';
    const t = document.createElement('time');
    const at = new Date(m.ts);
    t.dateTime = at.toISOString();
    t.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) + ' ';
    li.appendChild(t);
    const b = document.createElement('b');
    b.textContent = who + ': ';
    li.appendChild(b);
    li.appendChild(document.createTextNode(String(d.text ?? JSON.stringify(d))));
    $('chat').appendChild(li);
    $('chat').scrollTop = $('chat').scrollHeight;
  }
  $('chat-form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('chat-text').value.trim();
    if (!text) return;
    const user = $('chat-name').value.trim() || 'guest';
    send({ op: 'publish', channel: 'chat.lobby', msg_id: `c-${Date.now()}-${Math.random().toString(36).slice(2)}`, data: { user, text } });
    $('chat-text').value = '';
  };

  // ---- health ----
  async function health() {
    try {
      const ok = (await fetch('/healthz')).ok;
      $('health').textContent = ok ? 'health: ok' : 'health: failing';
      $('health').className = ok ? 'pill ok' : 'pill bad';
      const m = await (await fetch('/metrics')).text();
      const pick = (name) => {
        const line = m.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
        return line ? line.split(' ').pop() : '?';
      };
      $('stats').textContent = `published ${pick('tickwire_published_total')} · sessions ${pick('tickwire_sessions')}`;
    } catch (_) {
      $('health').textContent = 'health: unreachable';
      $('health').className = 'pill bad';
    }
  }

  renderResolutions();
  connect();
  health();
  setInterval(health, 5000);
  setInterval(refreshSymbols, 5000);
})();
