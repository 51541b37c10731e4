// mutexd live console. Plain JavaScript, no build step, no dependencies.
//
// State comes from one snapshot (GET /v1/locks, then GET /v1/locks/{key}
// per key) taken after the event stream (GET /v1/events) is open; every
// event is applied to the state idempotently, and the events received
// while a snapshot was in flight are applied again on top of it, so the
// two always converge. The stream opens with since=, so the server first
// replays the history it kept (marked "replay": shown in a key's recent
// events, never applied to the state). The tiles' rates and totals come
// from GET /v1/stats, polled while the overview shows: the server counted
// what happened before this page opened. Keys and owners are user data:
// they only ever reach the page through textContent, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);

  // ---- auth: the bearer token lives only in this variable (tab memory) ----
  let token = '';
  // canAdmin: null until the server has said; true when it streams every
  // key's events to this tab (an admin token, or auth off); false when it
  // answers 403 (a client token: one key at a time, no force release).
  let canAdmin = null;

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }

  async function call(method, path) {
    const res = await fetch(path, { method, headers: headers({ Accept: 'application/json' }), cache: 'no-store' });
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (res.status === 401) needToken();
    return { status: res.status, body };
  }

  // ---- state ----
  // key -> {key, holders: [{owner, fence, acquiredAt, expiresAt, onError,
  // maxHoldUntil}] oldest first, limit (0 until an inspection says),
  // paused, delayUntil (or null), queue: [{owner, since}], hidden}
  const keys = new Map();
  // key -> {fence, outcome, ended_at}: how a key's last lease ended, kept
  // apart from keys since a key with no lease left leaves keys.
  const lasts = new Map();
  const recent = new Map(); // key -> [event], newest first
  const MAX_RECENT = 50;
  const MAX_RECENT_KEYS = 2000;
  const MAX_ROWS = 500;
  let stats = null; // the last GET /v1/stats body, or null
  let lastId = 0; // the id of the latest event received: a reconnect replays what came after
  const log = []; // the last events received, for re-applying over a snapshot
  const MAX_LOG = 10000;
  let received = 0; // events received on this page

  function stateOf(k) {
    let s = keys.get(k);
    if (!s) {
      s = { key: k, holders: [], limit: 0, paused: false, delayUntil: null, queue: [], hidden: 0 };
      keys.set(k, s);
    }
    return s;
  }
  const waiters = (s) => s.queue.length + s.hidden;
  const delayed = (s) => s.delayUntil !== null && until(s.delayUntil) > 0;
  // idle: nothing keeps the key on the server (it forgets such a key).
  const idle = (s) => s.holders.length === 0 && waiters(s) === 0 && !s.paused && !delayed(s);

  function removeWaiter(s, owner, since) {
    let i = s.queue.findIndex((w) => w.owner === owner && w.since === since);
    // A re-sent acquire that took a superseded waiter's place keeps its
    // arrival time, perhaps under another owner.
    if (i < 0) i = s.queue.findIndex((w) => w.superseded && w.since === since);
    if (i >= 0) s.queue.splice(i, 1);
    else if (s.hidden > 0) s.hidden--; // one of the waiters past the listed ones
  }

  // setLast keeps the latest of what is known of how k's last lease ended.
  function setLast(k, last) {
    if (!last) return;
    const cur = lasts.get(k);
    if (cur && Date.parse(cur.ended_at) > Date.parse(last.ended_at)) return;
    lasts.delete(k);
    if (lasts.size >= MAX_RECENT_KEYS) lasts.delete(lasts.keys().next().value);
    lasts.set(k, { fence: last.fence, outcome: last.outcome, ended_at: last.ended_at });
  }

  // apply folds one event into the state. Applying an event twice, or an
  // event the snapshot already reflects, changes nothing: waiters are named
  // by (owner, waiting_since) and leases by their fence.
  function apply(ev) {
    const s = stateOf(ev.key);
    switch (ev.type) {
      case 'queued':
        if (!s.queue.some((w) => w.owner === ev.owner && w.since === ev.time)) {
          if (s.hidden > 0) s.hidden++;
          else s.queue.push({ owner: ev.owner, since: ev.time });
        }
        break;
      case 'granted':
        if (ev.from_queue) removeWaiter(s, ev.owner, ev.waiting_since);
        s.delayUntil = null; // a grant means no lock-delay is in force
        if (!s.holders.some((h) => h.fence === ev.fence || (s.limit === 1 && h.fence > ev.fence))) {
          // A mutex has one holder: a later grant means the earlier ended.
          if (s.limit === 1) s.holders = [];
          s.holders.push({ owner: ev.owner, fence: ev.fence, acquiredAt: ev.time, expiresAt: ev.expires_at, onError: ev.on_error, maxHoldUntil: '' });
          s.holders.sort((a, b) => Date.parse(a.acquiredAt) - Date.parse(b.acquiredAt) || a.fence - b.fence);
        }
        setLast(s.key, ev.previous);
        break;
      case 'renewed':
        for (const h of s.holders) if (h.fence === ev.fence) h.expiresAt = ev.expires_at;
        break;
      case 'released': case 'expired': case 'forced':
        s.holders = s.holders.filter((h) => h.fence !== ev.fence);
        setLast(s.key, { fence: ev.fence, outcome: ev.outcome, ended_at: ev.time });
        break;
      case 'timeout': case 'aborted': case 'cancelled': case 'drained':
        removeWaiter(s, ev.owner, ev.waiting_since);
        break;
      case 'superseded': { // the place is taken over: the queue keeps its length
        const w = s.queue.find((x) => x.owner === ev.owner && x.since === ev.waiting_since);
        if (w) w.superseded = true;
        break;
      }
      case 'paused': s.paused = true; break;
      case 'resumed': s.paused = false; break;
      case 'delayed':
        if (s.delayUntil === null || Date.parse(ev.until) > Date.parse(s.delayUntil)) s.delayUntil = ev.until;
        break;
    }
    if (idle(s)) keys.delete(s.key);
  }

  function onEvent(ev) {
    if (ev.id > lastId) lastId = ev.id;
    if (ev.replay) { // history: what happened before this stream opened
      remember(ev);
      scheduleRender();
      return;
    }
    received++;
    log.push({ n: received, ev });
    if (log.length > MAX_LOG + 1000) log.splice(0, log.length - MAX_LOG); // trim in chunks
    apply(ev);
    remember(ev);
    scheduleRender();
  }

  // remember adds ev to its key's recent events, newest first, once: a
  // replay may repeat what a live stream or an earlier replay brought.
  const newer = (a, b) => Date.parse(b.time) - Date.parse(a.time) || b.id - a.id;
  function remember(ev) {
    let r = recent.get(ev.key);
    if (!r) {
      if (recent.size >= MAX_RECENT_KEYS) recent.delete(recent.keys().next().value);
      r = [];
      recent.set(ev.key, r);
    }
    if (r.some((e) => e.id === ev.id && e.time === ev.time && e.type === ev.type)) return;
    r.unshift(ev);
    if (r.length > 1 && newer(r[0], r[1]) > 0) r.sort(newer); // a replayed event older than what is there
    if (r.length > MAX_RECENT) r.length = MAX_RECENT;
  }

  // loadHistory fetches the history the server kept of key k (a stream of
  // its events with since=0, read until "replayed"), for a key view opened
  // on the overview's stream of every key, whose replay covers only the
  // latest events of all keys together.
  async function loadHistory(k) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10000);
    try {
      const res = await fetch('/v1/events?key=' + enc(k) + '&since=0', { headers: headers({ Accept: 'text/event-stream' }), signal: ac.signal, cache: 'no-store' });
      if (!res.ok || !res.body) return;
      await readSSE(res.body, (name, data) => {
        if (name === 'replayed') return false;
        dispatch(name, data);
        return true;
      });
    } catch (_) { /* history is a nicety: the live view does without */ } finally {
      clearTimeout(timer);
      ac.abort();
    }
  }

  // ---- rates and totals from the server ----
  async function pollStats() {
    if (currentKey !== null || document.hidden) return;
    let r;
    try { r = await call('GET', '/v1/stats'); } catch (_) { r = null; }
    stats = r && r.status === 200 && r.body ? r.body : null;
    scheduleRender();
  }
  setInterval(pollStats, 2000);

  // replay applies again the events received after mark (optionally only
  // those of one key), over a snapshot taken after mark.
  function replay(mark, key) {
    for (const { n, ev } of log) {
      if (n > mark && (key === undefined || ev.key === key)) apply(ev);
    }
  }

  const fromHolder = (h) => ({ owner: h.owner, fence: h.fence, acquiredAt: h.acquired_at, expiresAt: h.expires_at, onError: h.on_error, maxHoldUntil: h.max_hold_until || '' });

  function fromInspect(b) {
    setLast(b.key, b.last);
    // holders is new with semaphores; an older server sends only holder.
    const holders = Array.isArray(b.holders) ? b.holders : b.held && b.holder ? [b.holder] : [];
    return {
      key: b.key,
      holders: holders.map(fromHolder),
      limit: b.limit || 1,
      paused: b.paused === true,
      delayUntil: b.delay_until || null,
      queue: (b.queue || []).map((w) => ({ owner: w.owner, since: w.waiting_since })),
      hidden: Math.max(0, b.waiters - (b.queue || []).length),
    };
  }

  // The overview learns of a key from its events, which do not carry the
  // key's limit: the rows on screen whose limit is unknown ask for it, two
  // requests at a time (a key's limit does not change while it lives).
  const limitAsked = new Set();
  let limitBusy = 0;
  function askLimits(rows) {
    for (const s of rows) {
      if (limitBusy >= 2) return;
      if (s.limit !== 0 || limitAsked.has(s.key)) continue;
      limitAsked.add(s.key);
      limitBusy++;
      call('GET', '/v1/locks/' + enc(s.key)).then((r) => {
        if (r.status === 200 && r.body && keys.get(s.key) === s && s.limit === 0) s.limit = r.body.limit || 1;
      }).catch(() => {}).finally(() => {
        limitBusy--;
        limitAsked.delete(s.key);
        scheduleRender();
      });
    }
  }

  const enc = encodeURIComponent;

  async function loadKey(k) {
    const mark = received;
    const r = await call('GET', '/v1/locks/' + enc(k));
    if (r.status !== 200 || !r.body) return false;
    const s = fromInspect(r.body);
    if (!idle(s)) keys.set(k, s);
    else keys.delete(k);
    replay(mark, k);
    return true;
  }

  let snapshotTruncated = false;

  async function loadSnapshot(gen) {
    const mark = received;
    const r = await call('GET', '/v1/locks?limit=1000');
    if (gen !== connGen) return;
    if (r.status !== 200 || !r.body) {
      notice('Could not load the current locks (' + (r.body && r.body.message ? r.body.message : 'HTTP ' + r.status) + ').');
      return;
    }
    snapshotTruncated = r.body.next !== '';
    const fresh = new Map();
    const rows = r.body.locks.slice();
    const worker = async () => {
      while (rows.length > 0) {
        const row = rows.shift();
        const d = await call('GET', '/v1/locks/' + enc(row.key));
        if (d.status === 200 && d.body) {
          const s = fromInspect(d.body);
          if (!idle(s)) fresh.set(row.key, s);
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    if (gen !== connGen) return;
    keys.clear();
    for (const [k, s] of fresh) keys.set(k, s);
    replay(mark);
    notice('');
    scheduleRender();
  }

  // ---- the event stream ----
  let connGen = 0;
  let ctl = null;
  let backoff = 500;
  let lastData = 0;
  let live = false;

  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    $('conn-text').textContent = text;
  }

  async function connect() {
    const gen = ++connGen;
    if (ctl) ctl.abort();
    ctl = new AbortController();
    live = false;
    // Without admin rights the console follows only the key on screen.
    const oneKey = canAdmin === false;
    if (oneKey && currentKey === null) {
      setConn('auth', 'admin token needed');
      notice('The overview lists every key, which needs an admin token. With this token, open one key by name.');
      return;
    }
    // since=0 at first, then the last id seen: the server replays the
    // history it kept after it (all of it if the daemon restarted since).
    const path = (oneKey ? '/v1/events?key=' + enc(currentKey) + '&' : '/v1/events?') + 'since=' + (oneKey ? 0 : lastId);
    let res;
    try {
      res = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal: ctl.signal, cache: 'no-store' });
    } catch (_) {
      retry(gen);
      return;
    }
    if (gen !== connGen) return;
    if (res.status === 401) {
      needToken();
      setConn('auth', 'token needed');
      return;
    }
    if (res.status === 403 && !oneKey) {
      canAdmin = false;
      keys.clear();
      scheduleRender();
      connect();
      return;
    }
    if (!res.ok || !res.body) {
      let msg = 'HTTP ' + res.status;
      try { msg = (await res.json()).message || msg; } catch (_) { /* not JSON */ }
      notice('The event stream was refused: ' + msg);
      retry(gen);
      return;
    }
    live = true;
    lastData = Date.now();
    backoff = 500;
    if (!oneKey) canAdmin = true;
    if (!oneKey && currentKey !== null) loadHistory(currentKey).then(scheduleRender);
    setConn('live', oneKey ? 'live (this key only)' : 'live');
    notice('');
    if (oneKey) loadKey(currentKey).then(scheduleRender);
    else loadSnapshot(gen);
    pollStats();
    try {
      lastData = Date.now();
      await readSSE(res.body, (name, data) => {
        if (gen !== connGen) return false;
        lastData = Date.now();
        dispatch(name, data);
        return true;
      });
    } catch (_) { /* aborted or broken: reconnect below */ }
    if (gen === connGen) retry(gen);
  }

  function retry(gen) {
    if (gen !== connGen) return;
    live = false;
    setConn('reconnecting', 'reconnecting…');
    const wait = backoff;
    backoff = Math.min(backoff * 2, 4000);
    setTimeout(() => { if (gen === connGen) connect(); }, wait);
  }

  // readSSE reads Server-Sent Events from body, calling handle(name, data)
  // for each (and with no arguments for a heartbeat) until it returns false
  // or the stream ends.
  async function readSSE(body, handle) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let name = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        // handle() without arguments: a heartbeat.
        const go = line === '' ? data.length === 0 || handle(name || 'message', data.join('\n')) !== false
          : !line.startsWith(':') || handle() !== false;
        if (!go) {
          reader.cancel().catch(() => {});
          return;
        }
        if (line === '') {
          name = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') name = val;
      }
    }
  }

  function dispatch(name, data) {
    if (name === undefined || name === 'replayed') return; // a heartbeat; the end of the history
    if (name === 'overflow') {
      notice('The console fell behind the event stream; reconnecting and reloading.');
      return; // the server closes the stream; connect() reconnects
    }
    let ev;
    try { ev = JSON.parse(data); } catch (_) { return; }
    if (ev && typeof ev.key === 'string') onEvent(ev);
  }

  // A stream that sends nothing, not even its 15 s heartbeat, is dead.
  setInterval(() => {
    if (live && Date.now() - lastData > 40000 && ctl) ctl.abort();
  }, 5000);

  // ---- token UI ----
  function needToken() {
    const f = $('token-form');
    if (f.hidden) {
      f.hidden = false;
      $('token-toggle').setAttribute('aria-expanded', 'true');
      $('token-note').textContent = token ? 'The server refused this token.' : 'This server requires a token.';
      $('token-input').focus();
    }
  }

  $('token-toggle').addEventListener('click', () => {
    const f = $('token-form');
    f.hidden = !f.hidden;
    $('token-toggle').setAttribute('aria-expanded', String(!f.hidden));
    $('token-note').textContent = token ? 'A token is in use.' : '';
    if (!f.hidden) $('token-input').focus();
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token-input').value.trim();
    $('token-input').value = '';
    canAdmin = null;
    $('token-form').hidden = true;
    $('token-toggle').setAttribute('aria-expanded', 'false');
    connect();
  });
  $('token-clear').addEventListener('click', () => {
    token = '';
    canAdmin = null;
    $('token-input').value = '';
    $('token-note').textContent = 'Token forgotten.';
    connect();
  });

  // ---- rendering ----
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = text === '';
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function dur(ms) {
    if (!Number.isFinite(ms)) return '–';
    ms = Math.max(0, ms);
    if (ms < 10000) return (ms / 1000).toFixed(1) + 's';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(m / 60) + 'h ' + String(m % 60).padStart(2, '0') + 'm';
  }
  const since = (t) => Date.now() - Date.parse(t);
  const until = (t) => Date.parse(t) - Date.now();
  const clockTime = (t) => {
    const d = new Date(t);
    return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  };

  function oldestSince(s) {
    return s.queue.length > 0 ? Date.parse(s.queue[0].since) : Infinity;
  }

  // perSecond is the server's rate of an event over the last minute (or
  // its life, if shorter); '–' until GET /v1/stats has answered.
  function perSecond(kind) {
    if (!stats) return '–';
    return (stats.last_minute[kind] / (stats.window_ms / 1000)).toFixed(2);
  }
  const sinceStart = (kind) => (stats ? stats.totals[kind] + ' since start' : '');

  // Rendering follows events at most every 200 ms, so a burst of
  // thousands of transitions costs a few repaints, not thousands.
  let pending = false;
  let lastRender = 0;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    const wait = Math.max(0, lastRender + 200 - Date.now());
    setTimeout(() => requestAnimationFrame(() => { pending = false; render(); }), wait);
  }

  function render() {
    lastRender = Date.now();
    if (currentKey === null) renderOverview();
    else renderKey(currentKey);
  }

  function renderOverview() {
    let held = 0;
    let waiting = 0;
    for (const s of keys.values()) {
      if (idle(s)) { keys.delete(s.key); continue; } // its lock-delay ended
      if (s.holders.length > 0) held++;
      waiting += waiters(s);
    }
    $('t-keys').textContent = keys.size;
    $('t-held').textContent = held;
    $('t-waiting').textContent = waiting;
    $('t-grants').textContent = perSecond('granted');
    $('t-grants-total').textContent = sinceStart('granted');
    $('t-expired').textContent = perSecond('expired');
    $('t-expired-total').textContent = sinceStart('expired');

    const prefix = $('filter').value;
    const sort = $('sort').value;
    let rows = [...keys.values()].filter((s) => s.key.startsWith(prefix));
    if (sort === 'waiters') rows.sort((a, b) => waiters(b) - waiters(a) || cmp(a.key, b.key));
    else if (sort === 'oldest') rows.sort((a, b) => oldestSince(a) - oldestSince(b) || cmp(a.key, b.key));
    else rows.sort((a, b) => cmp(a.key, b.key));
    const total = rows.length;
    rows = rows.slice(0, MAX_ROWS);

    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : undefined;
    const body = $('keys-body');
    const trs = rows.map((s) => {
      const tr = el('tr');
      tr.dataset.key = s.key;
      const keyCell = el('td', null, 'key');
      const a = el('a', s.key);
      a.href = '#/key/' + enc(s.key);
      a.dataset.key = s.key;
      a.title = s.key;
      keyCell.append(a);
      if (s.paused) keyCell.append(' ', el('span', 'paused', 'tag tag-paused'));
      if (delayed(s)) keyCell.append(' ', el('span', 'delay ' + dur(until(s.delayUntil)), 'tag tag-delay'));
      const h = s.holders[0]; // the oldest
      const n = s.holders.length;
      const left = Math.min(...s.holders.map((x) => until(x.expiresAt)));
      const w = waiters(s);
      const cells = [
        ['Holder', h ? h.owner + (n > 1 ? ' +' + (n - 1) : '') : '—', h ? 'owner' : 'owner empty'],
        ['Fence', h ? h.fence : '', 'num mono wide'],
        ['Held for', h ? dur(since(h.acquiredAt)) : '', 'num wide'],
        ['Expires in', h ? dur(left) : '', 'num' + (h && left < 5000 ? ' soon' : '')],
        ['Waiters', w, 'num' + (w > 0 ? ' waiting' : '')],
        ['Oldest wait', s.queue.length > 0 ? dur(Date.now() - oldestSince(s)) : '', 'num'],
        ['Slots', n + '/' + (s.limit || '?'), 'num slots' + (s.limit > 0 && n >= s.limit && w > 0 ? ' waiting' : '')],
      ].map(([label, text, cls]) => {
        const td = el('td', text, cls);
        td.dataset.label = label; // the phone layout shows it before the value
        return td;
      });
      cells[cells.length - 1].title = n + ' of ' + (s.limit || '?') + ' held';
      tr.append(keyCell, ...cells);
      return tr;
    });
    body.replaceChildren(...trs);
    askLimits(rows);
    renderPrefixAdmin(prefix, total);
    if (focused !== undefined) {
      for (const a of body.querySelectorAll('a')) if (a.dataset.key === focused) a.focus();
    }
    const empty = $('keys-empty');
    empty.hidden = total > 0;
    if (total === 0 && keys.size > 0) empty.textContent = 'No active key starts with that prefix.';
    else empty.textContent = 'No active keys. Acquire one and it shows up here.';
    if (total > MAX_ROWS) { empty.hidden = false; empty.textContent = 'Showing ' + MAX_ROWS + ' of ' + total + ' keys; narrow them with a prefix.'; }
    if (snapshotTruncated && total <= MAX_ROWS) { empty.hidden = false; empty.textContent = 'More than 1000 keys were active when the console connected; keys appear here as they change.'; }
  }

  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  function renderKey(k) {
    $('key-title').textContent = k;
    let s = keys.get(k);
    if (s && idle(s)) { keys.delete(k); s = undefined; } // its lock-delay ended
    const hs = s ? s.holders : [];
    const box = $('holder');
    box.replaceChildren(...hs.map((h) => {
      const dl = el('dl', null, 'lease');
      const add = (t, v, cls) => { dl.append(el('dt', t), el('dd', v, cls)); };
      add('Owner', h.owner, 'owner');
      add('Fence', h.fence, 'mono');
      add('Held for', dur(since(h.acquiredAt)));
      const left = until(h.expiresAt);
      add('Expires in', dur(left), left < 5000 ? 'soon' : '');
      add('On error', h.onError);
      add('Acquired', clockTime(h.acquiredAt));
      if (h.maxHoldUntil) add('Held at most until', clockTime(h.maxHoldUntil));
      return dl;
    }));
    box.hidden = hs.length === 0;
    const limit = s ? s.limit : 0;
    $('holder-heading').textContent = limit > 1 || hs.length > 1 ? 'Holders' : 'Holder';
    const slots = $('slots');
    slots.hidden = !(limit > 1 || hs.length > 1);
    slots.textContent = limit > 0 ? hs.length + ' of ' + limit + ' held' : hs.length + ' held';
    $('holder-none').hidden = hs.length > 0;
    $('force').hidden = hs.length === 0 || canAdmin !== true;
    if (hs.length === 0) { $('force-confirm').hidden = true; $('force-btn').hidden = false; }

    const paused = !!(s && s.paused);
    $('key-paused').hidden = !paused;
    const delay = s && delayed(s) ? s.delayUntil : null;
    $('key-delay').hidden = delay === null;
    if (delay !== null) {
      const end = $('key-delay-end');
      end.dateTime = delay;
      end.textContent = clockTime(delay);
      $('key-delay-left').textContent = '(' + dur(until(delay)) + ' left)';
    }
    const last = lasts.get(k);
    $('key-last').hidden = !last;
    if (last) {
      $('key-last-text').textContent = 'fence ' + last.fence + ' ' + outcomeText(last.outcome) + ' at ' + clockTime(last.ended_at) + ' (' + dur(since(last.ended_at)) + ' ago)';
      $('key-last').className = 'tag tag-last-' + last.outcome;
    }
    $('key-admin').hidden = canAdmin !== true;
    $('pause-btn').textContent = paused ? 'Resume' : 'Pause';

    const q = s ? s.queue : [];
    $('queue-count').textContent = s ? waiters(s) : 0;
    $('queue-body').replaceChildren(...q.map((w, i) => {
      const tr = el('tr');
      tr.append(el('td', i + 1, 'num'), el('td', w.owner, 'owner'), el('td', dur(since(w.since)), 'num'));
      return tr;
    }));
    $('queue-empty').hidden = q.length > 0;
    const more = $('queue-more');
    more.hidden = !s || s.hidden === 0;
    more.textContent = s && s.hidden > 0 ? '…and ' + s.hidden + ' more waiting behind them.' : '';

    const evs = recent.get(k) || [];
    $('events-list').replaceChildren(...evs.map((ev) => {
      const li = el('li', null, 'ev-' + ev.type + (ev.replay ? ' ev-history' : ''));
      const t = el('time', clockTime(ev.time));
      t.dateTime = ev.time;
      if (ev.replay) li.title = 'From the history the server kept: it happened before this page connected.';
      li.append(t, el('span', ev.type, 'ev-type'), el('span', detail(ev), 'ev-detail'));
      return li;
    }));
    $('events-empty').hidden = evs.length > 0;
  }

  function outcomeText(o) {
    switch (o) {
      case 'released': return 'was released';
      case 'failed': return 'was released as failed';
      case 'expired': return 'expired (its holder died or its TTL was too short)';
      case 'forced': return 'was force-released';
      default: return 'ended: ' + o;
    }
  }

  function detail(ev) {
    const who = ev.owner === '' ? '(no owner)' : ev.owner;
    switch (ev.type) {
      case 'superseded': return who + ' · waited ' + dur(ev.waited_ms) + ' · a re-sent acquire with the same request_id took its place at position ' + ev.position;
      case 'drained': return who + ' · waited ' + dur(ev.waited_ms) + ' · drained: ' + ev.reason;
      case 'paused': return 'an operator paused the key: no grants until it is resumed';
      case 'resumed': return 'an operator resumed the key';
      case 'delayed': return 'lock-delay: nobody is granted the key before ' + clockTime(ev.until);
      case 'queued': return who + ' at position ' + ev.position;
      case 'granted': return who + ' · fence ' + ev.fence + ' · waited ' + dur(ev.waited_ms) +
        (ev.previous ? ' · previous ' + ev.previous.outcome : '');
      case 'released': return who + ' · fence ' + ev.fence + ' · ' + (ev.outcome === 'failed' ? 'failed' : 'ok') + ' · held ' + dur(ev.held_ms);
      case 'expired': return who + ' · fence ' + ev.fence + ' · held ' + dur(ev.held_ms) + ' · the holder died or its TTL is too short';
      case 'forced': return who + ' · fence ' + ev.fence + ' · held ' + dur(ev.held_ms) + ' · force-released';
      case 'renewed': return who + ' · fence ' + ev.fence + ' · until ' + clockTime(ev.expires_at);
      default: return who + ' · waited ' + dur(ev.waited_ms);
    }
  }

  // ---- force release ----
  $('force-btn').addEventListener('click', () => {
    const s = keys.get(currentKey);
    if (!s || s.holders.length === 0) return;
    const h = s.holders[0];
    $('force-question').textContent = s.holders.length === 1
      ? 'Force-release fence ' + h.fence + ' held by ' + (h.owner || '(no owner)') + '?'
      : 'Force-release all ' + s.holders.length + ' leases (fences ' + s.holders.map((x) => x.fence).join(', ') + ')?';
    $('force-btn').hidden = true;
    $('force-confirm').hidden = false;
    $('force-result').textContent = '';
    $('force-yes').focus();
  });
  function closeConfirm() {
    $('force-confirm').hidden = true;
    $('force-btn').hidden = false;
  }
  $('force-no').addEventListener('click', () => { closeConfirm(); $('force-btn').focus(); });
  $('force-yes').addEventListener('click', async () => {
    const k = currentKey;
    const s = keys.get(k);
    const n = s ? s.holders.length : 1;
    closeConfirm();
    const out = $('force-result');
    out.textContent = 'Releasing…';
    let r;
    try { r = await call('DELETE', '/v1/locks/' + enc(k)); } catch (_) { out.textContent = 'The server did not answer.'; return; }
    if (r.status === 200) {
      out.textContent = 'Released fence ' + r.body.fence + ' after ' + dur(r.body.held_ms) +
        (n > 1 ? ', and the other ' + plural(n - 1, 'lease', 'leases') + ' with it; the next waiters, if any, have the key.' : '; the next waiter, if any, has the lock.');
    } else if (r.status === 403) {
      out.textContent = 'Force release needs an admin token.';
    } else {
      out.textContent = (r.body && r.body.message) || 'Failed: HTTP ' + r.status + '.';
    }
    scheduleRender();
    $('force-btn').focus();
  });

  // ---- operators' actions: pause, resume, drain (admin tokens only) ----
  // Each asks first in the page itself (a browser dialog would block the
  // page, and the tests refuse them), like force release.

  // answer turns an admin call's reply into a sentence.
  function answer(r, ok) {
    if (r.status === 200 && r.body) return ok(r.body);
    if (r.status === 403) return 'This needs an admin token.';
    return (r.body && r.body.message) || 'Failed: HTTP ' + r.status + '.';
  }
  const plural = (n, one, many) => n + ' ' + (n === 1 ? one : many);

  let keyAction = ''; // 'pause', 'resume' or 'drain' while the key view asks
  function openKeyConfirm(action) {
    const k = currentKey;
    const s = keys.get(k);
    keyAction = action;
    $('key-question').textContent = action === 'pause'
      ? 'Pause ' + k + '? Nobody is granted it until it is resumed; holders keep their leases and waiters their places.'
      : action === 'resume' ? 'Resume ' + k + '? Its waiters are granted again, in order.'
        : 'Drain the ' + plural(s ? waiters(s) : 0, 'waiter', 'waiters') + ' of ' + k + '? Each is answered 409 drained; holders keep their leases.';
    $('key-yes').textContent = action === 'pause' ? 'Pause now' : action === 'resume' ? 'Resume now' : 'Drain now';
    $('key-yes').className = action === 'resume' ? '' : 'danger';
    $('drain-reason-wrap').hidden = action !== 'drain';
    $('drain-reason').value = '';
    $('key-buttons').hidden = true;
    $('key-confirm').hidden = false;
    $('key-result').textContent = '';
    (action === 'drain' ? $('drain-reason') : $('key-yes')).focus();
  }
  function closeKeyConfirm() {
    keyAction = '';
    $('key-confirm').hidden = true;
    $('key-buttons').hidden = false;
  }
  $('pause-btn').addEventListener('click', () => {
    const s = keys.get(currentKey);
    openKeyConfirm(s && s.paused ? 'resume' : 'pause');
  });
  $('drain-btn').addEventListener('click', () => openKeyConfirm('drain'));
  $('key-no').addEventListener('click', () => { closeKeyConfirm(); $('pause-btn').focus(); });
  $('key-confirm').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { closeKeyConfirm(); $('pause-btn').focus(); }
  });
  $('key-confirm').addEventListener('submit', async (e) => {
    e.preventDefault();
    const k = currentKey;
    const action = keyAction;
    const reason = $('drain-reason').value.trim();
    closeKeyConfirm();
    if (k === null || action === '') return;
    const out = $('key-result');
    out.textContent = action === 'drain' ? 'Draining…' : action === 'pause' ? 'Pausing…' : 'Resuming…';
    const path = '/v1/locks/' + enc(k) + (action === 'drain' ? '/waiters' + (reason ? '?reason=' + enc(reason) : '') : '/' + action);
    let r;
    try { r = await call(action === 'drain' ? 'DELETE' : 'POST', path); } catch (_) { out.textContent = 'The server did not answer.'; return; }
    out.textContent = answer(r, (b) => action === 'drain' ? 'Drained ' + plural(b.drained, 'waiter', 'waiters') + '.'
      : b.paused ? (b.changed ? 'Paused: nobody is granted this key until it is resumed.' : 'It was already paused.')
        : (b.changed ? 'Resumed: its waiters are granted again.' : 'It was not paused.'));
    if (r.status === 200 && action !== 'drain' && currentKey === k) loadKey(k).then(scheduleRender); // a client token's stream may lag
    scheduleRender();
    $(action === 'drain' ? 'drain-btn' : 'pause-btn').focus();
  });

  // The overview acts on every key under the prefix typed in its filter.
  let prefixAction = '';
  let prefixTarget = '';
  function renderPrefixAdmin(prefix, total) {
    const bar = $('prefix-admin');
    bar.hidden = canAdmin !== true || prefix === '';
    if (bar.hidden) return;
    $('prefix-label').textContent = 'Keys starting with “' + prefix + '” (' + plural(total, 'active key', 'active keys') + ' now):';
  }
  function openPrefixConfirm(action) {
    const prefix = $('filter').value;
    if (prefix === '') return;
    let active = 0;
    let waiting = 0;
    for (const s of keys.values()) {
      if (s.key.startsWith(prefix)) { active++; waiting += waiters(s); }
    }
    prefixAction = action;
    prefixTarget = prefix;
    $('prefix-question').textContent = action === 'pause'
      ? 'Pause every key starting with “' + prefix + '” (' + plural(active, 'active key', 'active keys') + '), and the keys created under it until it is resumed?'
      : action === 'resume' ? 'Resume every paused key starting with “' + prefix + '”, and stop pausing new ones?'
        : 'Drain every waiter of the keys starting with “' + prefix + '” (' + plural(waiting, 'waiter', 'waiters') + ' now)? Each is answered 409 drained.';
    $('prefix-yes').textContent = action === 'pause' ? 'Pause them' : action === 'resume' ? 'Resume them' : 'Drain them';
    $('prefix-yes').className = action === 'resume' ? '' : 'danger';
    $('prefix-reason-wrap').hidden = action !== 'drain';
    $('prefix-reason').value = '';
    $('prefix-buttons').hidden = true;
    $('prefix-confirm').hidden = false;
    $('prefix-result').textContent = '';
    (action === 'drain' ? $('prefix-reason') : $('prefix-yes')).focus();
  }
  function closePrefixConfirm() {
    prefixAction = '';
    $('prefix-confirm').hidden = true;
    $('prefix-buttons').hidden = false;
  }
  $('ppause-btn').addEventListener('click', () => openPrefixConfirm('pause'));
  $('presume-btn').addEventListener('click', () => openPrefixConfirm('resume'));
  $('pdrain-btn').addEventListener('click', () => openPrefixConfirm('drain'));
  $('prefix-no').addEventListener('click', () => { closePrefixConfirm(); $('ppause-btn').focus(); });
  $('prefix-confirm').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { closePrefixConfirm(); $('ppause-btn').focus(); }
  });
  $('prefix-confirm').addEventListener('submit', async (e) => {
    e.preventDefault();
    const action = prefixAction;
    const prefix = prefixTarget;
    const reason = $('prefix-reason').value.trim();
    closePrefixConfirm();
    // The question named one prefix: act on it only if the filter still says so.
    if (action === '' || prefix === '' || prefix !== $('filter').value) return;
    const out = $('prefix-result');
    out.textContent = action === 'drain' ? 'Draining…' : action === 'pause' ? 'Pausing…' : 'Resuming…';
    const path = action === 'drain' ? '/v1/locks/waiters?prefix=' + enc(prefix) + (reason ? '&reason=' + enc(reason) : '')
      : '/v1/locks/' + action + '?prefix=' + enc(prefix);
    let r;
    try { r = await call(action === 'drain' ? 'DELETE' : 'POST', path); } catch (_) { out.textContent = 'The server did not answer.'; return; }
    out.textContent = answer(r, (b) => action === 'drain' ? 'Drained ' + plural(b.drained, 'waiter', 'waiters') + ' under “' + prefix + '”.'
      : action === 'pause' ? 'Paused ' + plural(b.paused, 'key', 'keys') + ' under “' + prefix + '”; keys created under it are paused until it is resumed.'
        : 'Resumed ' + plural(b.resumed, 'key', 'keys') + ' under “' + prefix + '”.');
    scheduleRender();
    $(action === 'drain' ? 'pdrain-btn' : action === 'pause' ? 'ppause-btn' : 'presume-btn').focus();
  });

  // ---- routing: #/ is the overview, #/key/<escaped key> a key ----
  let currentKey = null;
  function route() {
    const m = /^#\/key\/(.+)$/.exec(location.hash);
    let k = null;
    if (m) {
      try { k = decodeURIComponent(m[1]); } catch (_) { k = null; }
    }
    const changed = k !== currentKey;
    currentKey = k;
    $('overview').hidden = k !== null;
    $('keyview').hidden = k === null;
    if (changed) {
      if (canAdmin === false) connect(); // follow the new key's events
      $('force-result').textContent = '';
      closeConfirm();
      $('key-result').textContent = '';
      closeKeyConfirm();
      closePrefixConfirm();
      document.title = k === null ? 'mutexd console' : k + ' · mutexd console';
      if (k !== null) loadKey(k).then(scheduleRender);
      if (k !== null && canAdmin === true) loadHistory(k).then(scheduleRender);
      if (k === null) pollStats();
      $('main').focus({ preventScroll: true });
    }
    render();
  }
  window.addEventListener('hashchange', route);
  $('filter').addEventListener('input', () => {
    if (prefixAction !== '' && $('filter').value !== prefixTarget) closePrefixConfirm(); // it asked about another prefix
    $('prefix-result').textContent = '';
    scheduleRender();
  });
  $('goto').addEventListener('submit', (e) => {
    e.preventDefault();
    const k = $('goto-key').value;
    if (k !== '') location.hash = '#/key/' + enc(k);
  });
  $('sort').addEventListener('change', scheduleRender);

  setInterval(render, 1000); // countdowns tick locally; the network is not polled
  route();
  setConn('connecting', 'connecting…');
  connect();
})();
