// Broker faults under a working cluster: a three-broker Apache Kafka
// cluster (KRaft; topics RF 3, min.insync.replicas=2; tests/kafka/kafka.sh),
// three `weft serve` nodes (idempotent producer, acks=all, topics created
// with --kafka-replication-factor 3) and two `weft persist` workers on
// PostgreSQL, with unmodified y-websocket and @hocuspocus/provider clients
// editing steadily on every node, each edit a unique token in the
// document's Y.Array "array" (so a lost or doubled edit is countable).
//
// Faults, one after another, each while every client keeps editing:
//   1. SIGKILL the broker leading the documents' partitions; restart it.
//   2. SIGSTOP a broker for 20 s, then SIGCONT.
//   3. A rolling restart of the three brokers (SIGTERM, start; each back
//      in sync before the next).
//   4. Two of three brokers down (SIGKILL) for 15 s: no node acknowledges
//      or shows an update it could not make durable (no other client and
//      no node replica has it; Hocuspocus clients stay unsaved),
//      `/readyz` is 503 with the reason on every node, sessions stay open
//      or close with a documented code, and once the brokers are back every
//      pending edit goes through.
//   5. SIGKILL a persistence worker while a broker is down.
// After each: every edit of every client is exactly once in every replica
// (the clients, each node's document through the REST API, and a fresh
// y-websocket and Hocuspocus client on every node). At the end everything
// is stopped and started again, and fresh clients load every document
// from the workers' PostgreSQL snapshots plus the topic, nothing lost.
//
// The suite prints a table (and writes it as JSON to WEFT_FAULT_REPORT if
// set): per fault the edits made, lost and duplicated (both must be 0),
// the longest a Hocuspocus edit waited for its acknowledgement (the
// provider's sync status; see `Editor`), the recovery time (fault end to
// every replica converged), and the longest any node's `/readyz` was not
// 200 during the phase, with the reasons it gave.
//
// Environment:
//   WEFT_TEST_POSTGRES_URL  admin URL of a PostgreSQL (tests/with-postgres.sh sets it)
//   WEFT_FAULT_LONG=1       longer outages, more documents, faster edits, and the
//                           known-bug reproduction at the end (about 10 minutes)
//   WEFT_FAULT_REPORT       write the fault table as JSON to this file

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

import * as hocuspocus from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, sleep, now, within, Y, WebSocket,
  KafkaCluster, KAFKA_SH
} from '../lib/harness.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if (!POSTGRES && process.env.CI) throw new Error('WEFT_TEST_POSTGRES_URL is not set: run under tests/with-postgres.sh (make fault does)')
const skip = POSTGRES ? false : 'set WEFT_TEST_POSTGRES_URL (tests/with-postgres.sh does)'

const LONG = Boolean(process.env.WEFT_FAULT_LONG)
/** Sizes and durations (ms). */
const PLAN = LONG
  ? { docs: 4, editEvery: 150, warmup: 5000, leaderDown: 20000, stopped: 60000, outage: 45000, workerBrokerDown: 30000, limit: 1500000 }
  : { docs: 2, editEvery: 250, warmup: 2000, leaderDown: 5000, stopped: 20000, outage: 15000, workerBrokerDown: 10000, limit: 600000 }
const NODES = 3
const BROKERS = 3
const PARTITIONS = 3
/** Bounds of the waits after a fault. */
const CONVERGE_TIMEOUT = 90000
const IN_SYNC_TIMEOUT = 90000
/** Close codes OPERATIONS.md documents for a publish that failed or a bus that is away. */
const DOCUMENTED_RECONNECT_CODES = [1011, 1013]

// ---------------------------------------------------------------------------
// Kafka's default partitioner (murmur2 of the key), as Weft computes it.

function murmur2 (bytes) {
  const m = 0x5bd1e995
  let h = 0x9747b28c ^ bytes.length
  const whole = bytes.length >>> 2
  for (let i = 0; i < whole; i++) {
    const at = i * 4
    let k = bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)
    k = Math.imul(k, m)
    k ^= k >>> 24
    k = Math.imul(k, m)
    h = Math.imul(h, m) ^ k
  }
  const rest = whole * 4
  switch (bytes.length & 3) {
    case 3: h ^= bytes[rest + 2] << 16 // falls through
    case 2: h ^= bytes[rest + 1] << 8 // falls through
    case 1: h ^= bytes[rest]; h = Math.imul(h, m)
  }
  h ^= h >>> 13
  h = Math.imul(h, m)
  h ^= h >>> 15
  return h | 0
}
// Kafka's own test vectors (clients' UtilsTest).
assert.equal(murmur2(Buffer.from('21')), -973932308)
assert.equal(murmur2(Buffer.from('foobar')), -790332482)
const partitionOf = (doc) => (murmur2(Buffer.from(doc)) & 0x7fffffff) % PARTITIONS

// ---------------------------------------------------------------------------
// A Kafka admin (TopicAdmin.java, one JVM for the suite): partition leaders
// and in-sync replicas.

class TopicAdmin {
  static async start (t, bootstrap) {
    const lib = spawnSync(KAFKA_SH, ['classpath'], { encoding: 'utf8', timeout: 600000 })
    assert.equal(lib.status, 0, `kafka.sh classpath: ${lib.stderr}`)
    const child = spawn('java', [
      '-Xmx128m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1',
      '-cp', `${lib.stdout.trim()}/*`, path.join(HERE, 'TopicAdmin.java'), bootstrap
    ], { stdio: ['pipe', 'pipe', 'pipe'] })
    const admin = new TopicAdmin(child)
    t.after(() => admin.close())
    return admin
  }

  constructor (child) {
    this.child = child
    this.waiting = []
    this.chain = Promise.resolve()
    this.stderr = ''
    child.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-4000) })
    child.on('exit', () => { for (const w of this.waiting.splice(0)) w({ ok: false, error: `admin exited: ${this.stderr}` }) })
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('@@ ')) return
      this.waiting.shift()?.(JSON.parse(line.slice(3)))
    })
  }

  /** `{ ok, partitions: [{ partition, leader, replicas, isr }] }`, or `{ ok: false, error }`. */
  describe (topic) {
    const asked = this.chain.then(() => within(new Promise((resolve) => {
      this.waiting.push(resolve)
      this.child.stdin.write(`describe ${topic}\n`)
    }), 60000, { ok: false, error: 'no answer within 60 s (JVM starting?)' }))
    this.chain = asked.catch(() => {})
    return asked
  }

  close () {
    try { this.child.stdin.end('quit\n') } catch { /* gone */ }
    setTimeout(() => { try { this.child.kill('SIGKILL') } catch { /* gone */ } }, 2000).unref()
  }
}

// ---------------------------------------------------------------------------
// PostgreSQL

function psql (url, sql) {
  const result = spawnSync('psql', [url, '-qtAc', sql], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, `psql ${sql}: ${result.stderr}`)
  return result.stdout.trim()
}

function freshDatabase (t) {
  const name = `weft_fault_${crypto.randomBytes(6).toString('hex')}`
  psql(POSTGRES, `CREATE DATABASE ${name}`)
  t.after(() => psql(POSTGRES, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(POSTGRES)
  url.pathname = `/${name}`
  return url.toString()
}

// ---------------------------------------------------------------------------
// Sockets that say how they ended: close codes of open sockets the server
// closed (the client did not), HTTP refusals of upgrades (a node that is
// not ready answers 503).

function trackingWebSocket (record) {
  return class extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols)
      let opened = false
      let refused = null
      this.on('open', () => { opened = true })
      this.on('error', (error) => {
        const match = /Unexpected server response: (\d+)/.exec(error.message)
        if (match) refused = Number(match[1])
      })
      this.on('close', (code) => {
        if (opened) {
          if (!this.closedByClient) record.close(code)
        } else {
          record.refused(refused ?? 'no connection')
        }
      })
    }

    close (...args) {
      // ws answers a server's close frame through close() too (after
      // setting _closeFrameReceived): that is not the client's own close.
      if (!this._closeFrameReceived) this.closedByClient = true
      return super.close(...args)
    }
  }
}

/** Counts per phase: `{ closes: {code: n}, refused: {status: n} }`. */
class Outcomes {
  constructor () { this.phase = null; this.byPhase = new Map() }
  _bucket () {
    if (!this.byPhase.has(this.phase)) this.byPhase.set(this.phase, { closes: {}, refused: {} })
    return this.byPhase.get(this.phase)
  }

  close (code) { const b = this._bucket().closes; b[code] = (b[code] || 0) + 1 }
  refused (status) { const b = this._bucket().refused; b[status] = (b[status] || 0) + 1 }
  of (phase) { return this.byPhase.get(phase) || { closes: {}, refused: {} } }
}

// ---------------------------------------------------------------------------
// Editors: y-websocket and Hocuspocus clients, each edit a unique token.

/** Re-checks waiters on Hocuspocus provider events (harness `waitFor` listens to 'change'). */
const hocusEvents = new EventEmitter()
hocusEvents.setMaxListeners(0)

function hocusSocket (t, node, outcomes) {
  const socket = new hocuspocus.HocuspocusProviderWebsocket({
    url: node.wsUrl,
    WebSocketPolyfill: trackingWebSocket(outcomes),
    delay: 200,
    minDelay: 200,
    maxDelay: 1000,
    factor: 1.5
  })
  t.after(() => socket.destroy())
  return socket
}

function hocusClient (t, socket, docName, name) {
  const doc = new Y.Doc()
  const provider = new hocuspocus.HocuspocusProvider({ websocketProvider: socket, name: docName, document: doc })
  provider.attach()
  const client = { kind: 'hocuspocus', name, docName, doc, provider, destroyed: false }
  client.synced = () => provider.synced && provider.unsyncedChanges === 0
  client.destroy = () => {
    if (client.destroyed) return
    client.destroyed = true
    provider.destroy()
    doc.destroy()
  }
  for (const event of ['synced', 'unsyncedChanges', 'status']) provider.on(event, () => hocusEvents.emit('change'))
  t.after(() => client.destroy())
  return client
}

function ywsClient (t, node, docName, name, outcomes) {
  const client = createClient(t, node, docName, { name, maxBackoffTime: 500, WebSocketPolyfill: trackingWebSocket(outcomes) })
  client.kind = 'y-websocket'
  client.synced = () => client.provider.synced
  return client
}

/**
 * An editing client: pushes a unique token every `PLAN.editEvery` ms while
 * editing is on, and remembers each token's phase.
 *
 * For a Hocuspocus client it also measures how long each edit waited for
 * its acknowledgement. Each edit is one update message (the provider's
 * `unsyncedChanges` goes up by one) and Weft answers a socket's updates of
 * a document in commit order with one sync status each (down by one), so
 * acknowledgements pair with pending edits first in, first out. On every
 * (re)connection the provider resets the count to 1 and sends its whole
 * state as one SyncStep2: the edits still pending then are acknowledged
 * together with that message, as one group.
 */
class Editor {
  constructor (client, node) {
    this.client = client
    this.node = node
    this.count = 0
    /** @type {{ token: string, phase: string, at: number }[]} */
    this.made = []
    /** Hocuspocus: groups of edits awaiting one acknowledgement each, oldest first. */
    this.pending = []
    this.timer = null
    if (client.kind === 'hocuspocus') {
      const provider = client.provider
      let previous = provider.unsyncedChanges
      let resetting = false
      const reset = provider.resetUnsyncedChanges.bind(provider)
      provider.resetUnsyncedChanges = () => {
        resetting = true
        reset()
      }
      provider.on('unsyncedChanges', ({ number }) => {
        if (resetting) {
          resetting = false
          // Everything pending goes again in the SyncStep2 that answers the
          // server's SyncStep1: one acknowledgement for all of it (an empty
          // SyncStep2 is acknowledged too).
          this.pending = [this.pending.flat()]
        } else if (number < previous) {
          const at = now()
          for (let acknowledged = previous - number; acknowledged > 0 && this.pending.length; acknowledged--) {
            for (const edit of this.pending.shift()) Editor.recordWait(edit.phase, at - edit.at)
          }
        }
        if (number === 0) {
          const at = now()
          for (const edit of this.pending.flat()) Editor.recordWait(edit.phase, at - edit.at)
          this.pending = []
        }
        previous = number
      })
    }
  }

  static recordWait (phase, ms) {
    if (!Editor.waits.has(phase)) Editor.waits.set(phase, [])
    Editor.waits.get(phase).push(ms)
  }

  /** The longest and the median acknowledgement wait of a phase's Hocuspocus edits. */
  static waitsOf (phase) {
    const waits = [...(Editor.waits.get(phase) || [])].sort((a, b) => a - b)
    if (!waits.length) return { maxAckWaitMs: null, medianAckWaitMs: null, acknowledged: 0 }
    return {
      maxAckWaitMs: Math.round(waits[waits.length - 1]),
      medianAckWaitMs: Math.round(waits[Math.floor(waits.length / 2)]),
      acknowledged: waits.length
    }
  }

  edit (phase) {
    const token = `${this.client.name}#${this.count++}`
    const edit = { token, phase, at: now() }
    this.made.push(edit)
    if (this.client.kind === 'hocuspocus') this.pending.push([edit])
    this.client.doc.getArray('array').push([token])
  }

  start (phase) {
    this.stop()
    const jitter = Math.floor(Math.random() * PLAN.editEvery)
    this.timer = setTimeout(() => {
      this.edit(phase)
      this.timer = setInterval(() => this.edit(phase), PLAN.editEvery)
    }, jitter)
  }

  stop () {
    clearTimeout(this.timer)
    clearInterval(this.timer)
    this.timer = null
  }
}
/** Per phase, every acknowledged Hocuspocus edit's wait (ms). */
Editor.waits = new Map()

// ---------------------------------------------------------------------------
// Replicas and their comparison

function tally (list) {
  const counts = new Map()
  for (const token of list) counts.set(token, (counts.get(token) || 0) + 1)
  return counts
}

/** Tokens of `expected` missing from `list`, and tokens in it more than once. */
function compare (list, expected) {
  const counts = tally(list)
  const missing = [...expected].filter((token) => !counts.has(token))
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([token]) => token)
  const unexpected = [...counts.keys()].filter((token) => !expected.has(token))
  return { missing, duplicated, unexpected }
}

/** A node's own replica of `doc`, through the REST API. */
async function nodeArray (node, doc) {
  const res = await fetch(`${node.httpUrl}/api/documents/${encodeURIComponent(doc)}?array=array`, {
    headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10000)
  })
  if (res.status === 404) return []
  if (res.status !== 200) throw new Error(`GET ${doc} on ${node.name}: HTTP ${res.status} ${await res.text()}`)
  const body = await res.json()
  return body.array?.array ?? []
}

async function readyz (server) {
  try {
    const res = await fetch(`${server.httpUrl}/readyz`, { signal: AbortSignal.timeout(10000) })
    const text = await res.text()
    let body = null
    try { body = JSON.parse(text) } catch { /* asserted by callers */ }
    return { status: res.status, body, text }
  } catch (error) {
    return { status: 0, body: null, text: error.message }
  }
}

async function metrics (server) {
  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  return (name) => {
    const match = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm'))
    return match ? Number(match[1]) : NaN
  }
}

/**
 * Poll state that emits no event (a broker's metadata, a node's HTTP
 * answers, a worker's metrics): every `every` ms, at most `timeout` ms.
 */
async function eventually (predicate, { timeout, every = 250, what }) {
  const started = now()
  let last
  for (let attempt = 0; attempt <= timeout / every + 1; attempt++) {
    last = await predicate()
    if (last === true) return now() - started
    if (now() - started >= timeout) break
    await sleep(every)
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${typeof last === 'string' ? `: ${last}` : ''}`)
}

/**
 * Watches `/readyz` of every node (polled every 500 ms: no event) until
 * `stop()`, which returns per node how long it was not ready in total and
 * the reasons it gave.
 */
function watchReadiness (nodes) {
  const seen = new Map(nodes.map((node) => [node.name, { notReadyMs: 0, since: null, reasons: new Set() }]))
  let running = true
  const loop = (async () => {
    while (running) {
      for (const node of nodes) {
        const answer = await readyz(node)
        const state = seen.get(node.name)
        const at = now()
        if (answer.status === 200) {
          if (state.since !== null) state.notReadyMs += at - state.since
          state.since = null
        } else {
          state.since ??= at
          state.reasons.add(answer.body?.error?.details?.replace(/\d+ s\b/, 'N s') ?? `HTTP ${answer.status}`)
        }
      }
      await sleep(500)
    }
  })()
  return {
    async stop () {
      running = false
      await loop
      const at = now()
      return Object.fromEntries([...seen].map(([name, state]) => [name, {
        notReadyMs: Math.round(state.notReadyMs + (state.since === null ? 0 : at - state.since)),
        reasons: [...state.reasons]
      }]))
    }
  }
}

const fmt = (ms) => (ms === null || ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`)

function printTable (rows) {
  const head = ['fault', 'edits', 'lost', 'duplicated', 'longest ack wait', 'recovery', 'not ready', 'server closes', 'refused upgrades']
  const body = rows.map((r) => [
    r.fault, String(r.edits), String(r.lost), String(r.duplicated), fmt(r.maxAckWaitMs), fmt(r.recoveryMs), fmt(r.notReadyMs),
    Object.entries(r.closes).map(([c, n]) => `${c}x${n}`).join(' ') || '-',
    Object.entries(r.refused).map(([c, n]) => `${c}x${n}`).join(' ') || '-'
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)))
  const line = (cells) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  console.log(['', line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n'))
  for (const r of rows) if (r.notes.length) console.log(`[fault] ${r.fault}: ${r.notes.join('; ')}`)
  for (const r of rows) if (r.notReadyReasons?.length) console.log(`[fault] ${r.fault}: /readyz said ${r.notReadyReasons.map((reason) => JSON.stringify(reason)).join(', ')}`)
}

// ---------------------------------------------------------------------------

e2e(`faults: three brokers (RF 3, min ISR 2), three nodes, two workers; leader kill, broker stop, rolling restart, quorum loss, worker kill; nothing lost or doubled${LONG ? ' (long)' : ''}`, { skip, timeout: PLAN.limit }, async (t) => {
  const suiteStarted = now()
  const rows = []
  const reportFile = process.env.WEFT_FAULT_REPORT
  t.after(() => {
    printTable(rows)
    console.log(`[measure] fault suite: ${fmt(now() - suiteStarted)} (${LONG ? 'long' : 'short'} plan)`)
    if (reportFile) {
      fs.writeFileSync(reportFile, JSON.stringify({
        plan: LONG ? 'long' : 'short', brokers: BROKERS, nodes: NODES, workers: 2, partitions: PARTITIONS, docs: PLAN.docs,
        editEveryMs: PLAN.editEvery, durationMs: Math.round(now() - suiteStarted), faults: rows
      }, null, 2) + '\n')
    }
  })

  // -- the cluster ----------------------------------------------------------
  const kafka = await KafkaCluster.start(t, { nodes: BROKERS })
  console.log(`[fault] brokers ready: ${kafka.bootstrap} (${fmt(now() - suiteStarted)})`)
  const admin = await TopicAdmin.start(t, kafka.bootstrap)
  const store = freshDatabase(t)
  const topic = `fault-${crypto.randomUUID()}`
  const group = `group-${topic}`
  const kafkaArgs = (id) => [
    '--kafka-brokers', kafka.bootstrap, '--kafka-topic', topic, '--kafka-partitions', String(PARTITIONS),
    '--kafka-replication-factor', String(BROKERS), '--node-id', id, '--kafka-fetch-wait-ms', '10'
  ]
  const nodes = []
  for (let i = 0; i < NODES; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      store,
      args: kafkaArgs(`node-${i}`),
      // where each replay starts (checked after the full restart)
      env: { RUST_LOG: 'weft=info,weft_kafka::replay=debug' },
      ready: { timeout: 60000 }
    }))
  }
  const workers = []
  for (let i = 0; i < 2; i++) {
    workers.push(await startWeft(t, {
      name: `worker-${i}`,
      command: 'persist',
      store,
      args: [...kafkaArgs(`worker-${i}`), '--group', group, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s'],
      ready: { timeout: 60000 }
    }))
  }

  // -- the clients ----------------------------------------------------------
  const outcomes = new Outcomes()
  const docs = Array.from({ length: PLAN.docs }, (_, i) => `fault/doc-${i}`)
  const editors = []
  const sockets = nodes.map((node) => hocusSocket(t, node, outcomes))
  for (const doc of docs) {
    for (const [n, node] of nodes.entries()) {
      editors.push(new Editor(ywsClient(t, node, doc, `y:${doc}@node-${n}`, outcomes), node))
      editors.push(new Editor(hocusClient(t, sockets[n], doc, `h:${doc}@node-${n}`), node))
    }
  }
  const clients = editors.map((e) => e.client)
  const waitOn = [...clients.filter((c) => c.kind === 'y-websocket'), ...clients.filter((c) => c.kind === 'hocuspocus').map((c) => c.doc), hocusEvents]
  await waitFor(() => clients.every((c) => c.synced()), {
    on: waitOn, timeout: 60000, what: 'every client to sync', detail: () => clients.filter((c) => !c.synced()).map((c) => c.name).join(', ')
  })
  console.log(`[fault] ${clients.length} clients synced on ${NODES} nodes, ${docs.length} documents, partitions ${docs.map(partitionOf)}`)

  const expectedOf = (doc) => new Set(editors.filter((e) => e.client.docName === doc).flatMap((e) => e.made.map((m) => m.token)))

  // -- helpers over the cluster --------------------------------------------
  const watchedTopics = [topic, `${topic}-awareness`, '__consumer_offsets']
  /** Every partition of the topics led and fully in sync (3 replicas). */
  const waitInSync = (what) => eventually(async () => {
    for (const name of watchedTopics) {
      const d = await admin.describe(name)
      if (!d.ok) return `${name}: ${d.error}`
      const lagging = d.partitions.filter((p) => p.leader < 0 || p.isr.length < BROKERS)
      if (lagging.length) return `${name}: ${JSON.stringify(lagging)}`
    }
    return true
  }, { timeout: IN_SYNC_TIMEOUT, every: 500, what: `every partition in sync ${what}` })

  /** The broker leading most of the documents' partitions. */
  async function docLeader () {
    const d = await admin.describe(topic)
    assert.ok(d.ok, `describe ${topic}: ${d.error}`)
    const votes = new Map()
    for (const doc of docs) {
      const leader = d.partitions.find((p) => p.partition === partitionOf(doc)).leader
      votes.set(leader, (votes.get(leader) || 0) + 1)
    }
    const [leader] = [...votes].sort((a, b) => b[1] - a[1])[0]
    return { leader, partitions: d.partitions }
  }

  /** Waits until a broker process is gone (SIGTERM), bounded; SIGKILL after. */
  async function waitExited (n, timeout = 30000) {
    const pid = kafka.pid(n)
    const alive = () => { try { process.kill(pid, 0); return true } catch { return false } }
    try {
      await eventually(() => !alive(), { timeout, every: 100, what: `broker ${n} (pid ${pid}) to exit` })
    } catch {
      await kafka.signal(n, 'SIGKILL')
    }
  }

  /**
   * Every client converged on every token of its document, exactly once;
   * every Hocuspocus edit acknowledged; every node's replica and fresh
   * clients on every node agree. Returns the counts and when the live
   * replicas (clients and nodes) converged.
   */
  async function verify (label) {
    const expected = new Map(docs.map((doc) => [doc, expectedOf(doc)]))
    const problems = []
    let convergedAt = null
    // When each client first held every edit (and had its own acknowledged).
    const doneAt = new Map()
    const done = (c) => {
      const ok = c.doc.getArray('array').length === expected.get(c.docName).size && c.synced()
      if (ok && !doneAt.has(c.name)) doneAt.set(c.name, now())
      return ok
    }
    try {
      await waitFor(() => clients.map(done).every(Boolean), {
        on: waitOn,
        timeout: CONVERGE_TIMEOUT,
        what: `${label}: every client to converge`,
        detail: () => clients.filter((c) => !(c.doc.getArray('array').length === expected.get(c.docName).size && c.synced()))
          .map((c) => `${c.name}: ${c.doc.getArray('array').length}/${expected.get(c.docName).size} synced=${c.synced()}${c.kind === 'hocuspocus' ? ` unsynced=${c.provider.unsyncedChanges}` : ''}`).join('\n')
      })
      await eventually(async () => {
        for (const node of nodes) {
          for (const doc of docs) {
            const list = await nodeArray(node, doc)
            if (list.length !== expected.get(doc).size) return `${node.name} ${doc}: ${list.length}/${expected.get(doc).size}`
          }
        }
        return true
      }, { timeout: CONVERGE_TIMEOUT, every: 200, what: `${label}: every node's replica to converge` })
      convergedAt = now()
    } catch (error) {
      problems.push(error.message)
    }
    // What every replica holds, now.
    const replicas = []
    for (const c of clients) replicas.push({ name: c.name, doc: c.docName, list: c.doc.getArray('array').toJSON() })
    for (const node of nodes) {
      for (const doc of docs) replicas.push({ name: `${node.name} (REST)`, doc, list: await nodeArray(node, doc).catch((e) => { problems.push(e.message); return [] }) })
    }
    for (const [n, node] of nodes.entries()) {
      const socket = hocusSocket(t, node, new Outcomes())
      for (const doc of docs) {
        const fresh = [ywsClient(t, node, doc, `fresh y:${doc}@node-${n}`, new Outcomes()), hocusClient(t, socket, doc, `fresh h:${doc}@node-${n}`)]
        try {
          await waitFor(() => fresh.every((c) => c.synced()), {
            on: [fresh[0], fresh[1].doc, hocusEvents], timeout: 30000, what: `${label}: fresh clients of ${doc} on node-${n} to sync`
          })
        } catch (error) { problems.push(error.message) }
        for (const c of fresh) replicas.push({ name: c.name, doc, list: c.doc.getArray('array').toJSON() })
        for (const c of fresh) c.destroy()
      }
      socket.destroy()
    }
    const lost = new Set()
    const duplicated = new Set()
    for (const r of replicas) {
      const { missing, duplicated: twice, unexpected } = compare(r.list, expected.get(r.doc))
      for (const token of missing) lost.add(token)
      for (const token of twice) duplicated.add(token)
      if (missing.length || twice.length || unexpected.length) {
        problems.push(`${r.name}: ${missing.length} missing (${missing.slice(0, 5)}), ${twice.length} doubled (${twice.slice(0, 5)}), ${unexpected.length} unexpected (${unexpected.slice(0, 5)})`)
      }
    }
    const [lastClient, lastAt] = [...doneAt].sort((a, b) => b[1] - a[1])[0] ?? [null, null]
    return { lost: lost.size, duplicated: duplicated.size, convergedAt, problems, replicas: replicas.length, lastClient, lastAt }
  }

  /**
   * One fault: clients edit from a warm-up before it until `inject`
   * returns; then every replica is verified. `inject(notes, ended)` runs
   * the fault; the fault ends when it calls `ended()` (the brokers serve
   * again), or else when it returns.
   */
  async function fault (name, inject) {
    await waitInSync(`before ${name}`)
    outcomes.phase = name
    const readiness = watchReadiness(nodes)
    const started = now()
    const notes = []
    let endedAt = null
    let extra, faultEnd, result, notReady
    try {
      for (const e of editors) e.start(name)
      await sleep(PLAN.warmup)
      extra = await inject(notes, () => { endedAt = now() })
      faultEnd = endedAt ?? now()
      for (const e of editors) e.stop()
      result = await verify(name)
    } finally {
      for (const e of editors) e.stop()
      notReady = await readiness.stop()
    }
    const edits = editors.reduce((sum, e) => sum + e.made.filter((m) => m.phase === name).length, 0)
    const { closes, refused } = outcomes.of(name)
    const row = {
      fault: name,
      edits,
      lost: result.lost,
      duplicated: result.duplicated,
      ...Editor.waitsOf(name),
      recoveryMs: result.convergedAt === null ? null : Math.round(result.convergedAt - faultEnd),
      phaseMs: Math.round(faultEnd - started),
      notReadyMs: Math.max(...Object.values(notReady).map((r) => r.notReadyMs)),
      notReadyReasons: [...new Set(Object.values(notReady).flatMap((r) => r.reasons))],
      replicasChecked: result.replicas,
      closes,
      refused,
      ...extra,
      notes
    }
    if (result.lastClient) notes.push(`last client to converge: ${result.lastClient}, ${fmt(result.lastAt - faultEnd)} after the fault ended`)
    rows.push(row)
    console.log(`[fault] ${name}: ${edits} edits, lost ${row.lost}, duplicated ${row.duplicated}, longest ack wait ${fmt(row.maxAckWaitMs)}, recovered in ${fmt(row.recoveryMs)}; closes ${JSON.stringify(closes)}, refused ${JSON.stringify(refused)}`)
    assert.deepEqual(result.problems, [], `${name}: every replica holds every edit exactly once`)
    assert.equal(row.lost, 0, `${name}: lost edits`)
    assert.equal(row.duplicated, 0, `${name}: duplicated edits`)
    const undocumented = Object.keys(closes).map(Number).filter((code) => !DOCUMENTED_RECONNECT_CODES.includes(code))
    assert.deepEqual(undocumented, [], `${name}: sessions closed only with documented reconnect codes (${JSON.stringify(closes)})`)
    return row
  }

  // -- 1. the leader of the documents' partitions: SIGKILL, restart ---------
  await fault('1 leader SIGKILL', async (notes) => {
    const { leader, partitions } = await docLeader()
    notes.push(`broker ${leader} led partitions ${partitions.filter((p) => p.leader === leader).map((p) => p.partition)} (documents on ${docs.map(partitionOf)})`)
    await kafka.signal(leader, 'SIGKILL')
    await sleep(PLAN.leaderDown)
    await kafka.start(leader)
    return { broker: leader }
  })

  // -- 2. a broker stopped (SIGSTOP) for 20 s ------------------------------
  await fault('2 broker SIGSTOP', async (notes) => {
    const { leader } = await docLeader()
    notes.push(`broker ${leader} (the documents' leader) stopped for ${PLAN.stopped / 1000} s`)
    await kafka.signal(leader, 'SIGSTOP')
    try {
      await sleep(PLAN.stopped)
    } finally {
      await kafka.signal(leader, 'SIGCONT')
    }
    return { broker: leader }
  })

  // -- 3. rolling restart ----------------------------------------------------
  await fault('3 rolling restart', async (notes) => {
    for (let n = 1; n <= BROKERS; n++) {
      if (n > 1) await waitInSync(`before restarting broker ${n}`)
      const stopped = now()
      await kafka.signal(n, 'SIGTERM')
      await waitExited(n)
      await kafka.start(n)
      notes.push(`broker ${n} down ${fmt(now() - stopped)}`)
    }
    return {}
  })

  // -- 4. two of three brokers down ------------------------------------------
  await fault('4 two brokers down', async (notes, ended) => {
    const { leader } = await docLeader()
    const victims = [leader, leader % BROKERS + 1]
    notes.push(`brokers ${victims} SIGKILLed for ${PLAN.outage / 1000} s (broker ${6 - victims[0] - victims[1]} alone)`)
    for (const n of victims) await kafka.signal(n, 'SIGKILL')
    const down = now()
    // Readiness on every node, polled through the outage (no event).
    const notReady = new Map()
    let polling = true
    const poller = (async () => {
      while (polling) {
        for (const node of nodes) {
          if (notReady.has(node.name)) continue
          const answer = await readyz(node)
          if (answer.status === 503) notReady.set(node.name, { afterMs: Math.round(now() - down), body: answer.body })
        }
        await sleep(500)
      }
    })()
    try {
      await sleep(PLAN.outage - 1000)
    } finally {
      polling = false
      await poller
    }
    // No edit made since the quorum was lost reached anyone but its author.
    const afterLoss = new Map()
    for (const e of editors) {
      for (const m of e.made) if (m.at > down) afterLoss.set(m.token, e.client)
    }
    const leaked = []
    for (const c of clients) {
      for (const token of c.doc.getArray('array').toJSON()) {
        const author = afterLoss.get(token)
        if (author && author !== c) leaked.push(`${token} on ${c.name}`)
      }
    }
    for (const node of nodes) {
      for (const doc of docs) {
        for (const token of await nodeArray(node, doc)) if (afterLoss.has(token)) leaked.push(`${token} on ${node.name}`)
      }
    }
    const unsaved = editors.filter((e) => e.client.kind === 'hocuspocus' && e.made.some((m) => m.at > down))
    const wronglySaved = unsaved.filter((e) => !(e.client.provider.unsyncedChanges > 0 && e.client.provider.hasUnsyncedChanges))
    notes.push(`${afterLoss.size} edits made during the outage, none seen by another client or node; ${unsaved.length} Hocuspocus clients unsaved (unsyncedChanges ${unsaved.map((e) => e.client.provider.unsyncedChanges)})`)
    const restarted = now()
    await Promise.all(victims.map((n) => kafka.start(n)))
    ended()
    notes.push(`brokers back after ${fmt(now() - down)} (restart took ${fmt(now() - restarted)})`)
    assert.deepEqual(leaked, [], 'no edit made without a broker quorum reached another client or node replica')
    assert.ok(afterLoss.size > 0, 'clients edited during the outage')
    assert.deepEqual(wronglySaved.map((e) => e.client.name), [], 'every Hocuspocus client that edited during the outage shows unsynced changes')
    for (const node of nodes) {
      const seen = notReady.get(node.name)
      assert.ok(seen, `${node.name}: /readyz answered 503 during the outage`)
      assert.equal(seen.body?.error?.code, 503, `${node.name}: JSON refusal body ${JSON.stringify(seen.body)}`)
      assert.match(seen.body.error.details, /message bus/, `${node.name}: /readyz says why`)
    }
    notes.push(`/readyz 503 on every node after ${[...notReady.values()].map((s) => fmt(s.afterMs))}: "${[...notReady.values()][0].body.error.details}"`)
    const readyAgain = await eventually(async () => {
      for (const node of nodes) {
        const answer = await readyz(node)
        if (answer.status !== 200) return `${node.name}: ${answer.status} ${answer.text}`
      }
      return true
    }, { timeout: 60000, every: 250, what: 'every node ready again after the brokers returned' })
    notes.push(`/readyz 200 on every node ${fmt(readyAgain)} after the brokers served again`)
    return { brokers: victims, readyz503AfterMs: [...notReady.values()].map((s) => s.afterMs), readyAgainMs: Math.round(readyAgain) }
  })

  // -- 5. a persistence worker SIGKILLed while a broker is down --------------
  await fault('5 worker SIGKILL, broker down', async (notes) => {
    const { leader } = await docLeader()
    await kafka.signal(leader, 'SIGKILL')
    await sleep(1000)
    await workers[0].kill()
    notes.push(`broker ${leader} SIGKILLed, then worker-0, for ${PLAN.workerBrokerDown / 1000} s`)
    await sleep(PLAN.workerBrokerDown)
    await kafka.start(leader)
    // It joins once the group expelled its dead self and rebalanced.
    await workers[0].restart({ timeout: 60000 })
    return { broker: leader }
  })

  // -- the workers catch up: a snapshot of every document, lag 0 -------------
  const caughtUp = await eventually(async () => {
    const rows = Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`))
    if (rows !== docs.length) return `${rows} of ${docs.length} documents snapshotted`
    for (const w of workers) {
      const lag = (await metrics(w))('weft_persist_lag_records')
      if (lag !== 0) return `${w.name} lag ${lag}`
    }
    return true
  }, { timeout: 60000, every: 250, what: 'the workers to snapshot every document with no lag' })
  /** doc -> { partition, offset } the stored snapshot covers. */
  const snapshots = new Map(psql(store, `SELECT doc, partition_id, covers_offset FROM weft_topic_snapshots WHERE topic = '${topic}' ORDER BY doc`)
    .split('\n').map((line) => line.split('|')).map(([doc, partition, offset]) => [doc, { partition: Number(partition), offset: Number(offset) }]))
  const shownSnapshots = [...snapshots].map(([doc, s]) => `${doc} to ${s.partition}:${s.offset}`).join(', ')
  console.log(`[fault] workers caught up ${fmt(caughtUp)} after the last fault's check; snapshots cover ${shownSnapshots}`)

  // -- everything stopped, then started again --------------------------------
  await (async () => {
    const expected = new Map(docs.map((doc) => [doc, expectedOf(doc)]))
    for (const c of clients) c.destroy()
    for (const s of sockets) s.destroy()
    for (const server of [...nodes, ...workers]) await server.stop()
    await kafka.down()
    const restarted = now()
    await Promise.all(Array.from({ length: BROKERS }, (_, i) => kafka.start(i + 1)))
    for (const server of [...workers, ...nodes]) await server.restart({ timeout: 60000 })
    const startedMs = now() - restarted
    const problems = []
    let lost = 0
    let duplicated = 0
    for (const [n, node] of nodes.entries()) {
      const socket = hocusSocket(t, node, new Outcomes())
      for (const doc of docs) {
        const fresh = [ywsClient(t, node, doc, `reload y:${doc}@node-${n}`, new Outcomes()), hocusClient(t, socket, doc, `reload h:${doc}@node-${n}`)]
        try {
          await waitFor(() => fresh.every((c) => c.synced()), { on: [fresh[0], fresh[1].doc, hocusEvents], timeout: 30000, what: `${doc} on node-${n} after the full restart` })
        } catch (error) { problems.push(error.message) }
        for (const c of fresh) {
          const result = compare(c.doc.getArray('array').toJSON(), expected.get(doc))
          lost = Math.max(lost, result.missing.length)
          duplicated = Math.max(duplicated, result.duplicated.length)
          if (result.missing.length || result.duplicated.length || result.unexpected.length) {
            problems.push(`${c.name}: ${result.missing.length} missing, ${result.duplicated.length} doubled, ${result.unexpected.length} unexpected`)
          }
          c.destroy()
        }
      }
      socket.destroy()
    }
    const row = {
      fault: 'full stop and restart',
      edits: 0,
      lost,
      duplicated,
      maxAckWaitMs: null,
      recoveryMs: Math.round(now() - restarted),
      notReadyMs: null,
      closes: {},
      refused: {},
      notes: [`brokers, workers and nodes started again in ${fmt(startedMs)}; ${docs.length} documents x ${NODES} nodes x 2 client kinds`]
    }
    rows.push(row)
    // Each node loaded each document from its snapshot plus the partition
    // after it: every replay since the restart started right after a
    // snapshot's offset (the replay's debug line), none from the start.
    const allowed = new Map()
    for (const s of snapshots.values()) allowed.set(s.partition, [...(allowed.get(s.partition) || []), s.offset + 1])
    const starts = []
    for (const node of nodes) {
      const since = node.logs().split('[harness] start #2').pop()
      for (const match of since.matchAll(/partition replayed.*?partition=(\d+) start=(\d+)/g)) {
        starts.push({ node: node.name, partition: Number(match[1]), start: Number(match[2]) })
      }
    }
    row.notes.push(`loaded from the snapshots (${shownSnapshots}) plus replays from ${starts.map((s) => `${s.partition}:${s.start}`).join(', ')}`)
    assert.deepEqual(problems, [], 'every document loads every edit exactly once after a full restart')
    assert.ok(starts.length >= docs.length, `replays after the restart were logged (${starts.length})`)
    for (const s of starts) {
      assert.ok((allowed.get(s.partition) || []).includes(s.start), `${s.node} replayed partition ${s.partition} from ${s.start}, right after a snapshot (${JSON.stringify([...allowed])})`)
    }
  })()
})

// ---------------------------------------------------------------------------
// Known bug (a todo: reported, not failing the run; long plan only). A
// publish that times out while the brokers have no quorum can still be
// committed: the partition's leader appended the record and, once its
// followers return, the record is in the log. The writing node failed the
// update (its session closed with 1011) and never applied it, and its live
// consumer skips the node's own records, so if the client does not come
// back to re-send the update, that node's replica lacks a record the log,
// the other nodes and the workers' snapshots have, until it unloads the
// document. Later updates that build on the missing one wait in its yrs
// document as well.

e2e('faults (known bug): an update whose publish timed out without a quorum but was committed later reaches every node, its author gone', {
  skip: skip || (LONG ? false : 'long plan only (WEFT_FAULT_LONG=1)'),
  todo: 'the writing node skips its own records, so it never applies one it had failed',
  timeout: 300000
}, async (t) => {
  const kafka = await KafkaCluster.start(t, { nodes: BROKERS })
  const admin = await TopicAdmin.start(t, kafka.bootstrap)
  const topic = `ghost-${crypto.randomUUID()}`
  const args = (id) => [
    '--kafka-brokers', kafka.bootstrap, '--kafka-topic', topic, '--kafka-partitions', '1',
    '--kafka-replication-factor', String(BROKERS), '--node-id', id, '--kafka-publish-timeout', '3s'
  ]
  const a = await startWeft(t, { name: 'node-a', args: args('node-a'), ready: { timeout: 60000 } })
  const b = await startWeft(t, { name: 'node-b', args: args('node-b'), ready: { timeout: 60000 } })
  const doc = 'ghost/doc'
  const author = createClient(t, a, doc, { name: 'author@a', maxBackoffTime: 60000 })
  const reader = createClient(t, b, doc, { name: 'reader@b' })
  await waitSynced([author, reader], { timeout: 30000 })
  author.doc.getArray('array').push(['before'])
  await waitFor(() => reader.doc.getArray('array').length === 1, { on: reader, timeout: 20000, what: 'the first edit on node-b' })
  const inSync = async () => {
    const d = await admin.describe(topic)
    return d.ok && d.partitions[0].isr.length === BROKERS ? d.partitions[0] : `${d.error ?? JSON.stringify(d.partitions)}`
  }
  let partition
  await eventually(async () => { partition = await inSync(); return typeof partition === 'object' }, { timeout: 60000, every: 500, what: 'the partition in sync' })
  // The partition's leader survives; its followers die: it appends what it
  // is sent but cannot commit it.
  const victims = [1, 2, 3].filter((n) => n !== partition.leader)
  for (const n of victims) await kafka.signal(n, 'SIGKILL')
  author.doc.getArray('array').push(['ghost'])
  await waitFor(() => author.closeCodes.length > 0, { on: author, timeout: 20000, what: 'the author\'s session to close (publish timeout)' })
  author.provider.shouldConnect = false
  assert.deepEqual(author.closeCodes, [1011])
  author.destroy()
  assert.deepEqual(reader.doc.getArray('array').toJSON(), ['before'], 'nothing unacknowledged was shown')
  await Promise.all(victims.map((n) => kafka.start(n)))
  await eventually(async () => typeof (await inSync()) === 'object', { timeout: 90000, every: 500, what: 'the partition in sync again' })
  // The log has the record (the worker's snapshots would too): node-b
  // applies it from the topic.
  const committed = await waitFor(() => reader.doc.getArray('array').toJSON().includes('ghost'), { on: reader, timeout: 30000, what: 'the committed record on node-b' })
    .then(() => true, () => false)
  const replicas = { 'node-a': await nodeArray(a, doc), 'node-b': await nodeArray(b, doc) }
  console.log(`[fault] known bug: record committed after its publish failed: ${committed}; replicas ${JSON.stringify(replicas)}`)
  assert.deepEqual(replicas['node-a'], replicas['node-b'], 'both nodes hold the same document')
})
