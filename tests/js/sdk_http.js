// Drives the official Node `pusher` SDK against a server for tests/test_sdk_node.py.
//
// Usage: node sdk_http.js '<json>' where json is
//   {"host", "port", "appId", "key", "secret", "ops": [{"op": ..., ...}, ...]}
// Runs the ops in order and prints one JSON array of results on stdout:
//   {"status", "body"} for HTTP calls, the SDK's return value for signing calls,
//   {"error", "status", "body"} when a call fails.
"use strict"

const Pusher = require("pusher")

async function run(client, op) {
  switch (op.op) {
    case "trigger":
      return client.trigger(op.channels, op.event, op.data, op.params)
    case "triggerBatch":
      return client.triggerBatch(op.batch)
    case "get":
      return client.get({ path: op.path, params: op.params || {} })
    case "sendToUser":
      return client.sendToUser(op.userId, op.event, op.data)
    case "terminateUserConnections":
      return client.terminateUserConnections(op.userId)
    case "authenticateUser":
      return { value: client.authenticateUser(op.socketId, op.userData) }
    case "authorizeChannel":
      return { value: client.authorizeChannel(op.socketId, op.channel, op.data) }
    default:
      throw new Error("unknown op " + op.op)
  }
}

async function main() {
  const cfg = JSON.parse(process.argv[2])
  const client = new Pusher({
    appId: cfg.appId,
    key: cfg.key,
    secret: cfg.secret,
    host: cfg.host,
    port: String(cfg.port),
    useTLS: false,
    timeout: 5000,
  })
  const results = []
  for (const op of cfg.ops) {
    try {
      const res = await run(client, op)
      if (res && typeof res.status === "number" && typeof res.text === "function") {
        const text = await res.text()
        results.push({ status: res.status, body: text ? JSON.parse(text) : null })
      } else {
        results.push(res)
      }
    } catch (err) {
      results.push({ error: String(err.message), status: err.status, body: err.body })
    }
  }
  process.stdout.write(JSON.stringify(results) + "\n")
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n")
  process.exit(1)
})
