// Shared harness of the end-to-end suite: runs a real c360 server
// (../bin/c360 serve) on TEST_DATABASE_URL at a free port, creates
// workspaces with the c360 command, and stops the server again.
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

// bin is the c360 binary under test, built by `make` into ../bin.
export const bin = fileURLToPath(new URL('../bin/c360', import.meta.url))

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// freePort resolves with a TCP port on 127.0.0.1 that nothing listens on.
export function freePort() {
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

// waitHealthy polls url until it answers 2xx; it fails at once if child
// exits, and after ms milliseconds; log() is the server's output so far.
async function waitHealthy(child, log, url, ms) {
  const deadline = Date.now() + ms
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`c360 serve exited with ${child.exitCode}:\n${log()}`)
    }
    try {
      const res = await fetch(url)
      if (res.ok) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`c360 serve not healthy after ${ms} ms:\n${log()}`)
    await sleep(100)
  }
}

// startServer runs `c360 serve` (or args) with DATABASE_URL=databaseURL and
// C360_ADDR at a free port, plus env: an object, or a function of
// { port, base } for settings that name the server's own address. It
// resolves once healthPath answers 2xx (/readyz: the API is served; /healthz
// answers 200 already while migrations run), with
//   base:   the server's http://127.0.0.1:port
//   port:   its port
//   env:    the environment it runs with, for other c360 commands
//   log():  what it wrote to stdout and stderr so far
//   stop(): SIGTERM, SIGKILL after 10 s, resolved once it has exited.
export async function startServer({
  env: extraEnv = {},
  args = ['serve'],
  healthPath = '/readyz',
  timeoutMs = 30000,
  databaseURL = process.env.TEST_DATABASE_URL,
} = {}) {
  assert.ok(databaseURL, 'TEST_DATABASE_URL is not set: run `make test`')
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const extra = typeof extraEnv === 'function' ? extraEnv({ port, base }) : extraEnv
  const env = { ...process.env, DATABASE_URL: databaseURL, C360_ADDR: `127.0.0.1:${port}`, ...extra }
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const log = () => output

  async function stop() {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
    await exited
    clearTimeout(timer)
  }

  try {
    await waitHealthy(child, log, `${base}${healthPath}`, timeoutMs)
  } catch (err) {
    await stop()
    throw err
  }
  return { base, port, env, log, stop }
}

// createWorkspace runs `c360 workspace create --json` with env under a fresh
// slug (prefix, then bytes random bytes in hex) and returns the parsed
// credentials: id, slug, apiKey, writeKey, webhookSecret.
export function createWorkspace(env, { prefix = 'e2e-', bytes = 6 } = {}) {
  const slug = `${prefix}${randomBytes(bytes).toString('hex')}`
  const out = execFileSync(bin, ['workspace', 'create', '--slug', slug, '--json'], { env })
  return JSON.parse(out.toString())
}
