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
//
// Only 127.0.0.1 is ever contacted, and every loop is bounded in count and
// time.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
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
   */
  constructor ({ port, storeDir, args = [], env = {}, name = 'weft' }) {
    this.port = port
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
  get storeUrl () { return `sqlite://${path.join(this.storeDir, 'weft.db')}` }
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
    const argv = ['serve', '--listen', `${HOST}:${this.port}`, '--store', this.storeUrl, ...this.args]
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
  await server.start()
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

/** Log a measurement line in a uniform, greppable format. */
export function report (label, ms) {
  console.log(`[measure] ${label}: ${fmtMs(ms)}`)
}
