// End-to-end: Segment's official Node SDK (@segment/analytics-node), pointed
// at a real c360 server (../bin/c360 serve) on TEST_DATABASE_URL, sends
// identify and track; GraphQL then shows them on the profile.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Analytics } from '@segment/analytics-node'
import { startServer, createWorkspace } from './harness.js'

let server
let base
let creds

before(async () => {
  // serve applies the migrations; the workspace is created once it is up.
  server = await startServer()
  base = server.base
  creds = createWorkspace(server.env)
  assert.match(creds.writeKey, /^c360_/)
})

after(async () => {
  await server?.stop()
})

async function graphql(query, variables) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${creds.apiKey}` },
    body: JSON.stringify({ query, variables }),
  })
  const body = await res.json()
  assert.equal(res.status, 200, JSON.stringify(body))
  assert.equal(body.errors, undefined, `${JSON.stringify(body.errors)}\nserver log:\n${server.log()}`)
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

  assert.deepEqual(failures, [], `delivery failed; server log:\n${server.log()}`)
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
