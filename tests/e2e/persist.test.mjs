// The persistence worker (`weft persist`) with nodes, a real Apache Kafka
// broker (WEFT_TEST_KAFKA) and a real PostgreSQL (WEFT_TEST_POSTGRES_URL,
// an admin URL: each test creates a database of its own).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, sleep, now, report, Y, KafkaCluster, assertTokensOnce
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const skip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'
const TYPES = { text: [], map: [], array: ['array'] }

function psql (url, sql) {
  const result = spawnSync('psql', [url, '-qtAc', sql], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, `psql ${sql}: ${result.stderr}`)
  return result.stdout.trim()
}

/** A fresh database, dropped after the test; returns its URL. */
function freshDatabase (t) {
  const name = `weft_e2e_${crypto.randomBytes(6).toString('hex')}`
  psql(POSTGRES, `CREATE DATABASE ${name}`)
  t.after(() => psql(POSTGRES, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(POSTGRES)
  url.pathname = `/${name}`
  return url.toString()
}

function clusterArgs (topic, node) {
  return ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--node-id', node, '--kafka-fetch-wait-ms', '10']
}

function startNode (t, { topic, store, index }) {
  return startWeft(t, { name: `node-${index}`, store, args: clusterArgs(topic, `node-${index}`) })
}

function startWorker (t, { topic, store, index, timeout = 15000, group = `group-${topic}` }) {
  return startWeft(t, {
    ready: { timeout },
    name: `worker-${index}`,
    command: 'persist',
    store,
    args: [
      ...clusterArgs(topic, `worker-${index}`),
      // a group of this test's own: no member of another test's group
      '--group', group,
      '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s'
    ]
  })
}

async function metrics (server) {
  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  assert.equal(res.status, 200)
  const text = await res.text()
  const value = (name) => {
    const match = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm'))
    return match ? Number(match[1]) : NaN
  }
  return { text, value }
}

/**
 * Poll an asynchronous condition on state outside the clients (the
 * database, a worker's metrics), which emits no event: every 100 ms, at
 * most `timeout` ms. Returns the time it took.
 */
async function eventually (predicate, { timeout = 30000, what = 'condition' } = {}) {
  const started = now()
  for (let attempt = 0; attempt <= timeout / 100; attempt++) {
    if (await predicate()) return now() - started
    await sleep(100)
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

e2e('persist: two nodes and two workers on PostgreSQL; a worker and a node SIGKILLed mid-edit; fresh nodes load every document exactly once', { skip, timeout: 240000 }, async (t) => {
  const store = freshDatabase(t)
  const topic = `persist-${crypto.randomUUID()}`
  const nodes = [await startNode(t, { topic, store, index: 0 }), await startNode(t, { topic, store, index: 1 })]
  const workers = [await startWorker(t, { topic, store, index: 0 }), await startWorker(t, { topic, store, index: 1 })]
  const docs = ['persist/a', 'persist/b', 'persist/c']
  const writers = []
  for (const doc of docs) {
    for (let i = 0; i < 2; i++) writers.push(createClient(t, nodes[i], doc, { name: `${doc}@node-${i}`, maxBackoffTime: 200 }))
  }
  await waitSynced(writers, { timeout: 20000 })
  const INSERTS = 60
  const expected = new Map(docs.map(doc => [doc, []]))
  let issued = 0
  const total = INSERTS * writers.length
  const chaos = (async () => {
    await waitFor(() => issued >= total * 0.3, { on: writers, timeout: 60000, what: 'edits before the worker kill' })
    await workers[0].kill()
    await sleep(200)
    // It joins once the group expelled its dead self (session timeout 10 s)
    // and rebalanced.
    await workers[0].restart({ timeout: 45000 })
    await waitFor(() => issued >= total * 0.6, { on: writers, timeout: 60000, what: 'edits before the node kill' })
    await nodes[1].kill()
    await sleep(200)
    await nodes[1].restart()
    await waitSynced(writers, { timeout: 20000, what: 'writers of node-1 to reconnect' })
  })()
  await Promise.all([chaos, ...writers.map(async (w) => {
    for (let i = 0; i < INSERTS; i++) {
      const token = `${w.name}-${i}`
      expected.get(w.docName).push(token)
      w.doc.getArray('array').push([token])
      issued++
      await sleep(10)
    }
  })])
  for (const doc of docs) {
    const group = writers.filter(w => w.docName === doc)
    await waitConverged(group, { types: TYPES, timeout: 30000, what: `${doc} writers to converge` })
    for (const w of group) assertTokensOnce(w, expected.get(doc))
  }

  // The workers catch up: every document has a snapshot covering its edits.
  const caughtUp = now()
  await eventually(() => {
    const rows = Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`))
    return rows === docs.length
  }, { timeout: 30000, what: 'a snapshot of every document' })
  await eventually(async () => {
    const lags = await Promise.all(workers.map(async (w) => (await metrics(w)).value('weft_persist_lag_records')))
    return lags.every(lag => lag === 0)
  }, { timeout: 15000, what: 'both workers to report no lag' })
  report('persist: workers caught up (snapshots of every document, lag 0) after the last edit', now() - caughtUp)
  const folded = (await Promise.all(workers.map(async (w) => (await metrics(w)).value('weft_persist_records_folded_total')))).reduce((a, b) => a + b, 0)
  // A figure, not a bound: what the killed worker folded into a snapshot
  // before it died is in no surviving counter and is not folded again. That
  // every record is inside a stored snapshot is checked below, by a fresh
  // worker that finds nothing left to fold.
  console.log(`[measure] persist: records folded by the workers alive at the end: ${folded} (${total} edits issued)`)
  assert.ok(folded > 0, 'the workers alive at the end folded records')

  // Stop everything; fresh nodes (and workers) load every document from
  // the snapshots plus the records after them.
  for (const w of writers) w.destroy()
  for (const server of [...nodes, ...workers]) await server.stop()
  const fresh = [await startNode(t, { topic, store, index: 2 }), await startNode(t, { topic, store, index: 3 })]
  for (const [i, doc] of docs.entries()) {
    const started = now()
    const reader = createClient(t, fresh[i % 2], doc, { name: `fresh reader ${doc}` })
    await waitSynced(reader, { timeout: 20000 })
    report(`persist: fresh node loaded ${doc} (${expected.get(doc).length} edits) from snapshot + replay`, now() - started)
    assertTokensOnce(reader, expected.get(doc))
  }
  // A worker with no committed offsets at all (a group of its own: the
  // test broker keeps stopped members in a group for long) reads the topic
  // from the start on top of the stored snapshots: everything is covered,
  // so it folds and writes nothing, and its lag drains to 0.
  const freshWorker = await startWorker(t, { topic, store, index: 2, group: `fresh-${topic}` })
  await eventually(async () => (await metrics(freshWorker)).value('weft_persist_lag_records') === 0, {
    timeout: 20000, what: 'the fresh worker to catch up'
  })
  const { value } = await metrics(freshWorker)
  assert.equal(value('weft_persist_records_folded_total'), 0, 'every record was inside a stored snapshot')
  assert.equal(value('weft_persist_snapshots_written_total'), 0, 'nothing to write')
})

e2e('persist: readiness and metrics of a worker', { skip, timeout: 60000 }, async (t) => {
  const store = freshDatabase(t)
  const topic = `persist-ready-${crypto.randomUUID()}`
  const node = await startNode(t, { topic, store, index: 0 })
  const worker = await startWorker(t, { topic, store, index: 0 })
  const client = createClient(t, node, 'persist/ready', { name: 'writer' })
  await waitSynced(client)
  client.doc.getArray('array').push(['x'])
  await eventually(async () => (await metrics(worker)).value('weft_persist_snapshots_written_total') >= 1, {
    timeout: 20000, what: 'a snapshot written'
  })
  const { text, value } = await metrics(worker)
  for (const name of ['weft_persist_lag_records', 'weft_persist_partitions', 'weft_persist_records_folded_total', 'weft_persist_snapshots_written_total']) {
    assert.match(text, new RegExp(`^${name}`, 'm'), `/metrics has ${name}`)
  }
  assert.ok(value('weft_persist_snapshot_seconds_count') >= 1, 'the snapshot write timed')
  assert.ok(value('weft_persist_snapshot_bytes_sum') > 0, 'the snapshot size observed')
  // The node's live consumer reports its lag per partition (librdkafka
  // statistics, every 5 s): caught up, so 0 everywhere.
  await eventually(async () => (await metrics(node)).text.includes('weft_bus_consumer_lag{'), {
    timeout: 20000, what: 'the node\'s consumer lag'
  })
  const lags = [...(await metrics(node)).text.matchAll(/^weft_bus_consumer_lag\{[^}]*\} (\S+)$/gm)].map((m) => Number(m[1]))
  assert.ok(lags.length > 0 && lags.every((lag) => lag >= 0), `consumer lag samples: ${lags}`)
  const ready = await fetch(`${worker.httpUrl}/readyz`)
  assert.equal(ready.status, 200)
  const stopped = await worker.stop()
  assert.equal(stopped.code, 0)
})

e2e('persist: a large document (200,000 operations, a few MB) syncs across nodes, is snapshotted, and fresh nodes load it from snapshot + replay and from the whole log', { skip, timeout: 240000 }, async (t) => {
  const store = freshDatabase(t)
  const emptyStore = freshDatabase(t)
  const topic = `persist-large-${crypto.randomUUID()}`
  const writerNode = await startNode(t, { topic, store, index: 0 })
  const worker = await startWorker(t, { topic, store, index: 0 })
  const doc = 'persist/large'
  const writer = createClient(t, writerNode, doc, { name: 'writer' })
  await waitSynced(writer)

  // A long editing session: 200 transactions of 1,000 single-character
  // inserts and deletes at pseudo-random places, each one update (record).
  const SESSIONS = 200
  const OPS_PER_SESSION = 1000
  let seed = 7
  const rand = () => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed / 0x7fffffff }
  const text = writer.doc.getText('text')
  const written = now()
  for (let session = 0; session < SESSIONS; session++) {
    writer.doc.transact(() => {
      for (let i = 0; i < OPS_PER_SESSION; i++) {
        const length = text.length
        if (length > 10 && rand() < 0.15) text.delete(Math.floor(rand() * length), 1)
        else text.insert(Math.floor(rand() * (length + 1)), String.fromCharCode(97 + (i % 26)))
      }
    })
    // Let the provider's socket drain now and then (bounded memory).
    if (session % 20 === 19) await sleep(1)
  }
  const bytes = Y.encodeStateAsUpdate(writer.doc).length
  const expected = text.toString()
  report(`persist: large document built by the writer (${SESSIONS * OPS_PER_SESSION} ops, ${(bytes / 1e6).toFixed(2)} MB as one update)`, now() - written)

  // Every record is durable once another node's fresh client sees it all.
  const readerNode = await startNode(t, { topic, store: emptyStore, index: 1 })
  const sentAll = now()
  const reader = createClient(t, readerNode, doc, { name: 'reader on node-1' })
  await waitFor(() => reader.doc.getText('text').toString() === expected, {
    on: reader, timeout: 120000, what: 'the reader on node-1 to hold the whole document'
  })
  report('persist: large document complete on a fresh client of another node (load by replay of every record + live)', now() - sentAll)

  const snapshotted = now()
  await eventually(async () => Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`)) === 1 &&
    (await metrics(worker)).value('weft_persist_lag_records') === 0, { timeout: 60000, what: 'the worker to snapshot the document' })
  report('persist: large document snapshotted by the worker (lag 0)', now() - snapshotted)
  const snapshotBytes = Number(psql(store, `SELECT length(state) FROM weft_topic_snapshots WHERE topic = '${topic}'`))
  console.log(`[measure] persist: large document snapshot size: ${snapshotBytes} bytes`)

  // Fresh nodes: one with the snapshot store, one with an empty store (so
  // it replays the whole log). Each loads the document for a new client.
  const loadOn = async (node, label) => {
    const started = now()
    const client = createClient(t, node, doc, { name: label })
    await waitSynced(client, { timeout: 120000 })
    const ms = now() - started
    assert.equal(client.doc.getText('text').toString(), expected, `${label} holds the whole document`)
    client.destroy()
    return ms
  }
  const fromSnapshot = await loadOn(await startNode(t, { topic, store, index: 2 }), 'fresh node, snapshot + replay')
  const fromLog = await loadOn(await startNode(t, { topic, store: emptyStore, index: 3 }), 'fresh node, replay of the whole log')
  report('persist: large document loaded by a fresh node from snapshot + replay', fromSnapshot)
  report(`persist: large document loaded by a fresh node by replaying all ${SESSIONS} records`, fromLog)
})

e2e('persist: the broker restarts on its data under nodes and a worker; the worker catches up and fresh nodes load everything', { skip, timeout: 180000 }, async (t) => {
  const kafka = await KafkaCluster.start(t)
  const store = freshDatabase(t)
  const topic = 'persist-broker-restart'
  const common = ['--kafka-brokers', kafka.bootstrap, '--kafka-topic', topic, '--kafka-partitions', '4',
    '--kafka-fetch-wait-ms', '10', '--kafka-publish-timeout', '2s']
  const node = (i) => startWeft(t, { name: `node-${i}`, store, args: [...common, '--node-id', `node-${i}`] })
  const nodes = [await node(0), await node(1)]
  const worker = await startWeft(t, {
    name: 'worker', command: 'persist', store,
    args: [...common, '--node-id', 'worker', '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s']
  })
  const doc = 'persist/broker-restart'
  const a = createClient(t, nodes[0], doc, { name: 'a@node-0' })
  const b = createClient(t, nodes[1], doc, { name: 'b@node-1' })
  await waitSynced([a, b])
  const expected = []
  const push = (client, token) => { expected.push(token); client.doc.getArray('array').push([token]) }
  for (let i = 0; i < 20; i++) push(i % 2 ? a : b, `before-${i}`)
  await waitConverged([a, b], { types: TYPES })

  await kafka.signal(1, 'SIGKILL')
  for (let i = 0; i < 5; i++) push(a, `down-${i}`)
  // Those edits fail to publish: their session closes (the client keeps them).
  await waitFor(() => a.closeCodes.includes(1011), {
    on: a, timeout: 15000, what: 'the session with unacknowledged edits to close with 1011'
  })
  await kafka.start(1)
  const restarted = now()
  for (let i = 0; i < 20; i++) push(i % 2 ? a : b, `after-${i}`)
  await waitConverged([a, b], { types: TYPES, timeout: 90000, what: 'both clients to converge after the broker restart' })
  report('persist: broker restarted under nodes and a worker; clients converged', now() - restarted)
  for (const client of [a, b]) assertTokensOnce(client, expected)
  const caughtUp = await eventually(async () => {
    const lag = (await metrics(worker)).value('weft_persist_lag_records')
    const row = psql(store, `SELECT covers_offset FROM weft_topic_snapshots WHERE topic = '${topic}'`)
    return lag === 0 && row !== ''
  }, { timeout: 60000, what: 'the worker to catch up after the broker restart' })
  report('persist: worker caught up after the broker restart', caughtUp)
  for (const client of [a, b]) client.destroy()
  for (const server of [...nodes, worker]) await server.stop()
  const fresh = await node(2)
  const reader = createClient(t, fresh, doc, { name: 'fresh reader' })
  await waitSynced(reader, { timeout: 20000 })
  assertTokensOnce(reader, expected)
})
