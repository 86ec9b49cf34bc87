// End-to-end: Segment's official Node SDK (@segment/analytics-node), pointed
// at a real c360 server (../bin/c360 serve) on TEST_DATABASE_URL, sends
// identify and track; GraphQL then shows them on the profile.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { Analytics } from '@segment/analytics-node'

const bin = fileURLToPath(new URL('../bin/c360', import.meta.url))
const databaseURL = process.env.TEST_DATABASE_URL

let server
let serverLog = ''
let base
let creds

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

async function waitHealthy(url, ms) {
  const deadline = Date.now() + ms
  for (;;) {
    if (server.exitCode !== null) {
      throw new Error(`c360 serve exited with ${server.exitCode}:\n${serverLog}`)
    }
    try {
      const res = await fetch(url)
      if (res.ok) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`c360 serve not healthy after ${ms} ms:\n${serverLog}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

before(async () => {
  assert.ok(databaseURL, 'TEST_DATABASE_URL is not set: run `make test`')
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  const env = { ...process.env, DATABASE_URL: databaseURL, C360_ADDR: `127.0.0.1:${port}` }
  // serve applies the migrations; the workspace is created once it is up.
  server = spawn(bin, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  server.stdout.on('data', (d) => { serverLog += d })
  server.stderr.on('data', (d) => { serverLog += d })
  await waitHealthy(`${base}/healthz`, 30000)
  const slug = `e2e-${randomBytes(6).toString('hex')}`
  const out = execFileSync(bin, ['workspace', 'create', '--slug', slug, '--json'], { env })
  creds = JSON.parse(out.toString())
  assert.match(creds.writeKey, /^c360_/)
})

after(async () => {
  if (!server || server.exitCode !== null) return
  const exited = new Promise((resolve) => server.once('exit', resolve))
  server.kill('SIGTERM')
  const timer = setTimeout(() => server.kill('SIGKILL'), 10000)
  await exited
  clearTimeout(timer)
})

async function graphql(query, variables) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${creds.apiKey}` },
    body: JSON.stringify({ query, variables }),
  })
  const body = await res.json()
  assert.equal(res.status, 200, JSON.stringify(body))
  assert.equal(body.errors, undefined, `${JSON.stringify(body.errors)}\nserver log:\n${serverLog}`)
  return body.data
}

test('analytics-node identify and track land on the profile', async () => {
  const userId = `e2e-user-${randomBytes(4).toString('hex')}`
  const analytics = new Analytics({
    writeKey: creds.writeKey,
    host: base,
    path: '/v1/batch',
    maxEventsInBatch: 10,
    flushInterval: 200,
    maxRetries: 1,
  })
  const failures = []
  const responses = []
  analytics.on('error', (err) => failures.push(err))
  analytics.on('http_response', (r) => responses.push(r))
  const delivered = (err) => { if (err) failures.push(err) }

  analytics.identify({ userId, traits: { name: 'Ada Lovelace', email: 'Ada@Example.com', plan: 'enterprise' } }, delivered)
  analytics.track({ userId, event: 'E2E Order Completed', properties: { revenue: 42.5, currency: 'EUR' } }, delivered)
  analytics.page({ userId, category: 'Docs', name: 'Pricing' }, delivered)
  await analytics.closeAndFlush({ timeout: 15000 })

  assert.deepEqual(failures, [], `delivery failed; server log:\n${serverLog}`)
  assert.ok(responses.length > 0, 'the SDK sent nothing')
  for (const r of responses) {
    assert.equal(r.status, 200, `answer ${r.status} from ${r.url}`)
    assert.match(r.url, /\/v1\/batch$/)
  }

  const data = await graphql(`query ($v: String!) {
    customerByIdentity(type: "user_id", value: $v) {
      traits
      identities { type value }
      events(first: 10) { edges { node { type name properties source } } }
    }
  }`, { v: userId })
  const c = data.customerByIdentity
  assert.ok(c, 'no customer for the identified user')
  assert.equal(c.traits.name, 'Ada Lovelace')
  assert.equal(c.traits.plan, 'enterprise')
  assert.ok(c.identities.some((i) => i.type === 'email' && i.value === 'ada@example.com'),
    `identities ${JSON.stringify(c.identities)} lack the email trait`)
  const events = c.events.edges.map((e) => e.node)
  const track = events.find((e) => e.type === 'track')
  assert.ok(track, `no track event in ${JSON.stringify(events)}`)
  assert.equal(track.name, 'E2E Order Completed')
  assert.equal(track.source, 'segment')
  assert.equal(track.properties.revenue, 42.5)
  assert.ok(events.some((e) => e.type === 'identify'), 'no identify event')
  const page = events.find((e) => e.type === 'page')
  assert.equal(page?.name, 'Pricing')
  assert.equal(page?.properties.category, 'Docs')
})

test('a wrong write key is refused with 401 and nothing is stored', async () => {
  const userId = `e2e-intruder-${randomBytes(4).toString('hex')}`
  const analytics = new Analytics({ writeKey: 'c360_abcdefabcdef_wrong', host: base, flushInterval: 100, maxRetries: 0 })
  const statuses = []
  analytics.on('http_response', (r) => statuses.push(r.status))
  let failed = null
  analytics.track({ userId, event: 'Should Not Land' }, (err) => { failed = err })
  await analytics.closeAndFlush({ timeout: 10000 })
  assert.deepEqual(statuses, [401])
  assert.ok(failed, 'the SDK reported success')
  const data = await graphql(`query ($v: String!) { customerByIdentity(type: "user_id", value: $v) { id } }`, { v: userId })
  assert.equal(data.customerByIdentity, null)
})
