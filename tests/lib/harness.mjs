// Test harness for Weft's end-to-end suite.
//
// - `startWeft(t, opts)` runs the real `weft` binary on a free loopback port
//   with a fresh SQLite store, waits for `/readyz`, captures its output and
//   prints that output when the test fails. `stop()` sends SIGTERM and checks
//   the exit code, `kill()` sends SIGKILL, `restart()` starts the binary again
//   on the same port and store.
// - `createClient(t, server, docName, opts)` builds a real Y.Doc plus an
//   unmodified y-websocket `WebsocketProvider`.
// - `waitFor(predicate, { on, timeout, what })` re-evaluates a predicate on
//   Yjs events (doc `update`, provider `sync` / `status`, awareness `change`)
//   and fails with a descriptive message once the timeout expires.
// - For the hardening tests: `rawUpgrade` / `assertRefusal` (refused
//   upgrades: status, JSON body, Retry-After), `RawSession` / `openRaw`
//   (exact frames in and out), `customWebSocket` (headers for a provider),
//   `signJwt` / `jwtKeyPair` / `jwtClaims` (JWTs from node's crypto) and
//   `procMemory` (VmRSS / VmHWM).
//
// Only 127.0.0.1 is ever contacted, and every loop is bounded in count and
// time.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'node:test'

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Awareness } from 'y-protocols/awareness'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

export { Y, WebsocketProvider, WebSocket, sleep }

const HERE = path.dirname(fileURLToPath(import.meta.url))
/** Root of the Weft repository (tests/ lives directly inside it). */
export const REPO_ROOT = path.resolve(HERE, '..', '..')
/** The server binary under test. */
export const WEFT_BIN = process.env.WEFT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'weft')

export const HOST = '127.0.0.1'

/** Keep at most this many bytes of server output per server instance. */
const MAX_LOG_BYTES = 4 * 1024 * 1024

// Every spawned child, so that nothing outlives the test process even if a
// test is cancelled before its `after` hooks run.
const liveChildren = new Set()
// every y-websocket provider registers a process 'exit' listener; tests run
// dozens of providers in one process
process.setMaxListeners(Math.max(process.getMaxListeners(), 500))
process.on('exit', () => {
  for (const child of liveChildren) {
    try { child.kill('SIGKILL') } catch { /* already gone */ }
  }
})

/**
 * Find a free TCP port on 127.0.0.1 by binding port 0 and closing again.
 * @returns {Promise<number>}
 */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, HOST, () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address())
      srv.close(err => (err ? reject(err) : resolve(port)))
    })
  })
}

/** Milliseconds since an arbitrary origin, monotonic. */
export const now = () => performance.now()

/**
 * Resolve with `promise`'s value, or with `fallback` after `ms` ms. The timer
 * is cleared either way, so it never keeps the process alive.
 */
export function within (promise, ms, fallback = null) {
  let timer
  const limit = new Promise(resolve => { timer = setTimeout(resolve, ms, fallback) })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/**
 * The log filter is given as RUST_LOG; WEFT_LOG (the server's own twin of
 * `--log`) follows it unless set explicitly.
 */
function logEnv (env) {
  const filter = env.RUST_LOG || env.WEFT_LOG || 'weft=info'
  return { ...env, RUST_LOG: env.RUST_LOG || filter, WEFT_LOG: env.WEFT_LOG || filter }
}

/**
 * One Weft server: a binary, a port and a store directory that outlive
 * restarts of the process.
 */
export class WeftServer {
  /**
   * @param {object} opts
   * @param {number} opts.port
   * @param {string} opts.storeDir
   * @param {string[]} [opts.args] extra CLI flags for `weft serve`
   * @param {Record<string,string>} [opts.env] extra environment variables
   * @param {string} [opts.name] label used in log output
   * @param {string} [opts.command] subcommand: `serve` (default) or `persist`
   * @param {string} [opts.store] store URL instead of a SQLite file in storeDir
   */
  constructor ({ port, storeDir, args = [], env = {}, name = 'weft', command = 'serve', store = null }) {
    this.port = port
    this.command = command
    this.storeOverride = store
    this.storeDir = storeDir
    this.args = args
    this.env = env
    this.name = name
    this.generation = 0
    /** @type {import('node:child_process').ChildProcess | null} */
    this.child = null
    /** @type {Promise<{code: number|null, signal: string|null}> | null} */
    this.exited = null
    /** @type {{code: number|null, signal: string|null} | null} */
    this.exitStatus = null
    this.logChunks = []
    this.logBytes = 0
    this.droppedLogBytes = 0
  }

  get wsUrl () { return `ws://${HOST}:${this.port}` }
  get httpUrl () { return `http://${HOST}:${this.port}` }
  get storeUrl () { return this.storeOverride || `sqlite://${path.join(this.storeDir, 'weft.db')}` }
  get pid () { return this.child?.pid }
  get running () { return this.child !== null && this.exitStatus === null }

  _log (text) {
    const buf = Buffer.from(text)
    this.logChunks.push(buf)
    this.logBytes += buf.length
    while (this.logBytes > MAX_LOG_BYTES && this.logChunks.length > 1) {
      const dropped = this.logChunks.shift()
      this.logBytes -= dropped.length
      this.droppedLogBytes += dropped.length
    }
  }

  /** Everything the server printed so far (all generations). */
  logs () {
    const head = this.droppedLogBytes > 0 ? `[... ${this.droppedLogBytes} bytes of older output dropped ...]\n` : ''
    return head + Buffer.concat(this.logChunks).toString('utf8')
  }

  /** Print the captured output, e.g. when a test failed. */
  dumpLogs (reason = '') {
    const bar = '-'.repeat(20)
    process.stderr.write(`\n${bar} ${this.name} output (port ${this.port}, store ${this.storeDir})${reason ? ' — ' + reason : ''} ${bar}\n`)
    process.stderr.write(this.logs())
    process.stderr.write(`\n${bar} end of ${this.name} output ${bar}\n`)
  }

  /** Spawn the process (does not wait for readiness). */
  spawn () {
    if (this.running) throw new Error(`${this.name} is already running (pid ${this.pid})`)
    if (!fs.existsSync(WEFT_BIN)) {
      throw new Error(`weft binary not found at ${WEFT_BIN} — build it with \`cargo build -p weft-server\` or set WEFT_BIN`)
    }
    this.generation += 1
    const gen = this.generation
    const argv = [this.command, '--listen', `${HOST}:${this.port}`, '--store', this.storeUrl, ...this.args]
    this._log(`[harness] start #${gen}: ${WEFT_BIN} ${argv.join(' ')}\n`)
    const child = spawn(WEFT_BIN, argv, {
      env: logEnv({ ...process.env, ...this.env }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    this.child = child
    this.exitStatus = null
    liveChildren.add(child)
    child.stdout.on('data', d => this._log(d.toString('utf8')))
    child.stderr.on('data', d => this._log(d.toString('utf8')))
    this.exited = new Promise(resolve => {
      let settled = false
      const settle = (status) => {
        if (settled) return
        settled = true
        liveChildren.delete(child)
        this.exitStatus = status
        this._log(`[harness] #${gen} exited: code=${status.code} signal=${status.signal}\n`)
        resolve(status)
      }
      child.once('exit', (code, signal) => settle({ code, signal }))
      child.once('error', err => {
        this._log(`[harness] #${gen} spawn error: ${err.message}\n`)
        settle({ code: null, signal: null, error: err })
      })
    })
  }

  /**
   * Poll `GET /readyz` until it answers 200. Fails if the process exits or
   * the timeout expires.
   */
  async waitReady ({ timeout = 15000, interval = 25 } = {}) {
    const started = now()
    const maxAttempts = Math.ceil(timeout / interval) + 1
    let last = 'no answer yet'
    for (let attempt = 0; attempt < maxAttempts && now() - started < timeout; attempt++) {
      if (this.exitStatus !== null) {
        throw new Error(`${this.name} exited before it was ready (code=${this.exitStatus.code}, signal=${this.exitStatus.signal}); last output:\n${this.logs().slice(-4000)}`)
      }
      try {
        const res = await fetch(`${this.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
        await res.arrayBuffer()
        if (res.status === 200) return now() - started
        last = `HTTP ${res.status}`
      } catch (err) {
        last = err.cause?.code || err.message
      }
      await sleep(interval)
    }
    throw new Error(`${this.name} not ready within ${timeout} ms (last /readyz: ${last})`)
  }

  /** Spawn and wait until ready. Returns the startup time in ms. */
  async start (opts) {
    this.spawn()
    return this.waitReady(opts)
  }

  /**
   * Graceful stop: SIGTERM, wait for exit. Returns `{ code, signal, ms }`.
   * Throws if the process does not exit within `timeout` (it is then
   * SIGKILLed) or, unless `expectCode` is null, exits with another code.
   */
  async stop ({ timeout = 30000, expectCode = 0 } = {}) {
    if (!this.running) throw new Error(`${this.name} is not running`)
    const started = now()
    this.child.kill('SIGTERM')
    const status = await within(this.exited, timeout, null)
    const ms = now() - started
    if (status === null) {
      this.child.kill('SIGKILL')
      await this.exited
      throw new Error(`${this.name} did not exit within ${timeout} ms of SIGTERM`)
    }
    if (expectCode !== null && (status.code !== expectCode || status.signal !== null)) {
      throw new Error(`${this.name} exited with code=${status.code} signal=${status.signal} after SIGTERM, expected code ${expectCode}`)
    }
    return { ...status, ms }
  }

  /** Hard stop: SIGKILL, wait for exit. */
  async kill () {
    if (!this.running) throw new Error(`${this.name} is not running`)
    this.child.kill('SIGKILL')
    return this.exited
  }

  /** Start again on the same port and store. */
  async restart (opts) {
    if (this.running) throw new Error(`${this.name} is still running; stop() or kill() it first`)
    return this.start(opts)
  }

  /** Kill whatever is still running and optionally delete the store. */
  async cleanup ({ removeStore = true } = {}) {
    if (this.running) {
      this.child.kill('SIGKILL')
      await within(this.exited, 5000)
    }
    if (removeStore) fs.rmSync(this.storeDir, { recursive: true, force: true })
  }
}

/**
 * Start a Weft server for test `t`: free port, fresh store, ready on return.
 * The process is killed and its store removed after the test; its output is
 * printed if the test fails.
 *
 * @param {import('node:test').TestContext} t
 * @param {object} [opts]
 * @param {string[]} [opts.args]
 * @param {Record<string,string>} [opts.env]
 * @param {string} [opts.name]
 * @param {{timeout?: number}} [opts.ready] how long to wait for /readyz
 */
export async function startWeft (t, opts = {}) {
  const port = await freePort()
  const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-e2e-'))
  // the server is told to create this directory itself
  const server = new WeftServer({ port, storeDir: path.join(storeDir, 'store'), ...opts })
  server.tmpRoot = storeDir
  registerForFailureLogs(t, server)
  t.after(async () => {
    await server.cleanup({ removeStore: false })
    if (process.env.WEFT_E2E_SHOW_LOGS) server.dumpLogs('WEFT_E2E_SHOW_LOGS is set')
    fs.rmSync(storeDir, { recursive: true, force: true })
  })
  await server.start(opts.ready)
  return server
}

// ---------------------------------------------------------------------------
// Failure reporting: node:test has no "did this test fail" flag in hooks, so
// tests are written with `e2e(name, fn)` below, which catches the failure
// (or its own timeout), prints every server's output and rethrows.

const serversByContext = new WeakMap()

function registerForFailureLogs (t, server) {
  let list = serversByContext.get(t)
  if (!list) {
    list = []
    serversByContext.set(t, list)
  }
  list.push(server)
}

/**
 * Like node:test's `test`, but with a time limit (`opts.timeout`, default
 * 120 s) after which the test fails with a clear message, and the output of
 * every server the test started is printed when it fails.
 *
 * @param {string} name
 * @param {object|Function} opts
 * @param {Function} [fn]
 */
export function e2e (name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {} }
  const { timeout = 120000, ...rest } = opts
  return test(name, { ...rest, timeout: timeout + 15000 }, async (t) => {
    let timer
    const limit = new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`test exceeded its time limit of ${timeout} ms`)), timeout)
    })
    try {
      await Promise.race([fn(t), limit])
    } catch (err) {
      for (const s of serversByContext.get(t) || []) s.dumpLogs(`test failed: ${String(err?.message).split('\n')[0]}`)
      throw err
    } finally {
      clearTimeout(timer)
    }
  })
}

// ---------------------------------------------------------------------------
// Clients

/**
 * A real Yjs client: Y.Doc + y-websocket provider (+ its awareness).
 *
 * BroadcastChannel sync is disabled: all clients live in this one process
 * and must only talk to each other through the server.
 *
 * @param {import('node:test').TestContext | null} t destroyed after the test if given
 * @param {WeftServer | string} server server or ws:// base url
 * @param {string} docName y-websocket room name (appended to the url as is)
 * @param {object} [opts]
 * @param {string} [opts.name] label for messages
 * @param {number} [opts.maxBackoffTime] reconnect backoff cap (ms)
 * @param {boolean} [opts.connect]
 */
export function createClient (t, server, docName, { name = 'client', maxBackoffTime = 250, connect = true, ...providerOpts } = {}) {
  const doc = new Y.Doc()
  const baseUrl = typeof server === 'string' ? server : server.wsUrl
  const provider = new WebsocketProvider(baseUrl, docName, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime,
    connect,
    ...providerOpts
  })
  const client = {
    name,
    docName,
    doc,
    provider,
    awareness: provider.awareness,
    closeCodes: [],
    destroyed: false,
    destroy () {
      if (client.destroyed) return
      client.destroyed = true
      provider.destroy()
      doc.destroy()
    }
  }
  provider.on('connection-close', (event) => { if (event) client.closeCodes.push(event.code) })
  // a socket error must never become an uncaught exception in the test
  provider.on('connection-error', () => {})
  if (t) t.after(() => client.destroy())
  return client
}

// ---------------------------------------------------------------------------
// Waiting

function subscribe (target, fn, unsubs) {
  if (target == null) return
  if (Array.isArray(target)) { for (const x of target) subscribe(x, fn, unsubs); return }
  if (target instanceof Y.Doc) {
    target.on('update', fn)
    unsubs.push(() => target.off('update', fn))
  } else if (target instanceof WebsocketProvider) {
    for (const ev of ['sync', 'status', 'connection-close']) {
      target.on(ev, fn)
      unsubs.push(() => target.off(ev, fn))
    }
  } else if (target instanceof Awareness) {
    target.on('change', fn)
    unsubs.push(() => target.off('change', fn))
  } else if (target.doc && target.provider) {
    subscribe(target.doc, fn, unsubs)
    subscribe(target.provider, fn, unsubs)
    subscribe(target.awareness, fn, unsubs)
  } else if (typeof target.on === 'function' && typeof target.off === 'function') {
    // any other emitter: re-check on its 'change' events
    target.on('change', fn)
    unsubs.push(() => target.off('change', fn))
  } else {
    throw new TypeError('waitFor: cannot subscribe to ' + String(target))
  }
}

/**
 * Resolve once `predicate()` is truthy. The predicate is evaluated now and
 * again on every Yjs event of the `on` targets (clients, docs, providers,
 * awareness instances). Rejects after `timeout` ms with a message that names
 * `what` and, if given, the result of `detail()`.
 *
 * @template T
 * @param {() => T} predicate
 * @param {object} opts
 * @param {any} opts.on clients / docs / providers / awareness to listen to
 * @param {number} [opts.timeout]
 * @param {string} [opts.what]
 * @param {() => string} [opts.detail]
 * @returns {Promise<T>}
 */
export function waitFor (predicate, { on, timeout = 10000, what = 'condition', detail } = {}) {
  return new Promise((resolve, reject) => {
    const unsubs = []
    let done = false
    let timer = null
    const finish = (err, value) => {
      if (done) return
      done = true
      clearTimeout(timer)
      for (const u of unsubs) u()
      if (err) reject(err)
      else resolve(value)
    }
    const check = () => {
      if (done) return
      let value
      try {
        value = predicate()
      } catch (err) {
        finish(err)
        return
      }
      if (value) finish(null, value)
    }
    timer = setTimeout(() => {
      let extra = ''
      if (detail) {
        try { extra = '\n' + detail() } catch (err) { extra = `\n(detail failed: ${err.message})` }
      }
      finish(new Error(`timed out after ${timeout} ms waiting for ${what}${extra}`))
    }, timeout)
    try {
      subscribe(on, check, unsubs)
    } catch (err) {
      finish(err)
      return
    }
    check()
  })
}

/** Wait until every client's provider is connected and synced. */
export function waitSynced (clients, { timeout = 10000, what } = {}) {
  const list = Array.isArray(clients) ? clients : [clients]
  return waitFor(() => list.every(c => c.provider.synced), {
    on: list,
    timeout,
    what: what || `sync of ${list.map(c => c.name).join(', ')}`,
    detail: () => list.map(c => `${c.name}: connected=${c.provider.wsconnected} synced=${c.provider.synced}`).join('\n')
  })
}

// ---------------------------------------------------------------------------
// Comparing documents

/** JSON.stringify with object keys sorted, so that Y.Map order is irrelevant. */
export function canonicalJson (value) {
  return JSON.stringify(value, (_key, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v).sort().map(k => [k, v[k]]))
    }
    return v
  })
}

/** The state vector of a doc as a sorted "client:clock" string. */
export function stateVectorString (doc) {
  const sv = Y.decodeStateVector(Y.encodeStateVector(doc))
  return [...sv.entries()].sort((a, b) => a[0] - b[0]).map(([c, k]) => `${c}:${k}`).join(',')
}

/**
 * The content of the named root types of `doc`, as plain JSON.
 * @param {Y.Doc} doc
 * @param {{text?: string[], map?: string[], array?: string[]}} types
 */
export function docContent (doc, { text = ['text'], map = ['map'], array = ['array'] } = {}) {
  const out = {}
  for (const n of text) out[`text:${n}`] = doc.getText(n).toString()
  for (const n of map) out[`map:${n}`] = doc.getMap(n).toJSON()
  for (const n of array) out[`array:${n}`] = doc.getArray(n).toJSON()
  return out
}

/** A string that is equal for two docs iff their contents and state vectors are. */
export function fingerprint (doc, types) {
  return stateVectorString(doc) + '|' + canonicalJson(docContent(doc, types))
}

function shorten (s, n = 300) {
  return s.length > n ? s.slice(0, n) + `… (${s.length} chars)` : s
}

/**
 * Wait until all clients have identical state vectors and identical content
 * of the given root types. Returns the time it took in ms.
 */
export async function waitConverged (clients, { timeout = 15000, what, types } = {}) {
  const started = now()
  const label = what || `convergence of ${clients.map(c => c.name).join(', ')}`
  await waitFor(() => {
    const first = fingerprint(clients[0].doc, types)
    return clients.every(c => fingerprint(c.doc, types) === first)
  }, {
    on: clients,
    timeout,
    what: label,
    detail: () => clients.map(c =>
      `${c.name} (connected=${c.provider.wsconnected} synced=${c.provider.synced}): sv=${stateVectorString(c.doc)} content=${shorten(canonicalJson(docContent(c.doc, types)))}`
    ).join('\n')
  })
  return now() - started
}

/**
 * Assert that every token of `expected` is in the client's root array
 * "array" exactly once, and nothing else is.
 */
export function assertTokensOnce (client, expected) {
  const list = client.doc.getArray('array').toJSON()
  const counts = new Map()
  for (const token of list) counts.set(token, (counts.get(token) || 0) + 1)
  const missing = expected.filter(token => !counts.has(token))
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([token]) => token)
  assert.deepEqual({ missing, duplicated, length: list.length }, { missing: [], duplicated: [], length: expected.length }, client.name)
}

// ---------------------------------------------------------------------------
// Misc

/** Small deterministic PRNG (mulberry32) so that random tests can be replayed. */
export function prng (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    string: (len) => {
      // BMP only: inserting at a random UTF-16 index must not split a surrogate pair
      const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789 äß€ж'
      let s = ''
      for (let i = 0; i < len; i++) s += alphabet[Math.floor(next() * alphabet.length)]
      return s
    }
  }
}

/** Seed for randomized tests: WEFT_E2E_SEED or a fresh one (printed by the tests). */
export function testSeed () {
  const env = process.env.WEFT_E2E_SEED
  return env ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0
}

/** Format a millisecond figure for logs. */
export const fmtMs = (ms) => `${ms.toFixed(1)} ms`

/**
 * A server's metric: the first sample of `series` (`name` or
 * `name{labels}`, as exported) on its /metrics, or 0 if absent.
 */
export async function metric (server, series) {
  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  assert.equal(res.status, 200)
  const text = await res.text()
  const escaped = series.replace(/[{}"=]/g, c => `\\${c}`)
  const match = text.match(new RegExp(`^${escaped} (\\S+)$`, 'm'))
  return match ? Number(match[1]) : 0
}

/** Log a measurement line in a uniform, greppable format. */
export function report (label, ms) {
  console.log(`[measure] ${label}: ${fmtMs(ms)}`)
}

// ---------------------------------------------------------------------------
// Hardening helpers: raw upgrades and refusals, raw y-websocket sessions,
// JWTs signed with node's own crypto, process memory. Used by
// e2e/hardening-*.test.mjs; nothing above depends on them.

/** Bytes of a refusal body read at most (refusals are small JSON objects). */
const MAX_REFUSAL_BODY_BYTES = 64 * 1024

/**
 * A raw HTTP/1.1 WebSocket upgrade request, so that a refusal's status,
 * headers and body can be inspected (a WebSocket client hides them).
 *
 * Resolves with `{ status, headers, body, json }` for a non-101 answer, and
 * with `{ status: 101, headers, socket }` for an accepted upgrade; the socket
 * is destroyed at once unless `keepOpen` is set (then the caller owns it).
 *
 * @param {WeftServer} server
 * @param {string} target path and query, e.g. `/doc?token=...`
 * @param {object} [opts]
 * @param {Record<string,string>} [opts.headers] extra request headers
 * @param {boolean} [opts.keepOpen]
 * @param {number} [opts.timeout]
 */
export function rawUpgrade (server, target, { headers = {}, keepOpen = false, timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    let settled = false
    const settle = (err, value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err) reject(err)
      else resolve(value)
    }
    const req = http.request({
      host: HOST,
      port: server.port,
      path: target.startsWith('/') ? target : `/${target}`,
      method: 'GET',
      agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
        ...headers
      }
    })
    const timer = setTimeout(() => {
      req.destroy()
      settle(new Error(`no answer to the upgrade of ${target} within ${timeout} ms`))
    }, timeout)
    req.on('upgrade', (res, socket) => {
      socket.on('error', () => {})
      if (!keepOpen) socket.destroy()
      settle(null, { status: res.statusCode, headers: res.headers, socket })
    })
    req.on('response', (res) => {
      const chunks = []
      let size = 0
      res.on('data', (chunk) => {
        if (size < MAX_REFUSAL_BODY_BYTES) chunks.push(chunk)
        size += chunk.length
      })
      res.on('error', (err) => settle(err))
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        let json = null
        try { json = JSON.parse(body) } catch { /* asserted by the caller */ }
        settle(null, { status: res.statusCode, headers: res.headers, body, json })
      })
    })
    req.on('error', (err) => settle(err))
    req.end()
  })
}

/**
 * Assert that `res` (from `rawUpgrade`) is a refusal with `status` and the
 * JSON body `{"error":{"code":status,"message":"...","details":"..."}}`, and,
 * if `retryAfter` is set, a `Retry-After` header of whole seconds >= 1.
 */
export function assertRefusal (res, status, { retryAfter = false, what = 'upgrade' } = {}) {
  const shown = `${what}: HTTP ${res.status}, headers ${JSON.stringify(res.headers)}, body ${JSON.stringify(res.body)}`
  assert.equal(res.status, status, `status of ${shown}`)
  assert.match(res.headers['content-type'] || '', /application\/json/, `content-type of ${shown}`)
  assert.ok(res.json && typeof res.json === 'object', `body is JSON: ${shown}`)
  const error = res.json.error
  assert.ok(error && typeof error === 'object', `body has an "error" object: ${shown}`)
  assert.equal(error.code, status, `error.code of ${shown}`)
  assert.equal(typeof error.message, 'string', `error.message of ${shown}`)
  assert.ok(error.message.length > 0, `error.message is not empty: ${shown}`)
  assert.equal(typeof error.details, 'string', `error.details of ${shown}`)
  if (retryAfter) {
    const value = res.headers['retry-after']
    assert.ok(value !== undefined, `Retry-After header present: ${shown}`)
    assert.match(value, /^\d+$/, `Retry-After is whole seconds: ${shown}`)
    assert.ok(Number(value) >= 1, `Retry-After >= 1: ${shown}`)
  }
  return error
}

/** Decode one y-websocket frame into a small description (for assertions). */
export function describeFrame (frame) {
  const bytes = new Uint8Array(frame.buffer ? frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength) : frame)
  try {
    const decoder = decoding.createDecoder(bytes)
    const tag = decoding.readVarUint(decoder)
    switch (tag) {
      case 0: {
        const sub = decoding.readVarUint(decoder)
        const payload = decoding.readVarUint8Array(decoder)
        const type = ['sync-step1', 'sync-step2', 'update'][sub] || `sync-${sub}`
        return { type, payload, bytes }
      }
      case 1: return { type: 'awareness', payload: decoding.readVarUint8Array(decoder), bytes }
      case 2: {
        const sub = decoding.readVarUint(decoder)
        const reason = sub === 0 ? decoding.readVarString(decoder) : null
        return { type: 'auth', sub, reason, bytes }
      }
      case 3: return { type: 'query-awareness', bytes }
      default: return { type: `unknown-${tag}`, bytes }
    }
  } catch (err) {
    return { type: 'undecodable', error: err.message, bytes }
  }
}

/** A y-websocket sync frame: tag 0, sub-type, payload. */
export function syncFrame (subType, payload) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, 0)
  encoding.writeVarUint(encoder, subType)
  encoding.writeVarUint8Array(encoder, payload)
  return encoding.toUint8Array(encoder)
}

/**
 * A raw WebSocket session on a document (the `ws` client, no Yjs logic):
 * records every frame it receives (`frames`, decoded by `describeFrame`) and
 * how it was closed (`close`, `closed`). Emits 'change' on every frame and on
 * close, so `waitFor(..., { on: session })` works.
 */
export class RawSession extends EventEmitter {
  constructor (url, { headers = {}, name = 'raw', wsOptions = {} } = {}) {
    super()
    this.name = name
    this.frames = []
    this.close = null
    this.errors = []
    this.ws = new WebSocket(url, { headers, perMessageDeflate: false, ...wsOptions })
    this.ws.binaryType = 'nodebuffer'
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('unexpected-response', (_req, res) => {
        res.resume()
        reject(new Error(`${name}: upgrade refused with HTTP ${res.statusCode}`))
      })
      this.ws.once('close', () => reject(new Error(`${name}: closed before it opened`)))
    })
    this.opened.catch(() => {})
    this.closed = new Promise(resolve => {
      this.ws.once('close', (code, reason) => {
        this.close = { code, reason: reason.toString('utf8') }
        this.emit('change')
        resolve(this.close)
      })
    })
    this.ws.on('error', (err) => { this.errors.push(err.message) })
    this.ws.on('message', (data, isBinary) => {
      const frame = isBinary ? describeFrame(data) : { type: 'text', text: data.toString() }
      this.frames.push(frame)
      this.emit('change')
    })
  }

  /** Send one binary frame (errors after the peer closed are recorded, not thrown). */
  send (bytes, opts = { binary: true }) {
    this.ws.send(bytes, opts, (err) => { if (err) this.errors.push(err.message) })
  }

  /** Wait for the first recorded frame matching `predicate`. */
  waitFrame (predicate, { timeout = 10000, what = 'a frame' } = {}) {
    return waitFor(() => this.frames.find(predicate), {
      on: this,
      timeout,
      what: `${this.name} to receive ${what}`,
      detail: () => `${this.name} frames: ${this.frames.map(f => f.type).join(', ') || '(none)'}; close: ${JSON.stringify(this.close)}`
    })
  }

  /** Wait until the server closed the session; resolves `{ code, reason }`. */
  waitClosed ({ timeout = 10000 } = {}) {
    return waitFor(() => this.close, {
      on: this,
      timeout,
      what: `${this.name} to be closed`,
      detail: () => `${this.name} frames: ${this.frames.map(f => f.type).join(', ')}; errors: ${this.errors.join('; ')}`
    })
  }

  terminate () {
    try { this.ws.terminate() } catch { /* already gone */ }
  }
}

/**
 * Open a raw session on `docPath` (e.g. `my-doc` or `my-doc?token=...`);
 * resolves once the upgrade succeeded. Terminated after test `t`.
 */
export async function openRaw (t, server, docPath, opts = {}) {
  const session = new RawSession(`${server.wsUrl}/${docPath}`, opts)
  if (t) t.after(() => session.terminate())
  await within(session.opened, opts.timeout ?? 10000, 'timeout').then(v => {
    if (v === 'timeout') throw new Error(`${session.name}: upgrade of ${docPath} did not complete`)
  })
  return session
}

/**
 * A `WebSocket` class for y-websocket's `WebSocketPolyfill` option that sends
 * extra request headers (e.g. `Authorization`) and reports every binary frame
 * the provider receives to `onFrame(describeFrame(frame))`.
 */
export function customWebSocket ({ headers = {}, onFrame = null } = {}) {
  return class extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { headers })
      if (onFrame) {
        this.on('message', (data, isBinary) => {
          if (!isBinary) return
          const buf = Buffer.isBuffer(data) ? data : Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data)
          onFrame(describeFrame(buf))
        })
      }
    }
  }
}

const base64url = (input) => Buffer.from(input).toString('base64url')

/**
 * A compact JWS (JWT) signed with node's crypto.
 *
 * @param {object} claims payload
 * @param {object} opts
 * @param {'HS256'|'RS256'|'ES256'|'EdDSA'|'none'} [opts.alg]
 * @param {string|Buffer} [opts.secret] HS256 secret
 * @param {crypto.KeyObject} [opts.privateKey] RS256 / ES256 / EdDSA key
 * @param {object} [opts.header] extra header fields
 */
export function signJwt (claims, { alg = 'HS256', secret, privateKey, header = {} } = {}) {
  const head = base64url(JSON.stringify({ alg, typ: 'JWT', ...header }))
  const body = base64url(typeof claims === 'string' ? claims : JSON.stringify(claims))
  const input = `${head}.${body}`
  let signature
  switch (alg) {
    case 'HS256': signature = crypto.createHmac('sha256', secret).update(input).digest(); break
    case 'RS256': signature = crypto.sign('sha256', Buffer.from(input), privateKey); break
    case 'ES256': signature = crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }); break
    case 'EdDSA': signature = crypto.sign(null, Buffer.from(input), privateKey); break
    case 'none': signature = Buffer.alloc(0); break
    default: throw new Error(`signJwt: unsupported alg ${alg}`)
  }
  return `${input}.${signature.toString('base64url')}`
}

/**
 * A fresh key pair for `alg` ('RS256', 'ES256' on P-256, 'EdDSA' on
 * Ed25519), with the public key as an SPKI PEM string.
 */
export function jwtKeyPair (alg) {
  let pair
  switch (alg) {
    case 'RS256': pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }); break
    case 'ES256': pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }); break
    case 'EdDSA': pair = crypto.generateKeyPairSync('ed25519'); break
    default: throw new Error(`jwtKeyPair: unsupported alg ${alg}`)
  }
  return { privateKey: pair.privateKey, publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }) }
}

/** Standard claims: `sub`, `exp` (now + `expIn` s) and the `docs` grants. */
export function jwtClaims ({ sub = 'tester', docs = {}, expIn = 3600, ...rest } = {}) {
  return { sub, exp: Math.floor(Date.now() / 1000) + expIn, docs, ...rest }
}

/** Write `content` to a file in a temp directory removed after test `t`. */
export function writeTempFile (t, name, content) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-e2e-file-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, name)
  fs.writeFileSync(file, content)
  return file
}

/** VmRSS / VmHWM (KiB) of a process, from /proc/<pid>/status (Linux). */
export function procMemory (pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => {
    const m = status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))
    return m ? Number(m[1]) : NaN
  }
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') }
}

// ---------------------------------------------------------------------------
// Apache Kafka clusters of a test's own

/** The launcher for Apache Kafka brokers (jars from Maven Central, cached). */
export const KAFKA_SH = path.join(REPO_ROOT, 'tests', 'kafka', 'kafka.sh')

/**
 * An Apache Kafka cluster (KRaft, 1 or 3 nodes) of a test's own, started by
 * tests/kafka/kafka.sh on free loopback ports in a directory of its own.
 * Node numbers are 1-based, as in the brokers' `node.id`.
 */
export class KafkaCluster {
  /** @param {string} dir @param {number} nodes @param {string} bootstrap */
  constructor (dir, nodes, bootstrap) {
    this.dir = dir
    this.nodes = nodes
    /** `host:port,...` of every node. */
    this.bootstrap = bootstrap
  }

  /**
   * Format and start a cluster of `nodes` brokers, stopped after test `t`.
   * @param {import('node:test').TestContext} t
   * @param {{ nodes?: number }} opts
   */
  static async start (t, { nodes = 1 } = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-kafka-'))
    const cluster = new KafkaCluster(dir, nodes, '')
    t.after(async () => {
      await cluster.down()
      fs.rmSync(dir, { recursive: true, force: true })
    })
    cluster.bootstrap = (await runKafkaSh(['up', dir, String(nodes)], 300000)).trim()
    return cluster
  }

  /** The process id of node `n`. */
  pid (n) { return Number(fs.readFileSync(path.join(this.dir, `n${n}`, 'pid'), 'utf8')) }

  /** `127.0.0.1:port` of node `n`'s client listener. */
  address (n) { return `${HOST}:${fs.readFileSync(path.join(this.dir, `n${n}`, 'port'), 'utf8').trim()}` }

  /** Send `signal` ('SIGKILL', 'SIGSTOP', 'SIGCONT', 'SIGTERM') to node `n`; SIGKILL waits until it is gone. */
  async signal (n, signal) { await runKafkaSh(['signal', this.dir, String(n), signal.replace(/^SIG/, '')], 30000) }

  /** (Re)start node `n` with its data and wait until it serves clients. */
  async start (n) { await runKafkaSh(['start', this.dir, String(n)], 240000) }

  /** Stop every node (TERM, then KILL after a grace period). */
  async down () { await runKafkaSh(['down', this.dir], 60000).catch(() => {}) }

  /** The last lines of node `n`'s log. */
  log (n, lines = 40) {
    try {
      return fs.readFileSync(path.join(this.dir, `n${n}`, 'broker.log'), 'utf8').split('\n').slice(-lines).join('\n')
    } catch { return '' }
  }
}

/** Run kafka.sh with `args`, bounded by `timeout` ms; resolves with its stdout. */
function runKafkaSh (args, timeout) {
  return new Promise((resolve, reject) => {
    const child = spawn(KAFKA_SH, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(out)
      else reject(new Error(`kafka.sh ${args.join(' ')}: ${signal ?? `exit ${code}`}\n${err}`))
    })
  })
}
