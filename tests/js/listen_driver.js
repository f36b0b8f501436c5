#!/usr/bin/env node
// One pusher-js client that subscribes, optionally sends client events, and reports
// what it receives; for the in-process tests (tests/test_hooks.py, tests/test_encryption.py).
//
//   node listen_driver.js '{"port":7001,"key":"..","secret":"..","appId":"..",
//                           "channels":["news","private-encrypted-x"],
//                           "clientEvents":[{"channel":"private-a","event":"client-x","data":{}}],
//                           "masterKey":"<base64>", "until":"done", "totalMs":20000,
//                           "user":{"user_id":"u1","user_info":{}}, "userData":{"id":"u1"}}'
//
// Prints JSON lines on stdout:
//   {"t":"subscribed","channel":..}        after pusher:subscription_succeeded on each channel
//   {"t":"sub_error","channel":..,"status":..}  (a failure unless "allowErrors" is set)
//   {"t":"ready"}                          every channel subscribed and client events sent
//   {"t":"event","channel":..,"event":..,"data":..}  every non-internal event (decrypted by pusher-js)
//   {"t":"done"} when the event named `until` arrives (exit 0), or {"t":"fail","reason":..} (exit 1).
// Channel authorization is signed in-process by the Node `pusher` SDK; with masterKey set
// its authorizeChannel adds the shared_secret pusher-js decrypts encrypted channels with.
// "user" is the member data for presence channels; with "userData" the client signs in.
// With "authEndpoint" (and "authHeaders") pusher-js asks that HTTP endpoint instead, as a
// browser app does.
'use strict';

const Pusher = require('pusher-js');
const PusherServer = require('pusher');

const P = JSON.parse(process.argv[2] || '{}');
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (reason) => { out({ t: 'fail', reason: String(reason) }); process.exit(1); };
setTimeout(() => fail('timed out'), P.totalMs || 20000);

const sdk = new PusherServer({
  appId: P.appId, key: P.key, secret: P.secret, host: '127.0.0.1', port: String(P.port), useTLS: false,
  encryptionMasterKeyBase64: P.masterKey || undefined,
});

const options = {
  wsHost: '127.0.0.1', wsPort: P.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
  cluster: 'x',
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, cb) => {
      try {
        const presence = channelName.startsWith('presence-') ? P.user : undefined;
        cb(null, sdk.authorizeChannel(socketId, channelName, presence));
      } catch (e) {
        cb(e, null);
      }
    },
  },
  userAuthentication: {
    customHandler: ({ socketId }, cb) => {
      try {
        cb(null, sdk.authenticateUser(socketId, P.userData));
      } catch (e) {
        cb(e, null);
      }
    },
  },
};
if (P.authEndpoint) {
  options.channelAuthorization = { endpoint: P.authEndpoint, transport: 'ajax', headers: P.authHeaders || {} };
}
const client = new Pusher(P.key, options);
if (P.userData) client.signin();

const channels = P.channels || [];
let pending = channels.length;

function allSubscribed() {
  for (const ce of P.clientEvents || []) {
    if (!client.channel(ce.channel).trigger(ce.event, ce.data)) fail(`client event ${ce.event} not sent`);
  }
  out({ t: 'ready' });
}

for (const name of channels) {
  const ch = client.subscribe(name);
  ch.bind('pusher:subscription_succeeded', () => {
    out({ t: 'subscribed', channel: name });
    if (--pending === 0) allSubscribed();
  });
  ch.bind('pusher:subscription_error', (e) => {
    out({ t: 'sub_error', channel: name, status: e && e.status });
    if (!P.allowErrors) fail(`subscription to ${name} failed`);
    if (--pending === 0) allSubscribed();
  });
  ch.bind_global((event, data) => {
    if (event.startsWith('pusher:') || event.startsWith('pusher_internal:')) return;
    out({ t: 'event', channel: name, event, data });
    if (P.until && event === P.until) {
      out({ t: 'done' });
      client.disconnect();
      process.exit(0);
    }
  });
}
if (pending === 0) allSubscribed();
