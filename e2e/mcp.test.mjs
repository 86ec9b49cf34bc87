// End-to-end: the official MCP TypeScript SDK (@modelcontextprotocol/sdk)
// connects to a real c360 server (../bin/c360 serve) on TEST_DATABASE_URL
// over Streamable HTTP at /mcp, with an assistant key: it lists the tools,
// calls lookup_customer and get_customer_context, and gets personal data
// masked, as the key's role requires.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { bin, startServer, createWorkspace } from './harness.js'

const jane = { email: 'jane.mcp@example.com', phone: '+14155550142', name: 'Jane Mcp' }
const masked = { email: 'j***@example.com', phone: '+1******0142', name: 'J***' }

let server
let base
let admin
let assistantKey
let customerId

async function graphql(key, query, variables) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  })
  const body = await res.json()
  assert.equal(body.errors, undefined, `${JSON.stringify(body.errors)}\nserver log:\n${server.log()}`)
  return body.data
}

before(async () => {
  server = await startServer()
  base = server.base
  const env = server.env
  const { slug, apiKey } = createWorkspace(env, { prefix: 'e2e-mcp-' })
  admin = apiKey
  assistantKey = JSON.parse(execFileSync(bin, ['apikey', 'create', '--workspace', slug, '--role', 'assistant', '--json'], { env }).toString()).apiKey
  const data = await graphql(admin, `mutation($input: IdentifyInput!) { identify(input: $input) { id } }`, {
    input: {
      identities: [{ type: 'email', value: jane.email }, { type: 'phone', value: jane.phone }],
      traits: { name: jane.name, plan: 'pro' },
      messageId: `e2e-mcp-${slug}`,
    },
  })
  customerId = data.identify.id
})

after(async () => {
  await server?.stop()
})

async function connect(key) {
  const client = new Client({ name: 'c360-e2e', version: '1.0.0' })
  const headers = key ? { Authorization: `Bearer ${key}` } : {}
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers } })
  await client.connect(transport)
  return client
}

// result returns a tool result's JSON text content, decoded, and checks it
// matches the structured content.
function result(res) {
  assert.equal(res.isError ?? false, false, JSON.stringify(res))
  const text = res.content.find((c) => c.type === 'text')
  assert.ok(text, `no text content: ${JSON.stringify(res)}`)
  const value = JSON.parse(text.text)
  assert.deepEqual(res.structuredContent, value)
  return { value, raw: text.text }
}

function assertMasked(raw) {
  for (const k of Object.keys(jane)) {
    assert.ok(!raw.includes(jane[k]), `assistant read ${k} unmasked: ${raw}`)
  }
}

test('an assistant lists the tools and reads masked data over /mcp', async () => {
  const client = await connect(assistantKey)
  try {
    const { tools } = await client.listTools()
    const names = tools.map((t) => t.name).sort()
    assert.deepEqual(names, ['get_customer_context', 'list_recent_messages', 'lookup_customer',
      'record_observation', 'search_customers', 'send_message'])
    for (const t of tools) {
      assert.ok(t.description.length > 40, `${t.name} has no real description`)
      assert.equal(t.inputSchema.type, 'object')
    }
    const lookup = tools.find((t) => t.name === 'lookup_customer')
    assert.deepEqual(lookup.inputSchema.required.sort(), ['type', 'value'])

    // lookup_customer by phone, in a national format.
    const found = result(await client.callTool({ name: 'lookup_customer', arguments: { type: 'phone', value: '(415) 555-0142' } }))
    assert.equal(found.value.customer.id, customerId)
    const values = found.value.customer.identities.map((i) => i.value).sort()
    assert.deepEqual(values, [masked.phone, masked.email].sort())
    assert.equal(found.value.customer.traits.name, masked.name)
    assertMasked(found.raw)

    // get_customer_context by email: the structured parts and the text block.
    const ctx = result(await client.callTool({ name: 'get_customer_context', arguments: { type: 'email', value: jane.email, budget: 800 } }))
    const c = ctx.value.context
    assert.equal(c.customerId, customerId)
    assert.ok(c.text.length <= 800, `text longer than the budget: ${c.text.length}`)
    assert.match(c.text, new RegExp(`Customer ${customerId} `))
    assert.ok(c.text.includes(masked.email) && c.text.includes(masked.phone), c.text)
    assertMasked(ctx.raw)

    // The assistant may not send messages: the tool answers FORBIDDEN.
    const refused = await client.callTool({ name: 'send_message', arguments: { customerId, channel: 'sms', body: 'hi' } })
    assert.equal(refused.isError, true)
    assert.match(refused.content[0].text, /FORBIDDEN/)
  } finally {
    await client.close()
  }
})

test('an admin key reads the same tools unmasked', async () => {
  const client = await connect(admin)
  try {
    const found = result(await client.callTool({ name: 'lookup_customer', arguments: { type: 'email', value: jane.email } }))
    assert.ok(found.raw.includes(jane.email) && found.raw.includes(jane.phone), found.raw)
  } finally {
    await client.close()
  }
})

test('/mcp refuses a client without a valid key', async () => {
  await assert.rejects(connect(''))
  await assert.rejects(connect('c360_000000000000_nope'))
  const res = await fetch(`${base}/mcp`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  })
  assert.equal(res.status, 401)
  assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/)
})
