// End-to-end: Twilio's own helper library (`twilio` from npm) signs webhooks
// exactly as Twilio does, and a real c360 server (../bin/c360 serve) accepts
// them; sendMessage reaches a stand-in for Twilio's REST API
// (C360_TWILIO_API_URL), whose status callback, signed by the library over
// the StatusCallback URL c360 asked for, moves the message forward. A console
// follows the messages over graphql-ws and resumes them by changeCursor.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import twilio from 'twilio'
import WebSocket from 'ws'
import { createClient } from 'graphql-ws'
import { bin, sleep, startServer, createWorkspace } from './harness.js'

// Behind a proxy, Twilio calls (and signs) the public URL, not c360's own address.
const publicURL = 'https://c360.example.test'
const accountSid = 'AC' + randomBytes(16).toString('hex')
const authToken = randomBytes(16).toString('hex')
const smsFrom = '+14155550199'

let server
let base
let creds
let slug
let fake
const twilioRequests = []

// The stand-in for api.twilio.com: records each Messages.json request and
// answers like Twilio does for a queued message.
function startFakeTwilio() {
  return new Promise((resolve) => {
    const srv = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => { body += d })
      req.on('end', () => {
        const auth = Buffer.from((req.headers.authorization || '').replace(/^Basic /, ''), 'base64').toString()
        const form = Object.fromEntries(new URLSearchParams(body))
        const sid = 'SM' + randomBytes(16).toString('hex')
        twilioRequests.push({ method: req.method, path: req.url, auth, form, sid })
        res.writeHead(201, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify({ sid, status: 'queued', account_sid: accountSid, to: form.To, from: form.From, body: form.Body }))
      })
    })
    srv.listen(0, '127.0.0.1', () => resolve(srv))
  })
}

before(async () => {
  fake = await startFakeTwilio()
  server = await startServer({
    env: {
      C360_PUBLIC_URL: publicURL,
      C360_TWILIO_API_URL: `http://127.0.0.1:${fake.address().port}`,
    },
  })
  base = server.base
  creds = createWorkspace(server.env, { prefix: 'e2e-tw-' })
  slug = creds.slug
  execFileSync(bin, ['workspace', 'update', '--slug', slug, '--twilio-account-sid', accountSid,
    '--twilio-auth-token', authToken, '--twilio-sms-from', smsFrom], { env: server.env })
})

after(async () => {
  fake?.close()
  await server?.stop()
})

async function graphql(query, variables) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${creds.apiKey}` },
    body: JSON.stringify({ query, variables }),
  })
  const body = await res.json()
  assert.equal(body.errors, undefined, JSON.stringify(body.errors))
  return body.data
}

// webhook posts params to path the way Twilio does: form-encoded, with
// X-Twilio-Signature computed by Twilio's library over the public URL.
async function webhook(path, params, signature) {
  let sig = signature
  if (sig === undefined) {
    sig = twilio.getExpectedTwilioSignature(authToken, publicURL + path, params)
    assert.ok(twilio.validateRequest(authToken, sig, publicURL + path, params))
  }
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Twilio-Signature': sig },
    body: new URLSearchParams(params).toString(),
  })
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() }
}

const customerQuery = `query($v: String!) {
  customerByIdentity(type: "phone", value: $v) {
    id traits consents { channel status source }
    conversations { edges { node { channel messages { edges { node { direction body status providerId mediaUrls } } } } } }
  }
}`

test('an inbound SMS signed by the twilio library is stored and answered with empty TwiML', async () => {
  const sid = 'SM' + randomBytes(16).toString('hex')
  const params = {
    MessageSid: sid, SmsMessageSid: sid, SmsSid: sid, AccountSid: accountSid, From: '+14155550123', To: smsFrom,
    Body: 'Where is my order?', NumMedia: '1', MediaUrl0: 'https://api.twilio.com/media/ME1', MediaContentType0: 'image/jpeg',
    NumSegments: '1', ApiVersion: '2010-04-01',
  }
  const res = await webhook(`/webhooks/twilio/${slug}`, params)
  assert.equal(res.status, 200, res.body)
  assert.match(res.type, /^text\/xml/)
  assert.equal(res.body, '<?xml version="1.0" encoding="UTF-8"?><Response/>')
  assert.equal((await webhook(`/webhooks/twilio/${slug}`, params)).status, 200, 'a redelivery is answered 200 too')

  const { customerByIdentity: c } = await graphql(customerQuery, { v: '+1 415 555 0123' })
  const sms = c.conversations.edges.map((e) => e.node).find((n) => n.channel === 'sms')
  assert.equal(sms.messages.edges.length, 1, 'stored once')
  assert.deepEqual(sms.messages.edges[0].node, {
    direction: 'inbound', body: 'Where is my order?', status: 'received', providerId: sid,
    mediaUrls: ['https://api.twilio.com/media/ME1'],
  })
})

test('a tampered or unsigned webhook is refused with 403', async () => {
  const params = { MessageSid: 'SM' + randomBytes(16).toString('hex'), From: '+14155550124', To: smsFrom, Body: 'hi' }
  const sig = twilio.getExpectedTwilioSignature(authToken, publicURL + `/webhooks/twilio/${slug}`, params)
  assert.equal((await webhook(`/webhooks/twilio/${slug}`, { ...params, Body: 'STOP' }, sig)).status, 403)
  const wrongKey = twilio.getExpectedTwilioSignature('0'.repeat(32), publicURL + `/webhooks/twilio/${slug}`, params)
  assert.equal((await webhook(`/webhooks/twilio/${slug}`, params, wrongKey)).status, 403)
  assert.equal((await webhook(`/webhooks/twilio/${slug}`, params, '')).status, 403)
})

test('STOP from the twilio library opts the customer out of sms', async () => {
  const sid = 'SM' + randomBytes(16).toString('hex')
  const res = await webhook(`/webhooks/twilio/${slug}`, { MessageSid: sid, AccountSid: accountSid, From: '+14155550125', To: smsFrom, Body: ' stop ' })
  assert.equal(res.status, 200, res.body)
  const { customerByIdentity: c } = await graphql(customerQuery, { v: '+14155550125' })
  assert.deepEqual(c.consents, [{ channel: 'sms', status: 'opted_out', source: 'twilio' }])
})

test('sendMessage goes to Twilio, and its signed status callback moves the message forward', async () => {
  const { customerByIdentity: c } = await graphql(customerQuery, { v: '+14155550123' })
  const before = twilioRequests.length
  const { sendMessage: m } = await graphql(`mutation($id: ID!) {
    sendMessage(input: {customerId: $id, channel: "sms", body: "It ships today"}) { id direction status providerId }
  }`, { id: c.id })
  assert.equal(twilioRequests.length, before + 1)
  const req = twilioRequests.at(-1)
  assert.equal(req.method, 'POST')
  assert.equal(req.path, `/2010-04-01/Accounts/${accountSid}/Messages.json`)
  assert.equal(req.auth, `${accountSid}:${authToken}`)
  assert.equal(req.form.To, '+14155550123')
  assert.equal(req.form.From, smsFrom)
  assert.equal(req.form.Body, 'It ships today')
  // The callback names the message c360 recorded before asking Twilio, so a
  // callback finds it even when Twilio's answer was lost (signed: the query
  // cannot be altered).
  const callback = `${publicURL}/webhooks/twilio/${slug}/status?message=${m.id}`
  assert.equal(req.form.StatusCallback, callback)
  assert.deepEqual(m, { id: m.id, direction: 'outbound', status: 'queued', providerId: req.sid })

  // Twilio calls the StatusCallback URL it was given, signed over that URL.
  for (const status of ['sent', 'delivered', 'sent']) {
    const params = { MessageSid: req.sid, SmsSid: req.sid, MessageStatus: status, SmsStatus: status,
      AccountSid: accountSid, From: smsFrom, To: '+14155550123', ApiVersion: '2010-04-01' }
    const u = new URL(callback)
    const res = await webhook(u.pathname + u.search, params)
    assert.equal(res.status, 200, res.body)
  }
  const { customerByIdentity: after } = await graphql(customerQuery, { v: '+14155550123' })
  const out = after.conversations.edges.map((e) => e.node).find((n) => n.channel === 'sms')
    .messages.edges.map((e) => e.node).find((n) => n.providerId === req.sid)
  assert.equal(out.status, 'delivered', 'a late "sent" never undoes "delivered"')
})

test('sendMessage to an opted-out customer is refused and sends nothing', async () => {
  const { customerByIdentity: c } = await graphql(customerQuery, { v: '+14155550125' })
  const before = twilioRequests.length
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${creds.apiKey}` },
    body: JSON.stringify({ query: `mutation($id: ID!) { sendMessage(input: {customerId: $id, channel: "sms", body: "hi"}) { id } }`, variables: { id: c.id } }),
  })
  const body = await res.json()
  assert.equal(body.errors?.[0]?.extensions?.code, 'FORBIDDEN')
  assert.match(body.errors[0].message, /opted out of sms/)
  assert.equal(twilioRequests.length, before)
})

// A console follows a caller's messages over graphql-ws (the reference
// client), is cut off, and resumes with the changeCursor of the last
// message it received: what Twilio delivered meanwhile arrives, once each.
test('conversationMessages resumes by changeCursor across a reconnect', async () => {
  const from = '+14155550131'
  const sms = async (body) => {
    const sid = 'SM' + randomBytes(16).toString('hex')
    const res = await webhook(`/webhooks/twilio/${slug}`, { MessageSid: sid, SmsSid: sid, AccountSid: accountSid,
      From: from, To: smsFrom, Body: body, NumMedia: '0', ApiVersion: '2010-04-01' })
    assert.equal(res.status, 200, res.body)
  }
  await sms('first')
  const { customerByIdentity: c } = await graphql(customerQuery, { v: from })
  const query = `subscription($c: ID, $after: String) {
    conversationMessages(customerId: $c, after: $after) { body direction changeCursor } }`
  // follow subscribes from after, and resolves once until(message) holds.
  const follow = (after, until) => {
    const client = createClient({ url: base.replace(/^http/, 'ws') + '/graphql', webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${creds.apiKey}` }, retryAttempts: 0, lazy: true })
    const got = []
    const done = new Promise((resolve, reject) => {
      client.subscribe({ query, variables: { c: c.id, after } }, {
        next: ({ data, errors }) => {
          if (errors) reject(new Error(JSON.stringify(errors)))
          got.push(data.conversationMessages)
          if (until(data.conversationMessages)) resolve()
        },
        error: reject,
        complete: () => resolve(),
      })
    })
    return { client, got, done }
  }
  // Live: the subscription is open once a message sent after it arrives.
  const live = follow(undefined, () => true)
  for (let i = 0; live.got.length === 0; i++) {
    assert.ok(i < 50, 'no message arrived')
    if (i % 10 === 0) await sms(`live ${i}`)
    await sleep(50)
  }
  await live.done
  await live.client.dispose()
  const last = live.got.at(-1)
  assert.ok(last.changeCursor, 'a delivered message carries its changeCursor')

  await sms('while away 1')
  await sms('while away 2')
  const resumed = follow(last.changeCursor, (m) => m.body === 'while away 2')
  await resumed.done
  await resumed.client.dispose()
  // A "live" message sent before the first arrived, and still on its way
  // when the client left, is rightly replayed: it was never received.
  const seen = new Set(live.got.map((m) => m.body))
  const replayed = resumed.got.map((m) => m.body)
  assert.ok(replayed.every((b) => !seen.has(b)), `received twice: ${replayed}`)
  assert.deepEqual(replayed.filter((b) => !b.startsWith('live ')), ['while away 1', 'while away 2'])
  assert.ok(resumed.got.every((m) => m.direction === 'inbound' && m.changeCursor))
})
