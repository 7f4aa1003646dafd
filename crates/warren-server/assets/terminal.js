// warren's browser terminal: sign in, then one WebSocket per connection to
// /v1/workspaces/me/terminal speaking the protocol of docs/terminal-protocol.md.
// The session id lives in sessionStorage, so a reload (or a reconnect) re-attaches to the same
// shell and the server replays its screen and scrollback. `window.term` is the xterm.js
// Terminal; `window.warren` the connection state (tests read both).
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  const KEY = { token: 'warren.token', user: 'warren.user', session: 'warren.session' };
  const ACK_EVERY = 32 * 1024;      // acknowledge at least this often (bytes processed)
  const INPUT_CHUNK = 60 * 1024;    // the server takes input frames of at most 64 KiB
  const PING_MS = 25000;
  const state = {
    status: 'signed-out',
    session: store.getItem(KEY.session),
    user: store.getItem(KEY.user),
    lastError: null,
    gen: 0,
    attempt: 0,
    ws: null,
    exited: false,
    connects: 0,
  };
  window.warren = state;

  const term = new Terminal({ cursorBlink: true, scrollback: 2000, fontSize: 14,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace' });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  window.term = term;
  let opened = false;
  let retryTimer = null;
  let pingTimer = null;

  function setStatus(s, text) {
    state.status = s;
    const el = $('status');
    el.dataset.state = s;
    el.textContent = text || s;
  }

  // Flow control: tell the server how many bytes xterm.js has processed.
  let unacked = 0;
  let ackTimer = null;
  function flushAck() {
    if (ackTimer) { clearTimeout(ackTimer); ackTimer = null; }
    if (unacked > 0 && state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: 'ack', bytes: unacked }));
    }
    unacked = 0;
  }
  function processed(gen, n) {
    if (gen !== state.gen) return; // a write of an earlier connection
    unacked += n;
    if (unacked >= ACK_EVERY) flushAck();
    else if (!ackTimer) ackTimer = setTimeout(flushAck, 10);
  }

  function send(data) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < data.length; i += INPUT_CHUNK) ws.send(data.subarray(i, i + INPUT_CHUNK));
  }
  const encoder = new TextEncoder();
  term.onData((d) => {
    if (state.exited) {
      if (d === '\r') newSession();
      return;
    }
    send(encoder.encode(d));
  });
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    }
  });

  function wsUrl() {
    const u = new URL(window.location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = '/v1/workspaces/me/terminal';
    u.search = '';
    u.hash = '';
    return u.toString();
  }

  function forgetSession() {
    state.session = null;
    store.removeItem(KEY.session);
  }

  function connect() {
    clearTimeout(retryTimer);
    const gen = ++state.gen;
    unacked = 0;
    setStatus(state.attempt ? 'reconnecting' : 'connecting', state.attempt ? 'reconnecting…' : 'connecting…');
    const ws = new WebSocket(wsUrl());
    ws.binaryType = 'arraybuffer';
    state.ws = ws;
    const attach = () => {
      const msg = { type: 'attach', cols: term.cols, rows: term.rows };
      if (state.session) msg.session = state.session;
      ws.send(JSON.stringify(msg));
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token: store.getItem(KEY.token) }));
      attach();
    };
    ws.onmessage = (ev) => {
      if (gen !== state.gen) return;
      if (typeof ev.data !== 'string') {
        const data = new Uint8Array(ev.data);
        term.write(data, () => processed(gen, data.length));
        return;
      }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === 'session') {
        state.session = m.id;
        store.setItem(KEY.session, m.id);
        state.attempt = 0;
        state.exited = false;
        state.connects += 1;
        if (m.new) term.reset();
        setStatus('connected', m.new ? 'connected · new session' : 'connected · session resumed');
      } else if (m.type === 'exit') {
        state.exited = true;
        forgetSession();
        setStatus('exited', `shell exited (code ${m.code}) · press Enter for a new one`);
      } else if (m.type === 'error') {
        state.lastError = m;
        if (m.code === 'session_not_found') {
          forgetSession();
          attach(); // start a new session on the same connection
        }
      }
    };
    ws.onclose = (ev) => {
      if (gen !== state.gen) return;
      state.ws = null;
      if (state.exited) return;
      if (ev.code === 4401 || ev.code === 4403) {
        signOut(`sign-in refused: ${ev.reason || ev.code}`);
        return;
      }
      if (ev.code === 4409) {
        setStatus('taken-over', 'session opened in another tab · click “new session” or reload');
        return;
      }
      if (ev.code === 4410) {
        state.exited = true;
        forgetSession();
        setStatus('ended', `session ended (${ev.reason || 'closed'}) · press Enter for a new one`);
        return;
      }
      const delay = Math.min(10000, 500 * 2 ** state.attempt) + Math.floor(Math.random() * 250);
      state.attempt += 1;
      setStatus('reconnecting', `disconnected · reconnecting in ${(delay / 1000).toFixed(1)} s`);
      retryTimer = setTimeout(connect, delay);
    };
  }

  function newSession() {
    forgetSession();
    state.exited = false;
    state.attempt = 0;
    if (state.ws) { state.gen += 1; state.ws.close(1000); state.ws = null; }
    term.reset();
    connect();
  }

  function showTerminal() {
    $('signin').hidden = true;
    $('terminal').hidden = false;
    $('sign-out').hidden = false;
    $('new-session').hidden = false;
    $('who').textContent = state.user || '';
    if (!opened) {
      term.open($('terminal'));
      opened = true;
      new ResizeObserver(() => { try { fit.fit(); } catch (e) { /* hidden */ } }).observe($('terminal'));
    }
    fit.fit();
    term.focus();
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send('{"type":"ping"}');
    }, PING_MS);
    connect();
  }

  function signOut(message) {
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    state.gen += 1;
    if (state.ws) { state.ws.close(1000); state.ws = null; }
    for (const k of Object.values(KEY)) store.removeItem(k);
    state.session = null;
    state.user = null;
    $('terminal').hidden = true;
    $('sign-out').hidden = true;
    $('new-session').hidden = true;
    $('who').textContent = '';
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    setStatus('signed-out', 'signed out');
  }

  async function signIn(token) {
    const r = await fetch('/v1/whoami', { headers: { Authorization: `Bearer ${token}` } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && body.error.message) || `HTTP ${r.status}`);
    store.setItem(KEY.token, token);
    store.setItem(KEY.user, body.user);
    state.user = body.user;
    showTerminal();
  }

  $('signin').addEventListener('submit', (ev) => {
    ev.preventDefault();
    $('signin-error').textContent = '';
    signIn($('token').value.trim()).catch((e) => { $('signin-error').textContent = e.message; });
  });
  $('signin-local').addEventListener('click', async () => {
    $('signin-error').textContent = '';
    try {
      const r = await fetch('/terminal/dev-login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user: $('dev-user').value.trim() }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error((body.error && body.error.message) || `HTTP ${r.status}`);
      await signIn(body.token);
    } catch (e) {
      $('signin-error').textContent = e.message;
    }
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('new-session').addEventListener('click', () => newSession());

  fetch('/terminal/config').then((r) => r.json()).then((c) => { $('dev').hidden = !c.dev_login; }).catch(() => {});
  if (store.getItem(KEY.token)) showTerminal();
})();
