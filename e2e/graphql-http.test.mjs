// End-to-end: the GraphQL over HTTP spec's server audits, from the
// graphql-http package, run against a real c360 server (../bin/c360 serve,
// production mode: introspection off) on TEST_DATABASE_URL, authenticated
// with an admin key. Every MUST audit has to pass; SHOULD and MAY audits
// are reported.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { serverAudits } from 'graphql-http'

const bin = fileURLToPath(new URL('../bin/c360', import.meta.url))
const databaseURL = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL

let server
let serverLog = ''
let base
let apiKey

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
  assert.ok(databaseURL, 'TEST_DATABASE_URL is not set: run the e2e suite with `make test`')
  const env = { ...process.env, DATABASE_URL: databaseURL }
  execFileSync(bin, ['migrate', 'up'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const slug = `gqlhttp-${randomBytes(4).toString('hex')}`
  const creds = JSON.parse(execFileSync(bin, ['workspace', 'create', '--slug', slug, '--json'], { env }).toString())
  apiKey = creds.apiKey
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  server = spawn(bin, ['serve', '--no-migrate'], {
    env: { ...env, C360_ADDR: `127.0.0.1:${port}`, C360_PUBLIC_URL: base },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  server.stderr.on('data', (b) => {
    serverLog += b.toString()
  })
  await waitHealthy(`${base}/healthz`, 15000)
})

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r))
    server.kill('SIGTERM')
    await exited
  }
})

test('graphql-http server audits: every MUST passes on /graphql', async (t) => {
  // The audits send their own requests; the wrapper adds the API key.
  const fetchFn = (input, init = {}) => {
    const headers = new Headers(init.headers)
    headers.set('authorization', `Bearer ${apiKey}`)
    return fetch(input, { ...init, headers })
  }
  const audits = serverAudits({ url: `${base}/graphql`, fetchFn })
  const failures = []
  for (const audit of audits) {
    const result = await audit.fn()
    if (result.status === 'ok') continue
    const line = `${result.status} ${result.id} ${result.name}: ${result.reason}`
    if (result.status === 'error') {
      let body = ''
      try {
        body = await result.response.text()
      } catch {
        // body already read by the audit
      }
      failures.push(`${line} (status ${result.response?.status}) ${body}`)
    } else {
      t.diagnostic(line)
    }
  }
  assert.deepEqual(failures, [], `MUST audits failed:\n${failures.join('\n')}`)
})
