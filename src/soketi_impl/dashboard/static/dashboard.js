'use strict';
// The soketi-impl dashboard page. Plain JavaScript, no build step.
//
// Data comes from the metrics port of the server that serves this page:
//   /dashboard/api/feed      server-sent events: hello (node, apps, recent entries and
//                            samples), log (entries + this page's drop count), sample
//   /dashboard/api/channels  occupied channels of one app (polled)
//   /dashboard/api/trigger   POST a test event
// Every text from the server goes into the page with textContent, never as HTML.

(function () {
  const MAX_ROWS = 500; // console rows kept in the page
  const MAX_ENTRIES = 2000; // entries kept for re-filtering
  const MAX_HELD = 2000; // entries held while paused
  const WINDOW_MS = 5 * 60 * 1000; // chart span
  const CHANNELS_EVERY_MS = 3000;
  const COLORS = ['#2f6fde', '#e0642b', '#16803c', '#9c27b0', '#c62828', '#00838f'];

  const $ = (id) => document.getElementById(id);
  const state = {
    apps: [],
    entries: [], // newest first
    held: [],
    heldDropped: 0,
    serverDropped: 0,
    paused: false,
    samples: [],
    cluster: false,
  };

  // ---------------------------------------------------------------- the feed

  function connect() {
    const source = new EventSource('/dashboard/api/feed');
    source.addEventListener('hello', (e) => hello(JSON.parse(e.data)));
    source.addEventListener('log', (e) => {
      const m = JSON.parse(e.data);
      state.serverDropped = m.dropped;
      receive(m.entries);
    });
    source.addEventListener('sample', (e) => addSample(JSON.parse(e.data)));
    source.onopen = () => setStatus('live', 'ok');
    source.onerror = () => {
      setStatus('disconnected, retrying…', 'bad');
      if (source.readyState === EventSource.CLOSED) {
        // refused (401 after the token changed, 503 with too many pages): look again later
        setTimeout(() => fetch('/dashboard/api/info').then((r) => {
          if (r.status === 401) window.location.reload();
          else connect();
        }, () => setTimeout(connect, 3000)), 2000);
      }
    };
  }

  function setStatus(text, cls) {
    const el = $('status');
    el.textContent = text;
    el.className = `status ${cls}`;
  }

  function hello(m) {
    state.apps = m.apps;
    state.cluster = m.cluster;
    const select = $('app');
    const chosen = select.value;
    select.replaceChildren(option('', 'all apps'), ...m.apps.map((id) => option(id, id)));
    select.value = m.apps.includes(chosen) ? chosen : '';
    const scope = $('scope');
    scope.replaceChildren();
    if (m.cluster) {
      scope.append(
        strong('Live console, numbers and charts: this node only'), ` (${m.node}). `,
        strong('Channel lists: the whole cluster'), ` (${m.adapter} adapter). `,
        'Open the dashboard of each node to see its traffic.',
      );
      $('console-scope').textContent = `this node: ${m.node}`;
      $('channels-scope').textContent = 'whole cluster';
    } else {
      scope.append(strong('Single node'), ` (${m.node}, ${m.adapter} adapter): everything shown is this server's.`);
      $('console-scope').textContent = m.node;
    }
    state.entries = m.recent.slice().reverse();
    state.samples = m.samples;
    renderLog();
    drawCharts();
    refreshChannels();
  }

  function option(value, text) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = text;
    return o;
  }

  function strong(text) {
    const s = document.createElement('strong');
    s.textContent = text;
    return s;
  }

  // ---------------------------------------------------------------- the console

  function receive(entries) {
    if (state.paused) {
      state.held.push(...entries);
      const over = state.held.length - MAX_HELD;
      if (over > 0) {
        state.held.splice(0, over);
        state.heldDropped += over;
      }
      showDrops();
      return;
    }
    const log = $('log');
    for (const e of entries) {
      state.entries.unshift(e);
      if (matches(e)) log.prepend(row(e));
    }
    if (state.entries.length > MAX_ENTRIES) state.entries.length = MAX_ENTRIES;
    while (log.childElementCount > MAX_ROWS) log.lastElementChild.remove();
    showDrops();
  }

  function matches(e) {
    const app = $('app').value;
    const channel = $('f-channel').value.trim();
    const event = $('f-event').value.trim();
    const socket = $('f-socket').value.trim();
    if (app && e.app !== app) return false;
    if (channel && !(e.channel || '').startsWith(channel)) return false;
    if (event && !(e.event || '').includes(event)) return false;
    if (socket && e.socket_id !== socket) return false;
    return true;
  }

  function renderLog() {
    const rows = [];
    for (const e of state.entries) {
      if (rows.length >= MAX_ROWS) break;
      if (matches(e)) rows.push(row(e));
    }
    $('log').replaceChildren(...rows);
  }

  function summary(e) {
    const sid = e.socket_id || '';
    switch (e.kind) {
      case 'connection': return `socket ${sid}${e.client ? ` (${e.client})` : ''}`;
      case 'disconnection': return `socket ${sid} closed${e.code != null ? ` with ${e.code}` : ''}${e.reason ? `: ${e.reason}` : ''}`;
      case 'subscribed': case 'unsubscribed': return `${sid} ${e.kind === 'subscribed' ? '→' : '←'} ${e.channel}`;
      case 'api_message': return `${e.event} on ${e.channel}, ${e.size} bytes`;
      case 'client_event': return `${e.event} on ${e.channel} from ${sid}${e.user_id ? ` (${e.user_id})` : ''}, ${e.size} chars`;
      case 'test_event': return `${e.event} on ${e.channel} from this page, delivered to ${e.delivered} here`;
      case 'member_added': case 'member_removed': return `${e.user_id} in ${e.channel}`;
      case 'signed_in': return `${sid} as ${e.user_id}`;
      case 'error': return `to ${sid}${e.channel ? ` on ${e.channel}` : ''}: ${e.code != null ? `${e.code} ` : ''}${e.message}`;
      case 'webhook_sent': case 'webhook_failed': case 'webhook_retried':
        return `${e.events} event(s) to ${e.url}${e.error ? `: ${e.error}` : ''}`;
      default: return e.channel || '';
    }
  }

  function severity(e) {
    if (e.kind === 'webhook_failed' || e.kind === 'error') return 'error';
    if (e.kind === 'webhook_retried') return 'warn';
    // 4000-4199: the client should not reconnect as is (4200+: come back)
    if (e.kind === 'disconnection' && e.code >= 4000 && e.code < 4200) return 'error';
    return '';
  }

  function row(e) {
    const div = document.createElement('div');
    div.className = `entry kind-${e.kind} ${severity(e)}`;
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = new Date(e.ts).toLocaleTimeString();
    const app = document.createElement('span');
    app.className = 'app';
    app.textContent = e.app;
    const kind = document.createElement('span');
    kind.className = 'kind';
    kind.textContent = e.kind.replace('_', ' ');
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = summary(e);
    div.append(time, app, kind, text);
    div.addEventListener('click', (ev) => {
      if (ev.target.tagName === 'PRE') return; // let the reader select text
      const open = div.querySelector('pre');
      if (open) { open.remove(); div.style.whiteSpace = ''; return; }
      div.style.whiteSpace = 'normal';
      div.append(details(e));
    });
    return div;
  }

  function details(e) {
    const pre = document.createElement('pre');
    const { data, ...rest } = e;
    let text = JSON.stringify(rest, null, 1);
    if (data !== undefined) {
      let shown = data;
      try { shown = JSON.stringify(JSON.parse(data), null, 2); } catch (_) { /* not JSON, or cut */ }
      text += `\npayload${e.truncated ? ` (cut: first ${data.length} of ${e.truncated} characters)` : ''}:\n${shown}`;
    }
    pre.textContent = text;
    return pre;
  }

  function showDrops() {
    const parts = [];
    if (state.serverDropped) parts.push(`${state.serverDropped} dropped (this page did not keep up)`);
    if (state.paused) parts.push(`paused: ${state.held.length} held`);
    if (state.heldDropped) parts.push(`${state.heldDropped} dropped while paused`);
    $('drops').textContent = parts.join(' · ');
  }

  function togglePause() {
    state.paused = !state.paused;
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    if (!state.paused) {
      const held = state.held;
      state.held = [];
      receive(held);
    }
    showDrops();
  }

  // ---------------------------------------------------------------- numbers and charts

  function addSample(s) {
    state.samples.push(s);
    const cut = Date.now() - WINDOW_MS - 10000;
    while (state.samples.length && state.samples[0].t < cut) state.samples.shift();
    drawCharts();
  }

  function shownApps() {
    const app = $('app').value;
    return app ? [app] : state.apps;
  }

  /** Per app, [time, value] points: a gauge as is, a counter as a rate per second. */
  function series(counter, rate) {
    return shownApps().map((id, i) => {
      const points = [];
      let prev = null;
      for (const s of state.samples) {
        const c = s.apps[id];
        if (!c) { prev = null; continue; }
        if (!rate) points.push([s.t, c[counter]]);
        else if (prev && s.t > prev.t) points.push([s.t, Math.max(0, (c[counter] - prev.v) * 1000 / (s.t - prev.t))]);
        prev = { t: s.t, v: c[counter] };
      }
      return { label: id, color: COLORS[state.apps.indexOf(id) % COLORS.length] || COLORS[i % COLORS.length], points };
    });
  }

  function lastTotal(list) {
    let total = 0;
    let any = false;
    for (const s of list) {
      if (s.points.length) { total += s.points[s.points.length - 1][1]; any = true; }
    }
    return any ? total : null;
  }

  function show(id, value) {
    $(id).textContent = value == null ? '–' : (Number.isInteger(value) ? String(value) : value.toFixed(1));
  }

  /** The charts' span: the samples there are, at least a minute, at most WINDOW_MS. */
  function span() {
    const first = state.samples.length ? state.samples[0].t : Date.now();
    return Math.min(WINDOW_MS, Math.max(60000, Date.now() - first));
  }

  function drawCharts() {
    const windowMs = span();
    const charts = [
      ['connected', 'connected', false],
      ['in', 'ws_messages_received', true],
      ['out', 'ws_messages_sent', true],
      ['deliveries', 'deliveries', true],
      ['http', 'http_calls', true],
    ];
    for (const [id, counter, rate] of charts) {
      const s = series(counter, rate);
      show(`n-${id}`, lastTotal(s));
      if (typeof drawChart === 'function') drawChart($(`c-${id}`), s, windowMs);
    }
    const queue = state.samples.filter((s) => s.webhook_queue != null).map((s) => [s.t, s.webhook_queue]);
    show('n-webhooks', queue.length ? queue[queue.length - 1][1] : null);
    if (typeof drawChart === 'function') drawChart($('c-webhooks'), [{ label: 'queue', color: '#b26a00', points: queue }], windowMs);
    $('n-webhooks').title = queue.length ? '' : 'no app has webhooks';
    const legend = $('legend');
    legend.replaceChildren(...shownApps().map((id) => {
      const span = document.createElement('span');
      const swatch = document.createElement('i');
      swatch.style.background = COLORS[state.apps.indexOf(id) % COLORS.length];
      span.append(swatch, `app ${id}`);
      return span;
    }));
  }

  // ---------------------------------------------------------------- channels

  function channelsApp() {
    return $('app').value || state.apps[0] || '';
  }

  async function refreshChannels() {
    const app = channelsApp();
    if (!app) return;
    let body;
    try {
      const r = await fetch(`/dashboard/api/channels?app=${encodeURIComponent(app)}`);
      if (r.status === 401) { window.location.reload(); return; }
      body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
    } catch (err) {
      $('channels-note').textContent = `could not load the channels: ${err.message}`;
      return;
    }
    const rows = body.channels.map((c) => {
      const tr = document.createElement('tr');
      const cells = [c.name, c.subscription_count, c.user_count ?? '', (c.members || []).join(', ')];
      for (const v of cells) {
        const td = document.createElement('td');
        td.textContent = String(v);
        tr.append(td);
      }
      tr.addEventListener('click', () => { $('t-channel').value = c.name; });
      return tr;
    });
    $('channels').replaceChildren(...rows);
    const more = body.total > body.channels.length ? `, ${body.channels.length} shown` : '';
    $('channels-note').textContent = `app ${body.app}: ${body.total} occupied${more}` +
      (body.cluster ? ' (whole cluster)' : '') + '. Click a channel to send it a test event.';
  }

  // ---------------------------------------------------------------- test events

  async function sendTest(ev) {
    ev.preventDefault();
    const result = $('t-result');
    result.textContent = 'sending…';
    try {
      const r = await fetch('/dashboard/api/trigger', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          app: channelsApp(), channel: $('t-channel').value.trim(), event: $('t-event').value.trim(), data: $('t-data').value,
        }),
      });
      const body = await r.json();
      result.textContent = r.ok
        ? `sent: delivered to ${body.delivered} connection(s) on this node`
        : `refused (${r.status}): ${body.error}`;
    } catch (err) {
      result.textContent = `failed: ${err.message}`;
    }
  }

  // ---------------------------------------------------------------- wiring

  for (const id of ['f-channel', 'f-event', 'f-socket']) $(id).addEventListener('input', renderLog);
  $('app').addEventListener('change', () => { renderLog(); drawCharts(); refreshChannels(); });
  $('pause').addEventListener('click', togglePause);
  $('clear').addEventListener('click', () => { state.entries = []; renderLog(); });
  $('test-form').addEventListener('submit', sendTest);
  setInterval(refreshChannels, CHANNELS_EVERY_MS);
  connect();
}());
