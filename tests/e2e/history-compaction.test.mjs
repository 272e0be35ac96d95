// History retention on one embedded node: with a short --history-retention,
// a document nobody has open (unloaded) gets its history older than the
// retention folded into a checkpoint by the node's compaction pass. The
// metrics move (a pass, a compacted document, fewer history bytes), the
// document and a named version read as before, and an instant before the
// retention is refused. In a cluster (Kafka + PostgreSQL) `weft persist`
// compacts the shared store's versions: an older restore version goes, the
// named one and the newest stay.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import {
  e2e, startWeft, createClient, waitSynced, waitFor, signJwt, jwtClaims, sleep, metric
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const clusterSkip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const SECRET = 'compaction-e2e-secret-0123456789abcdef'
const alice = signJwt(jwtClaims({ sub: 'alice', docs: { 'hist/**': 'rw' } }), { secret: SECRET })
const RETENTION_MS = 3000

const enc = encodeURIComponent

function api (server, method, route, body) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: {
      authorization: `Bearer ${alice}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' })
    },
    signal: AbortSignal.timeout(15000)
  })
}

async function json (res, status) {
  const text = await res.text()
  assert.equal(res.status, status, text)
  return JSON.parse(text)
}

/** The `text` root over the API (`query` appended), or null on a 404. */
async function textAt (server, name, query = '') {
  const res = await api(server, 'GET', `/documents/${enc(name)}?text=text${query}`)
  if (res.status === 404 && !query) return null
  const body = await json(res, 200)
  return body.text.text
}

/** Polls `check` until it holds (metrics and HTTP reads have no events). */
async function until (check, what, timeout = 15000) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(50)
  }
}

e2e('history compaction: an unloaded document\'s history older than the retention folds into a checkpoint', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, {
    args: [
      '--auth-jwt-secret', SECRET,
      '--history-retention', `${RETENTION_MS}ms`,
      '--version-interval', '1s',
      '--history-compact-interval', '500ms',
      '--doc-unload-grace', '200ms'
    ]
  })
  const name = 'hist/compacted'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  const text = ws.doc.getText('text')
  text.insert(0, 'hello')
  await until(async () => (await textAt(server, name)) === 'hello', 'the API to read the first edit')
  const named = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { name: 'keep' }), 201)
  for (const word of [' brave', ' new', ' world']) text.insert(text.length, word)
  await until(async () => (await textAt(server, name)) === 'hello brave new world', 'the API to read every edit')
  const editedAt = Date.now()
  ws.destroy()
  // Unloaded: no session, past the unload grace (its snapshot written).
  await until(async () => (await metric(server, 'weft_documents_loaded')) === 0, 'the document to unload')

  // The passes before the retention passed measured the history whole.
  let peakBytes = 0
  await until(async () => {
    peakBytes = Math.max(peakBytes, await metric(server, 'weft_history_bytes'))
    return peakBytes > 0 && (await metric(server, 'weft_history_stored_versions')) >= 1
  }, 'a pass to measure the history')
  // Once the last edit is older than the retention, a pass folds it all.
  await sleep(Math.max(0, editedAt + RETENTION_MS - Date.now()))
  const runsBefore = await metric(server, 'weft_history_compaction_runs_total{result="ok"}')
  await until(async () => (await metric(server, 'weft_history_compaction_runs_total{result="ok"}')) >= runsBefore + 2,
    'two more passes, the last after the retention passed')
  assert.ok(await metric(server, 'weft_history_compacted_documents_total') >= 1)
  assert.ok(await metric(server, 'weft_history_bytes') < peakBytes, 'the history bytes shrank')
  assert.ok(await metric(server, 'weft_history_compaction_lag_seconds') <= 2, 'a pass succeeded just now')
  assert.equal(await metric(server, 'weft_documents_loaded'), 0, 'compacted without loading it')

  // The document reads as it was; the named version too; an instant
  // before the retention is refused.
  assert.equal(await textAt(server, name), 'hello brave new world')
  assert.equal(await textAt(server, name, `&version=${named.id}`), 'hello')
  assert.equal(await textAt(server, name, `&at=${enc(new Date().toISOString())}`), 'hello brave new world')
  const before = await api(server, 'GET', `/documents/${enc(name)}?text=text&at=${enc(new Date(editedAt - 1000).toISOString())}`)
  assert.equal(before.status, 400)
  assert.match((await before.json()).error.details, /retention/)
  const versions = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.ok(versions.versions.some(v => v.id === named.id && v.name === 'keep'), 'the named version is kept')
})

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

e2e('history compaction: weft persist folds the shared store\'s versions older than the retention (cluster)', { skip: clusterSkip, timeout: 60000 }, async (t) => {
  const store = freshDatabase(t)
  const topic = `compaction-${crypto.randomUUID()}`
  const cluster = (id) => ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '2', '--node-id', id, '--kafka-fetch-wait-ms', '10']
  const node = await startWeft(t, { name: 'node-0', store, args: ['--auth-jwt-secret', SECRET, ...cluster('node-0')] })
  const worker = await startWeft(t, {
    name: 'worker-0',
    command: 'persist',
    store,
    ready: { timeout: 15000 },
    args: [...cluster('worker-0'), '--group', `group-${topic}`, '--history-retention', `${RETENTION_MS}ms`, '--history-compact-interval', '500ms']
  })
  const name = 'hist/cluster-compacted'
  const ws = createClient(t, node, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  const text = ws.doc.getText('text')
  text.insert(0, 'hello')
  await until(async () => (await textAt(node, name)) === 'hello', 'the API to read the edit')
  const named = await json(await api(node, 'POST', `/documents/${enc(name)}/versions`, { name: 'keep' }), 201)
  const restores = []
  for (const word of [' world', ' again']) {
    text.insert(text.length, word)
    await until(async () => (await textAt(node, name)) === `hello${word}`, 'the API to read the edit')
    restores.push(await json(await api(node, 'POST', `/documents/${enc(name)}/restore`, { version: named.id }), 200))
    await waitFor(() => text.toString() === 'hello', { on: ws.doc, what: 'the client to see the restore' })
  }
  assert.equal(restores[0].kind, 'restore')
  await sleep(Math.max(0, Date.parse(restores[1].at) + RETENTION_MS - Date.now()))
  const runsBefore = await metric(worker, 'weft_persist_history_compaction_runs_total{result="ok"}')
  await until(async () => (await metric(worker, 'weft_persist_history_compaction_runs_total{result="ok"}')) >= runsBefore + 2,
    'two worker passes after the retention passed')
  assert.ok(await metric(worker, 'weft_persist_history_compacted_documents_total') >= 1)
  assert.equal(await metric(worker, 'weft_persist_history_stored_versions'), 2)
  const versions = await json(await api(node, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.deepEqual(versions.versions.map(v => v.id), [restores[1].id, named.id], 'the older restore version is gone')
  assert.equal(await textAt(node, name, `&version=${named.id}`), 'hello')
  assert.equal(await textAt(node, name, `&version=${restores[1].id}`), 'hello')
  assert.equal(await textAt(node, name), 'hello')
})
