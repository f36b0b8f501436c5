#!/usr/bin/env node
// pusher-js over wss:// and the Node `pusher` SDK over https://, for tests/test_tls.py.
//
//   NODE_EXTRA_CA_CERTS=ca.pem node tls_driver.js '{"host":"localhost","port":7001,"key":"..","secret":"..","appId":".."}'
//
// The test's self-signed CA is trusted only through NODE_EXTRA_CA_CERTS, so every
// TLS handshake below verifies the server's certificate as in production.
// Steps, each waiting for an event with a timeout that fails the run:
//   1. pusher-js connects with forceTLS and subscribes to a private channel (signed
//      in-process with the SDK's authorizeChannel);
//   2. the SDK reads the channel over https (GET /apps/{id}/channels/{name});
//   3. the SDK triggers an event over https and pusher-js receives it;
//   4. a client event from a second pusher-js client reaches the first.
// Output: JSON lines {"t":"check",...} and {"t":"done"} (exit 0) or {"t":"fail","reason":..} (exit 1).
'use strict';

const Pusher = require('pusher-js');
const PusherServer = require('pusher');

const P = JSON.parse(process.argv[2] || '{}');
const WAIT_MS = P.waitMs || 10000;
const CHANNEL = 'private-tls';

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function fail(reason) { out({ t: 'fail', reason: String(reason) }); process.exit(1); }
setTimeout(() => fail('the whole run took over 30 s'), 30000).unref();

const sdk = new PusherServer({
  appId: P.appId, key: P.key, secret: P.secret, host: P.host, port: String(P.port), useTLS: true,
});

function client() {
  return new Pusher(P.key, {
    wsHost: P.host, wsPort: P.port, wssPort: P.port, forceTLS: true,
    enabledTransports: ['ws', 'wss'], disableStats: true, cluster: 'x',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)),
    },
  });
}

function within(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function subscribed(pusher) {
  return new Promise((resolve, reject) => {
    const channel = pusher.subscribe(CHANNEL);
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`)));
    pusher.connection.bind('error', (e) => reject(new Error(`connection error ${JSON.stringify(e && e.error)}`)));
  });
}

function next(channel, event) {
  return new Promise((resolve) => channel.bind(event, (data) => resolve(data)));
}

async function main() {
  const a = client();
  const chanA = await within('the first subscription', subscribed(a));
  const transport = a.connection.connection && a.connection.connection.transport;
  out({ t: 'check', name: 'connected', state: a.connection.state, socket_id: a.connection.socket_id,
        usingTLS: a.connection.usingTLS, url: (transport && transport.socket && transport.socket.url) || null });

  const info = await within('the channel read', sdk.get({ path: `/channels/${CHANNEL}`, params: { info: 'subscription_count' } }));
  out({ t: 'check', name: 'channel', status: info.status, body: await info.json() });

  const gotServer = next(chanA, 'from-sdk');
  const res = await within('the trigger', sdk.trigger(CHANNEL, 'from-sdk', { over: 'https' }));
  out({ t: 'check', name: 'trigger', status: res.status });
  out({ t: 'check', name: 'server-event', data: await within('the server event', gotServer) });

  const b = client();
  const chanB = await within('the second subscription', subscribed(b));
  const gotClient = next(chanA, 'client-hello');
  chanB.trigger('client-hello', { from: 'b' });
  out({ t: 'check', name: 'client-event', data: await within('the client event', gotClient) });

  a.disconnect();
  b.disconnect();
  out({ t: 'done' });
  process.exit(0);
}

main().catch(fail);
