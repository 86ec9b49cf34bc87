// End-to-end: the GraphQL over HTTP spec's server audits, from the
// graphql-http package, run against a real c360 server (../bin/c360 serve,
// production mode: introspection off) on TEST_DATABASE_URL, authenticated
// with an admin key. Every MUST audit has to pass; SHOULD and MAY audits
// are reported.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { serverAudits } from 'graphql-http'
import { bin, startServer, createWorkspace } from './harness.js'

const databaseURL = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL

let server
let base
let apiKey

before(async () => {
  assert.ok(databaseURL, 'TEST_DATABASE_URL is not set: run the e2e suite with `make test`')
  const env = { ...process.env, DATABASE_URL: databaseURL }
  execFileSync(bin, ['migrate', 'up'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  apiKey = createWorkspace(env, { prefix: 'gqlhttp-', bytes: 4 }).apiKey
  server = await startServer({
    databaseURL,
    args: ['serve', '--no-migrate'],
    env: ({ base }) => ({ C360_PUBLIC_URL: base }),
    timeoutMs: 15000,
  })
  base = server.base
})

after(async () => {
  await server?.stop()
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
