#!/usr/bin/env node
// pusher-js driver for tests/test_clients_pusherjs.py.
//
//   node pjs_driver.js SCENARIO '{"port":7001,"key":"..","secret":"..","appId":"..", ...}'
//
// Runs one named scenario against a soketi-impl server with the real pusher-js
// client (Node build) and prints what the clients saw as JSON lines on stdout:
//   {"t":"msg", "c":client, "event":.., "channel":.., "data":.., "user_id":..}  every protocol message
//   {"t":"state", "c":client, "prev":.., "cur":..}                              connection state changes
//   {"t":"check", "name":.., ...values}                                          values read from the client API
//   {"t":"ready", "name":..}   the scenario waits for the test to write "go\n" on stdin
//   {"t":"done"} at the end (exit 0) or {"t":"fail","reason":..} (exit 1).
// Every wait is for an event, with a timeout that fails the scenario (waitMs, default
// 5000; the whole scenario: totalMs, default 30000).
// Authorization runs in-process: the customHandlers sign with the Node `pusher` SDK.
// For debugging: "debug":1 sends pusher-js's own log to stderr, "stamp":1 adds a
// millisecond clock ("ms") to every line.
'use strict';

const Pusher = require('pusher-js');
const PusherServer = require('pusher');
const readline = require('readline');

const scenarioName = process.argv[2];
const P = JSON.parse(process.argv[3] || '{}');
const WAIT_MS = P.waitMs || 5000;
if (P.debug) {
  Pusher.logToConsole = true;
  Pusher.log = (m) => process.stderr.write(`${Date.now() % 100000} ${m}\n`);
}

const sdk = new PusherServer({
  appId: P.appId, key: P.key, secret: P.secret, host: '127.0.0.1', port: String(P.port), useTLS: false,
  encryptionMasterKeyBase64: P.masterKey || undefined,
});

function out(obj) {
  if (P.stamp) obj.ms = Date.now() % 100000;
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(reason) {
  out({ t: 'fail', reason: String(reason) });
  process.exit(1);
}

// ---------------------------------------------------------------- stdin control

const stdinLines = [];
const stdinWaiters = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const w = stdinWaiters.shift();
  if (w) w(line); else stdinLines.push(line);
});

/** Print a "ready" line and wait for the test to answer with a line on stdin. */
function ready(name, ms = 20000) {
  out({ t: 'ready', name });
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`no answer on stdin after ready ${name}`), ms);
    stdinWaiters.push((line) => { clearTimeout(timer); resolve(line); });
  });
}

// ---------------------------------------------------------------- clients

/** One pusher-js client that records everything it sees and lets a scenario wait for it. */
class Client {
  constructor(name, opts = {}) {
    this.name = name;
    this.seen = [];
    this.waiters = [];
    this.user = opts.user || null; // {user_id, user_info} for presence channels
    this.userData = opts.userData || null; // object for signin
    const options = {
      wsHost: '127.0.0.1', wsPort: opts.port || P.port, forceTLS: false, enabledTransports: ['ws'],
      disableStats: true, cluster: 'x',
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) => {
          try {
            const presence = channelName.startsWith('presence-') ? this.user : undefined;
            cb(null, sdk.authorizeChannel(socketId, channelName, presence));
          } catch (e) {
            cb(e, null);
          }
        },
      },
      userAuthentication: {
        customHandler: ({ socketId }, cb) => {
          try {
            cb(null, sdk.authenticateUser(socketId, this.userData));
          } catch (e) {
            cb(e, null);
          }
        },
      },
    };
    // A server mounted under a prefix (tests/test_hosts_examples.py): "wsPath":"/pusher".
    if (P.wsPath) options.wsPath = P.wsPath;
    Object.assign(options, opts.pusherOptions || {});
    this.pusher = new Pusher(opts.key || P.key, options);
    const conn = this.pusher.connection;
    conn.bind('state_change', (s) => this.record({ t: 'state', prev: s.previous, cur: s.current }));
    conn.bind('message', (m) => {
      const rec = { t: 'msg', event: m.event, channel: m.channel, data: m.data };
      if (m.user_id !== undefined) rec.user_id = m.user_id;
      this.record(rec);
    });
    conn.bind('error', (e) => this.record({ t: 'conn_error', error: e && (e.error || e) }));
  }

  record(rec) {
    rec.c = this.name;
    this.seen.push(rec);
    out(rec);
    this.waiters = this.waiters.filter((w) => !(w.pred(rec) && (w.resolve(rec), true)));
  }

  /** Resolve with the first recorded item (past or future) matching pred; fail after ms. */
  waitFor(pred, label, ms = WAIT_MS) {
    const hit = this.seen.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve) => {
      const timer = setTimeout(() => fail(`${this.name}: timed out waiting for ${label}`), ms);
      this.waiters.push({ pred, resolve: (r) => { clearTimeout(timer); resolve(r); } });
    });
  }

  /** Wait for the next matching item recorded from now on (ignores the past). */
  next(pred, label, ms = WAIT_MS) {
    const start = this.seen.length;
    return this.waitFor((r) => this.seen.indexOf(r) >= start && pred(r), label, ms);
  }

  state(cur) {
    return this.waitFor((r) => r.t === 'state' && r.cur === cur, `state ${cur}`);
  }

  msg(event, channel) {
    return this.waitFor(
      (r) => r.t === 'msg' && r.event === event && (channel === undefined || r.channel === channel),
      `${event} on ${channel}`,
    );
  }

  count(event, channel) {
    return this.seen.filter((r) => r.t === 'msg' && r.event === event && r.channel === channel).length;
  }

  async connected() {
    await this.state('connected');
    return this.pusher.connection.socket_id;
  }

  /** Subscribe and wait for pusher:subscription_succeeded (or fail on subscription_error). */
  async subscribe(channel) {
    const ch = this.pusher.subscribe(channel);
    const r = await this.waitFor(
      (x) => x.t === 'msg' && x.channel === channel &&
        (x.event === 'pusher_internal:subscription_succeeded' || x.event === 'pusher:subscription_error'),
      `subscription to ${channel}`,
    );
    if (r.event !== 'pusher_internal:subscription_succeeded') fail(`${this.name}: ${channel}: ${JSON.stringify(r.data)}`);
    // pusher-js sets `subscribed` in the same tick as it handles the message
    await new Promise((res) => setImmediate(res));
    return ch;
  }

  disconnect() {
    this.pusher.disconnect();
  }
}

// ---------------------------------------------------------------- scenarios

const scenarios = {
  /** Connect, report the socket id, subscribe to a public channel. */
  async connect_public() {
    const a = new Client('a');
    const sid = await a.connected();
    out({ t: 'check', name: 'socket_id', socket_id: sid });
    const ch = await a.subscribe('news');
    out({ t: 'check', name: 'subscribed', subscribed: ch.subscribed });
    a.disconnect();
  },

  /** Private channel: both subscribe (auth via customHandler); a client event reaches b only. */
  async private_client_event() {
    const a = new Client('a');
    const b = new Client('b');
    await Promise.all([a.connected(), b.connected()]);
    const cha = await a.subscribe('private-room');
    await b.subscribe('private-room');
    const triggered = cha.trigger('client-hello', { text: 'hi b' });
    out({ t: 'check', name: 'triggered', ok: triggered });
    await b.msg('client-hello', 'private-room');
    // a's own event must not come back: a round trip on a's connection after it proves it.
    await b.subscribe('private-back');
    await a.subscribe('private-back');
    b.pusher.channel('private-back').trigger('client-back', { n: 1 });
    await a.msg('client-back', 'private-back');
    out({ t: 'check', name: 'echo', a_got_hello: a.count('client-hello', 'private-room') });
    a.disconnect();
    b.disconnect();
  },

  /** A signature the server refuses: pusher-js reports the server's subscription_error on the channel. */
  async bad_auth() {
    const wrong = new PusherServer({ appId: P.appId, key: P.key, secret: 'not-the-secret', host: '127.0.0.1' });
    const a = new Client('a', {
      pusherOptions: {
        channelAuthorization: {
          customHandler: ({ socketId, channelName }, cb) => cb(null, wrong.authorizeChannel(socketId, channelName)),
        },
      },
    });
    await a.connected();
    const ch = a.pusher.subscribe('private-locked');
    const errors = [];
    ch.bind('pusher:subscription_error', (e) => errors.push(e));
    await a.msg('pusher:subscription_error', 'private-locked');
    await a.subscribe('open-after'); // still connected and served
    out({ t: 'check', name: 'refused', errors, subscribed: ch.subscribed, state: a.pusher.connection.state });
    a.disconnect();
  },

  /** Client event on a public channel: pusher:error 4301 and the connection stays up. */
  async public_client_event() {
    const a = new Client('a');
    await a.connected();
    const ch = await a.subscribe('public-room');
    ch.trigger('client-nope', { x: 1 });
    const err = await a.msg('pusher:error');
    out({ t: 'check', name: 'error', data: err.data });
    // still connected and served: a new subscription works after the error
    await a.subscribe('private-after');
    out({ t: 'check', name: 'state', state: a.pusher.connection.state });
    a.disconnect();
  },

  /** Presence across tabs of one user, client events carrying user_id. */
  async presence_tabs() {
    const ch = 'presence-room';
    const b = new Client('b', { user: { user_id: 'u2', user_info: { name: 'Bea' } } });
    await b.connected();
    const chb = await b.subscribe(ch);
    out({ t: 'check', name: 'b_first', count: chb.members.count, me: chb.members.me });
    const a1 = new Client('a1', { user: { user_id: 'u1', user_info: { name: 'Al' } } });
    await a1.connected();
    const cha1 = await a1.subscribe(ch);
    await b.msg('pusher_internal:member_added', ch);
    out({ t: 'check', name: 'a1', count: cha1.members.count, me: cha1.members.me, ids: Object.keys(cha1.members.members).sort() });
    const a2 = new Client('a2', { user: { user_id: 'u1', user_info: { name: 'Al' } } });
    await a2.connected();
    const cha2 = await a2.subscribe(ch);
    out({ t: 'check', name: 'a2', count: cha2.members.count, me: cha2.members.me });
    // barrier: a2's client event reaches b after any member_added a2's join caused
    cha2.trigger('client-mark', { n: 1 });
    await b.waitFor((r) => r.event === 'client-mark' && r.data.n === 1, 'mark 1');
    await a1.waitFor((r) => r.event === 'client-mark' && r.data.n === 1, 'mark 1 at a1');
    out({ t: 'check', name: 'after_second_tab', added: b.count('pusher_internal:member_added', ch), count: chb.members.count });
    // first tab leaves; a subscribe after the unsubscribe on the same connection proves the server handled it
    a1.pusher.unsubscribe(ch);
    await a1.subscribe('private-sync');
    cha2.trigger('client-mark', { n: 2 });
    await b.waitFor((r) => r.event === 'client-mark' && r.data.n === 2, 'mark 2');
    out({ t: 'check', name: 'after_first_left', removed: b.count('pusher_internal:member_removed', ch), count: chb.members.count });
    // last tab closes
    a2.disconnect();
    await b.msg('pusher_internal:member_removed', ch);
    out({ t: 'check', name: 'after_last_left', removed: b.count('pusher_internal:member_removed', ch), count: chb.members.count, ids: Object.keys(chb.members.members) });
    a1.disconnect();
    b.disconnect();
  },

  /** Signin and watchlist: w watches u1 and u9; u1 signs in then leaves. */
  async signin_watchlist() {
    const w = new Client('w', { userData: { id: 'watcher', watchlist: ['u1', 'u9'] } });
    const online = [];
    const offline = [];
    w.pusher.user.watchlist.bind('online', (e) => online.push(e.user_ids));
    w.pusher.user.watchlist.bind('offline', (e) => offline.push(e.user_ids));
    w.pusher.signin();
    await w.msg('pusher:signin_success');
    await w.msg('pusher_internal:watchlist_events');
    await w.msg('pusher_internal:subscription_succeeded', '#server-to-user-watcher');
    out({ t: 'check', name: 'signed_in', user_data: w.pusher.user.user_data, online: online.slice(), offline: offline.slice() });
    const u = new Client('u', { userData: { id: 'u1', user_info: { name: 'Al' } } });
    u.pusher.signin();
    await u.msg('pusher:signin_success');
    await w.waitFor((r) => r.event === 'pusher_internal:watchlist_events' && r.data.events.some((e) => e.name === 'online' && e.user_ids.includes('u1')), 'u1 online');
    u.disconnect();
    await w.next((r) => r.event === 'pusher_internal:watchlist_events' && r.data.events.some((e) => e.name === 'offline' && e.user_ids.includes('u1')), 'u1 offline');
    out({ t: 'check', name: 'events', online, offline });
    w.disconnect();
  },

  /** Subscription counts (tests/test_cluster_counts.py): a on P.port, b and c on P.port2 (another
   *  node of the cluster); every client's channel.subscriptionCount follows the cluster's count. */
  async subscription_count_cluster() {
    const a = new Client('a');
    const b = new Client('b', { port: P.port2 });
    const c = new Client('c', { port: P.port2 });
    const counts = { a: [], b: [], c: [] };
    const reached = (client, n) => client.waitFor(
      (r) => r.t === 'msg' && r.event === 'pusher_internal:subscription_count' && r.seenCount === n,
      `${client.name}: subscription count ${n}`,
    );
    const follow = (client, ch) => ch.bind('pusher:subscription_count', (e) => {
      counts[client.name].push(e.subscription_count);
      client.record({ t: 'msg', event: 'pusher_internal:subscription_count', seenCount: ch.subscriptionCount });
    });
    const join = async (client) => { // bound before the count can arrive
      follow(client, client.pusher.subscribe('counted'));
      await client.msg('pusher_internal:subscription_succeeded', 'counted');
    };
    await join(a);
    await reached(a, 1);
    await join(b);
    await Promise.all([reached(a, 2), reached(b, 2)]);
    await join(c);
    await Promise.all([reached(a, 3), reached(b, 3), reached(c, 3)]);
    c.disconnect();
    await Promise.all([a.next((r) => r.seenCount === 2, 'a: back to 2'), b.next((r) => r.seenCount === 2, 'b: back to 2')]);
    out({ t: 'check', name: 'counts', ...counts });
    a.disconnect();
    b.disconnect();
  },

  /** Cache channels with nothing cached: pusher:cache_miss right after subscription_succeeded. */
  async cache_miss() {
    const a = new Client('a');
    await a.connected();
    const misses = [];
    a.pusher.subscribe('cache-empty').bind('pusher:cache_miss', () => misses.push(1));
    await a.msg('pusher:cache_miss', 'cache-empty');
    await a.subscribe('private-cache-empty');
    await a.msg('pusher:cache_miss', 'private-cache-empty');
    out({ t: 'check', name: 'miss', bound: misses.length });
    a.disconnect();
  },

  /** Cache channel: cache_miss when empty; after an HTTP trigger a new subscriber gets the last event. */
  async cache_channel() {
    const a = new Client('a');
    await a.connected();
    const misses = [];
    const ch = a.pusher.subscribe('cache-prices');
    ch.bind('pusher:cache_miss', () => misses.push(1));
    await a.msg('pusher:cache_miss', 'cache-prices');
    out({ t: 'check', name: 'miss', bound: misses.length });
    await ready('trigger');
    await a.msg('price', 'cache-prices');
    const b = new Client('b');
    await b.connected();
    await b.subscribe('cache-prices');
    const got = await b.msg('price', 'cache-prices');
    out({ t: 'check', name: 'late', data: got.data, misses: b.count('pusher:cache_miss', 'cache-prices') });
    a.disconnect();
    b.disconnect();
  },

  /** Server events (HTTP API) reach public and private subscribers and a signed-in user. */
  async server_event() {
    const a = new Client('a', { userData: { id: 'u5' } });
    const userEvents = [];
    a.pusher.user.bind('greet', (d) => userEvents.push(d));
    a.pusher.signin();
    await a.connected();
    await a.subscribe('news');
    await a.subscribe('private-news');
    await a.msg('pusher_internal:subscription_succeeded', '#server-to-user-u5');
    await ready('trigger');
    const pub = await a.msg('update', 'news');
    const priv = await a.msg('update', 'private-news');
    await a.msg('greet', '#server-to-user-u5');
    out({ t: 'check', name: 'got', pub: pub.data, priv: priv.data, user: userEvents });
    a.disconnect();
  },

  /** The app terminates a user's connections: 4009 and pusher-js gives up. */
  async terminate() {
    const a = new Client('a', { userData: { id: 'u6' } });
    a.pusher.signin();
    await a.msg('pusher:signin_success');
    const mark = a.seen.length;
    await ready('terminate');
    const err = await a.waitFor((r) => a.seen.indexOf(r) >= mark && r.t === 'msg' && r.event === 'pusher:error', 'pusher:error 4009');
    await a.waitFor((r) => r.t === 'state' && r.cur === 'disconnected', 'disconnected');
    out({ t: 'check', name: 'terminated', data: err.data, states: a.seen.filter((r) => r.t === 'state').map((r) => r.cur) });
  },

  /** private-encrypted: the event triggered with the master key is decrypted by pusher-js. */
  async encrypted() {
    const a = new Client('a');
    await a.connected();
    const ch = await a.subscribe('private-encrypted-secret');
    const got = new Promise((resolve) => ch.bind('secret-event', resolve));
    const errors = [];
    ch.bind('pusher:decryption_error', (e) => errors.push(e));
    await ready('trigger');
    const data = await Promise.race([
      got,
      new Promise((resolve) => setTimeout(() => fail('no decrypted event'), WAIT_MS)),
    ]);
    const raw = await a.msg('secret-event', 'private-encrypted-secret');
    out({ t: 'check', name: 'decrypted', data, raw: raw.data, errors });
    a.disconnect();
  },

  /** Unknown app key: 4001, pusher-js gives up (disconnected, never connecting again). */
  async unknown_key() {
    const a = new Client('a', { key: 'no-such-key' });
    // during the handshake pusher-js reports pusher:error as a connection error, not a message
    const err = await a.waitFor((r) => r.t === 'conn_error', 'connection error');
    await a.state('disconnected');
    out({ t: 'check', name: 'refused', data: err.error.data, state: a.pusher.connection.state });
    // give pusher-js the chance to misbehave: one more turn of its timers at delay 0
    await new Promise((res) => setTimeout(res, 50));
    out({ t: 'check', name: 'states', states: a.seen.filter((r) => r.t === 'state').map((r) => r.cur) });
  },

  /** Server restart: the test sends SIGTERM (4200) and starts a server again on the same port. */
  async restart() {
    const a = new Client('a', { userData: { id: 'u7' } });
    a.pusher.signin();
    const first = await a.connected();
    await a.subscribe('news');
    await a.msg('pusher_internal:subscription_succeeded', '#server-to-user-u7');
    const mark = a.seen.length;
    const after = (pred) => (r) => a.seen.indexOf(r) >= mark && pred(r);
    await ready('restart');
    const err = await a.waitFor(after((r) => r.t === 'msg' && r.event === 'pusher:error'), 'pusher:error 4200', 15000);
    const st = await a.waitFor(after((r) => r.t === 'state' && r.cur !== 'connected'), 'leaving connected', 15000);
    out({ t: 'check', name: 'closed', data: err.data, state: st.cur });
    const back = await a.waitFor(after((r) => r.t === 'state' && r.cur === 'connected'), 'connected again', 15000);
    await a.waitFor(
      (r) => r.t === 'msg' && r.event === 'pusher_internal:subscription_succeeded' && r.channel === 'news' &&
        a.seen.indexOf(r) > a.seen.indexOf(back), 'resubscribed', 15000);
    // pusher-js signs in again and subscribes to the user's own channel again
    const later = (pred) => after((r) => a.seen.indexOf(r) > a.seen.indexOf(back) && pred(r));
    await a.waitFor(later((r) => r.t === 'msg' && r.event === 'pusher:signin_success'), 'signed in again', 15000);
    await a.waitFor(later((r) => r.t === 'msg' && r.event === 'pusher_internal:subscription_succeeded' &&
      r.channel === '#server-to-user-u7'), 'user channel again', 15000);
    out({ t: 'check', name: 'reconnected', first, second: a.pusher.connection.socket_id, states: a.seen.filter((r) => r.t === 'state').map((r) => r.cur) });
    a.disconnect();
  },
};

async function main() {
  const fn = scenarios[scenarioName];
  if (!fn) fail(`unknown scenario ${scenarioName}`);
  const overall = setTimeout(() => fail('scenario timed out'), P.totalMs || 30000);
  try {
    await fn();
  } catch (e) {
    fail(e && e.stack ? e.stack : e);
  }
  clearTimeout(overall);
  out({ t: 'done' });
  process.exit(0);
}

main();
