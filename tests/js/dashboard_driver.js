#!/usr/bin/env node
// One pusher-js client for the dashboard's browser tests (tests/test_dashboard_browser.py).
//
//   node dashboard_driver.js '{"port":7001,"key":"..","secret":"..","appId":"..",
//                              "channels":["news","presence-room"], "user":{"user_id":"u1","user_info":{}},
//                              "clientEvent":{"channel":"private-x","event":"client-x","data":{}}, "totalMs":60000}'
//
// Prints JSON lines on stdout:
//   {"t":"connected","socket_id":..}
//   {"t":"subscribed","channel":..}   after pusher:subscription_succeeded
//   {"t":"ready"}                     every channel subscribed (and the client event sent)
//   {"t":"event","channel":..,"event":..,"data":..}   every non-internal event
//   {"t":"fail","reason":..}          (exit 1)
// A line "bye" on stdin disconnects and exits 0. Authorization is signed in-process
// by the Node `pusher` SDK.
'use strict';

const Pusher = require('pusher-js');
const PusherServer = require('pusher');
const readline = require('readline');

const P = JSON.parse(process.argv[2] || '{}');
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (reason) => { out({ t: 'fail', reason: String(reason) }); process.exit(1); };
setTimeout(() => fail('timed out'), P.totalMs || 60000);

const sdk = new PusherServer({ appId: P.appId, key: P.key, secret: P.secret, host: '127.0.0.1', port: String(P.port) });
const pusher = new Pusher(P.key, {
  wsHost: '127.0.0.1', wsPort: P.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'x',
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, cb) => {
      try {
        cb(null, sdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? P.user : undefined));
      } catch (e) {
        cb(e, null);
      }
    },
  },
});

pusher.connection.bind('connected', () => out({ t: 'connected', socket_id: pusher.connection.socket_id }));
pusher.connection.bind('message', (m) => {
  if (m.event === 'pusher_internal:subscription_succeeded') {
    out({ t: 'subscribed', channel: m.channel });
    subscribed.add(m.channel);
    if (subscribed.size === (P.channels || []).length) whenReady();
  } else if (m.event === 'pusher:subscription_error') {
    fail(`subscription to ${m.channel} refused: ${JSON.stringify(m.data)}`);
  } else if (m.channel && !m.event.startsWith('pusher')) {
    out({ t: 'event', channel: m.channel, event: m.event, data: m.data });
  }
});

const subscribed = new Set();
for (const name of P.channels || []) pusher.subscribe(name);

function whenReady() {
  const ce = P.clientEvent;
  if (ce) pusher.channel(ce.channel).trigger(ce.event, ce.data);
  out({ t: 'ready' });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'bye') {
    pusher.disconnect();
    // let the close frame go out before exiting
    setTimeout(() => process.exit(0), 100);
  }
});
