// End-to-end: the reference GraphQL-over-WebSocket client (`graphql-ws` from
// npm, on the `ws` package) against a real c360 server (../bin/c360 serve) on
// TEST_DATABASE_URL: live changes, resume by cursor, and every close code of
// the graphql-transport-ws protocol the server owes, as that client sees it.
// Misbehaviour the client never shows by itself (a subscribe before
// connection_init, a second connection_init) is injected under it by a
// WebSocket subclass, so the client still reads the server's answer.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import WebSocket from 'ws'
import { createClient } from 'graphql-ws'
import { sleep, startServer, createWorkspace } from './harness.js'

const allowedOrigin = 'https://console.example.test'

let server
let base
let wsURL
let creds

before(async () => {
  server = await startServer({
    env: {
      C360_WS_INIT_TIMEOUT: '500ms',
      C360_SUBSCRIBER_QUEUE: '2',
      C360_ALLOWED_ORIGINS: allowedOrigin,
    },
    healthPath: '/readyz',
  })
  base = server.base
  wsURL = `ws://127.0.0.1:${server.port}/graphql`
  creds = createWorkspace(server.env, { prefix: 'e2e-rt-' })
})

after(async () => {
  await server?.stop()
})

async function identify(email, traits) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${creds.apiKey}` },
    body: JSON.stringify({
      query: 'mutation ($i: IdentifyInput!) { identify(input: $i) { id version } }',
      variables: { i: { identities: [{ type: 'email', value: email }], traits } },
    }),
  })
  const body = await res.json()
  assert.equal(body.errors, undefined, `${JSON.stringify(body.errors)}\nserver log:\n${server.log()}`)
  return body.data.identify
}

const changed = `subscription ($id: ID!, $after: String) {
  customerChanged(id: $id, after: $after) { cursor kind version customerId }
}`

function client(opts = {}) {
  return createClient({
    url: wsURL,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${creds.apiKey}` },
    retryAttempts: 0,
    lazy: true,
    ...opts,
  })
}

// closeCode subscribes and resolves with the close code the client reports.
function closeCode(c, query = 'subscription { customerChanges { version } }') {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no close within 10s\n${server.log()}`)), 10000)
    c.subscribe({ query }, {
      next: () => {},
      error: (e) => { clearTimeout(timer); resolve(e?.code ?? e) },
      complete: () => { clearTimeout(timer); resolve('complete') },
    })
  })
}

test('live changes, then resume by cursor with no gap and no duplicate', async () => {
  const email = `live-${randomBytes(4).toString('hex')}@example.com`
  const { id } = await identify(email, { n: 0 })
  const got = []
  const c1 = client()
  const done1 = new Promise((resolve, reject) => {
    c1.subscribe({ query: changed, variables: { id } }, {
      next: ({ data, errors }) => { if (errors) reject(new Error(JSON.stringify(errors))); got.push(data.customerChanged) },
      error: reject,
      complete: resolve,
    })
  })
  // The subscription is live once a change written after it arrives.
  for (let i = 1; got.length === 0; i++) {
    assert.ok(i < 50, 'no change arrived')
    await identify(email, { warm: i })
    await sleep(100)
  }
  for (let i = 0; i < 3; i++) await identify(email, { n: i })
  while (got.at(-1).version < got[0].version + 3) await sleep(20)
  await c1.dispose()
  await done1.catch(() => {})
  for (let i = 1; i < got.length; i++) assert.equal(got[i].version, got[i - 1].version + 1)
  assert.ok(got.every((ch) => ch.customerId === id && ch.cursor))

  // Missed while away, then resumed from the last cursor.
  const last = got.at(-1)
  for (let i = 0; i < 3; i++) await identify(email, { away: i })
  const resumed = []
  const c2 = client()
  await new Promise((resolve, reject) => {
    c2.subscribe({ query: changed, variables: { id, after: last.cursor } }, {
      next: ({ data }) => { resumed.push(data.customerChanged); if (resumed.length === 3) resolve() },
      error: reject,
      complete: resolve,
    })
  })
  await c2.dispose()
  assert.deepEqual(resumed.map((ch) => ch.version), [last.version + 1, last.version + 2, last.version + 3])
})

test('a subscriber too slow to keep up is closed with 1013 and resumes by cursor', async () => {
  const email = `slow-${randomBytes(4).toString('hex')}@example.com`
  const { id, version } = await identify(email, {})
  const sockets = []
  class Tracked extends WebSocket {
    constructor(...args) { super(...args); sockets.push(this) }
  }
  const closes = []
  const versions = []
  // The payload object is sent again on every reconnect: keeping `after` at
  // the last cursor makes the client's own retry resume without a gap.
  const payload = {
    query: `subscription ($id: ID!, $after: String) { customerChanged(id: $id, after: $after) { cursor version diff } }`,
    variables: { id, after: null },
  }
  const c = client({
    webSocketImpl: Tracked,
    retryAttempts: 5,
    retryWait: () => sleep(200),
    on: { closed: (e) => closes.push(e.code) },
  })
  const writes = 40
  let last = Infinity // the version that ends the test, known once live
  const finished = new Promise((resolve, reject) => {
    c.subscribe(payload, {
      next: ({ data, errors }) => {
        if (errors) return reject(new Error(JSON.stringify(errors)))
        const ch = data.customerChanged
        if (versions.length) assert.equal(ch.version, versions.at(-1) + 1, 'gap or duplicate')
        versions.push(ch.version)
        payload.variables.after = ch.cursor
        if (ch.version >= last) resolve()
      },
      error: reject,
      complete: () => reject(new Error('completed early')),
    })
  })
  // Live: a change arrives. The client subscribes lazily and a subscription
  // without a cursor starts at the customer's version when the server
  // registers it, so write until one arrives rather than assume the
  // subscription is already in place.
  for (let i = 0; versions.length === 0; i++) {
    assert.ok(i < 100, 'no live change arrived within 10 s')
    await identify(email, { first: i })
    for (let j = 0; j < 5 && versions.length === 0; j++) await sleep(20)
  }
  const base = versions[0]
  assert.ok(base > version, `first live version ${base}, want one after ${version}`)
  // Stop reading while large changes pile up on the server.
  sockets[0].pause()
  const blob = 'x'.repeat(256 << 10)
  const before = await identify(email, { blob: `0${blob}` })
  last = before.version + writes - 1
  for (let i = 1; i < writes; i++) await identify(email, { blob: `${i}${blob}` })
  // A subscriber is let fall behind for the hub's catch-up time (2 s): a
  // burst is not slowness. Still full after it, it is dropped with 1013.
  await sleep(3000)
  sockets[0].resume()
  await finished
  await c.dispose()
  assert.ok(closes.includes(1013), `close codes ${closes}, want 1013 (try again later)`)
  assert.equal(versions.at(-1), last)
  // Every version from the first live one to the last arrived, in order.
  assert.equal(versions.length, last - base + 1)
})

test('4403: a bad API key in connection_init', async () => {
  const c = client({ connectionParams: { authorization: 'Bearer c360_not_a_key' } })
  assert.equal(await closeCode(c), 4403)
  await c.dispose()
})

// docs/realtime.md's browser example: graphql-ws retries 4403 (it ends a
// subscription by itself on 4400, 4401, 4406, 4409, 4429 and 4500 only), so
// shouldRetry: () => true would reconnect a bad key forever; the example's
// shouldRetry gives up on the codes a reconnect does not cure.
const docsFatal = new Set([4400, 4401, 4403, 4406, 4409, 4429, 4500])

test('4403: the browser example of docs/realtime.md ends a bad key once, without retrying', async () => {
  let opened = 0
  class Counting extends WebSocket {
    constructor(...args) { super(...args); opened++ }
  }
  const c = client({
    webSocketImpl: Counting,
    connectionParams: { authorization: 'Bearer c360_not_a_key' },
    retryAttempts: Infinity,
    retryWait: () => sleep(50),
    shouldRetry: (closeOrError) => !docsFatal.has(closeOrError?.code),
  })
  try {
    assert.equal(await closeCode(c), 4403)
    assert.equal(opened, 1, 'the client reconnected a bad key')
  } finally {
    await c.dispose()
  }

  // And why the example needs it: with shouldRetry: () => true the client
  // reconnects, and the subscription's error handler is never called.
  let reopened = 0
  let ended
  class CountingAgain extends WebSocket {
    constructor(...args) { super(...args); reopened++ }
  }
  const r = client({
    webSocketImpl: CountingAgain,
    connectionParams: { authorization: 'Bearer c360_not_a_key' },
    retryAttempts: Infinity,
    retryWait: () => sleep(50),
    shouldRetry: () => true,
  })
  r.subscribe({ query: 'subscription { customerChanges { version } }' }, {
    next: () => {},
    error: (e) => { ended = e?.code ?? e },
    complete: () => { ended = 'complete' },
  })
  try {
    for (let i = 0; i < 100 && reopened < 3; i++) await sleep(50)
    assert.ok(reopened >= 3, `connections opened: ${reopened}, want a retry loop`)
    assert.equal(ended, undefined)
  } finally {
    // dispose rethrows the close of the connection being retried.
    await r.dispose().catch(() => {})
  }
})

test('4403: no authorization in connection_init', async () => {
  const c = client({ connectionParams: {} })
  assert.equal(await closeCode(c), 4403)
  await c.dispose()
})

test('4408: no connection_init within the init timeout', async () => {
  const c = client({
    connectionParams: async () => { await sleep(1500); return { authorization: `Bearer ${creds.apiKey}` } },
  })
  assert.equal(await closeCode(c), 4408)
  await c.dispose()
})

test('4409: a subscribe with the id of an active subscription', async () => {
  const c = client({ generateID: () => 'same-id' })
  c.subscribe({ query: 'subscription { customerChanges { version } }' }, { next() {}, error() {}, complete() {} })
  assert.equal(await closeCode(c), 4409)
  await c.dispose()
})

// injecting returns a WebSocket class that adds frames before or after the
// client's connection_init.
function injecting(extra) {
  return class extends WebSocket {
    send(data) {
      const m = JSON.parse(data)
      if (m.type === 'connection_init') {
        for (const f of extra.before ?? []) super.send(JSON.stringify(f))
        super.send(data)
        for (const f of extra.after ?? []) super.send(JSON.stringify(f))
        return
      }
      super.send(data)
    }
  }
}

test('4401: a subscribe before connection_init', async () => {
  const c = client({
    webSocketImpl: injecting({ before: [{ id: 'early', type: 'subscribe', payload: { query: 'subscription { customerChanges { version } }' } }] }),
  })
  assert.equal(await closeCode(c), 4401)
  await c.dispose()
})

test('4429: a second connection_init', async () => {
  const c = client({
    webSocketImpl: injecting({ after: [{ type: 'connection_init', payload: { authorization: `Bearer ${creds.apiKey}` } }] }),
  })
  assert.equal(await closeCode(c), 4429)
  await c.dispose()
})

test('4400: a message that is not of the protocol', async () => {
  const c = client({ webSocketImpl: injecting({ after: [{ type: 'bogus' }] }) })
  assert.equal(await closeCode(c), 4400)
  await c.dispose()
})

test('4406: a subprotocol the server does not speak', async () => {
  // The server completes the handshake without a subprotocol and closes with
  // 4406, as the graphql-ws reference server does; browsers see that close.
  // The ws package aborts such a handshake itself ("Server sent no
  // subprotocol") before the close frame can arrive, so here the client can
  // only report the failed connection; the 4406 frame itself is asserted by
  // the Go suite (server/websocket_test.go).
  class Other extends WebSocket {
    constructor(url) { super(url, 'graphql-nonsense') }
  }
  const c = client({ webSocketImpl: Other })
  const code = await closeCode(c)
  await c.dispose()
  assert.ok(code === 4406 || code?.message === 'Server sent no subprotocol', `got ${code?.code ?? code}`)
})

test('origins outside C360_ALLOWED_ORIGINS are refused at the handshake', async () => {
  const status = (origin) => new Promise((resolve) => {
    const s = new WebSocket(wsURL, 'graphql-transport-ws', { headers: { Origin: origin } })
    s.on('unexpected-response', (_req, res) => { resolve(res.statusCode); s.terminate() })
    s.on('open', () => { resolve(101); s.close() })
    s.on('error', () => {})
  })
  assert.equal(await status('https://evil.example.test'), 403)
  assert.equal(await status(allowedOrigin), 101)
})
