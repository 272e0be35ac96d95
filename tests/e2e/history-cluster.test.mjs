// History on a cluster (two nodes, a persistence worker, a real Kafka
// broker and PostgreSQL): the worker keeps the per-edit history as it folds
// the topic, so versions name their authors (the worker's automatic ones
// and the nodes' named ones), a read at an instant between two edits gives
// the document then, activity is per author and a diff names who wrote
// each run. And the worker SIGKILLed in the middle of a restore: the
// restore answered 200 is kept, every client converges on the restored
// text (never half of it), and the restarted worker catches up (a node
// loading the document afresh reads it restored).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { e2e, startWeft, createClient, waitFor, waitSynced, signJwt, jwtClaims, sleep, metric } from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const skip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const SECRET = 'history-cluster-e2e-secret-0123456789ab'
const token = (sub) => signJwt(jwtClaims({ sub, docs: { 'hist/**': 'rw' } }), { secret: SECRET })
const alice = token('alice')
const bob = token('bob')
const enc = encodeURIComponent

function api (server, method, route, { as = alice, body } = {}) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: `Bearer ${as}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    signal: AbortSignal.timeout(15000)
  })
}

async function json (res, status) {
  const text = await res.text()
  assert.equal(res.status, status, text)
  return JSON.parse(text)
}

async function textAt (server, name, query = '') {
  const body = await json(await api(server, 'GET', `/documents/${enc(name)}?text=text${query}`), 200)
  return body.text.text
}

/** Polls until `check` holds: the worker's rows and versions are external state with no events. */
async function until (check, what, timeout = 30000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(50)
  }
}

function psql (url, sql) {
  const result = spawnSync('psql', [url, '-qtAc', sql], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, `psql ${sql}: ${result.stderr}`)
  return result.stdout.trim()
}

function freshDatabase (t) {
  const dbName = `weft_e2e_${crypto.randomBytes(6).toString('hex')}`
  psql(POSTGRES, `CREATE DATABASE ${dbName}`)
  t.after(() => psql(POSTGRES, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`))
  const url = new URL(POSTGRES)
  url.pathname = `/${dbName}`
  return url.toString()
}

async function startCluster (t, { nodes = 2 } = {}) {
  const topic = `e2e-history-cluster-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const common = ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--kafka-fetch-wait-ms', '10']
  const startNode = (i) => startWeft(t, { name: `node-${i}`, store, args: [...common, '--node-id', `node-${i}`, '--auth-jwt-secret', SECRET] })
  const started = []
  for (let i = 0; i < nodes; i++) started.push(await startNode(i))
  const worker = await startWeft(t, {
    name: 'worker',
    command: 'persist',
    store,
    args: [...common, '--node-id', 'worker', '--group', `group-${topic}`, '--snapshot-debounce', '200ms',
      '--snapshot-max-delay', '1s', '--version-quiet', '1s']
  })
  return { nodes: started, worker, startNode, store }
}

async function versions (server, name) {
  return (await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)).versions
}

e2e('history on a cluster: authors per version, the worker\'s automatic version, a read between two edits, activity, diff runs', { skip, timeout: 90000 }, async (t) => {
  const { nodes, store } = await startCluster(t)
  const name = 'hist/cluster-edits'
  const a = createClient(t, nodes[0], name, { name: 'alice@node-0', params: { token: alice } })
  const b = createClient(t, nodes[1], name, { name: 'bob@node-1', params: { token: bob } })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'hello')
  await waitFor(() => b.doc.getText('text').toString() === 'hello', { on: b.doc, what: 'bob to see alice' })
  // An instant after alice's edit was accepted and before bob's.
  await sleep(5)
  const between = new Date().toISOString()
  await sleep(5)
  b.doc.getText('text').insert(5, ' world')
  await waitFor(() => a.doc.getText('text').toString() === 'hello world', { on: a.doc, what: 'alice to see bob' })

  // Quiet for --version-quiet: the worker takes an automatic version of
  // both edits, naming both authors.
  const auto = await until(async () => (await versions(nodes[1], name)).find(v => v.kind === 'auto'), 'the worker\'s automatic version')
  assert.deepEqual(auto.authors, ['alice', 'bob'])
  assert.equal(await textAt(nodes[0], name, `&version=${auto.id}`), 'hello world')
  // The document at an instant between the two edits: alice's only.
  assert.equal(await textAt(nodes[1], name, `&at=${enc(between)}`), 'hello')
  assert.equal(await textAt(nodes[0], name, `&at=${enc(auto.at)}`), 'hello world')

  const activity = await json(await api(nodes[0], 'GET', `/documents/${enc(name)}/activity`), 200)
  assert.deepEqual(activity.activity.map(row => row.author), ['alice', 'bob'])
  for (const row of activity.activity) assert.ok(row.updates >= 1, JSON.stringify(row))

  // A named version a node takes names who changed the document since the
  // version before it (completed once the worker stored their rows).
  a.doc.getText('text').delete(0, 5)
  a.doc.getText('text').insert(0, 'goodbye')
  await until(async () => (await textAt(nodes[1], name)) === 'goodbye world', 'node 1 to hold alice\'s change')
  const named = await json(await api(nodes[1], 'POST', `/documents/${enc(name)}/versions`, { as: bob, body: { name: 'farewell' } }), 201)
  let listedNamed
  await until(async () => {
    listedNamed = (await versions(nodes[0], name)).find(v => v.id === named.id)
    return listedNamed && listedNamed.authors.length === 1 && listedNamed.authors[0] === 'alice'
  }, 'the named version to name alice').catch((error) => {
    throw new Error(`${error.message}: ${JSON.stringify({ named, listedNamed, rows: psql(store, 'SELECT seq, author, at_ms FROM weft_topic_updates ORDER BY seq'), versions: psql(store, 'SELECT id, covers_seq, authors, authors_pending FROM weft_versions') })}`)
  })

  // The diff between the two versions: per run, who wrote it.
  const diff = await json(await api(nodes[0], 'GET', `/documents/${enc(name)}/diff?from=${auto.id}&to=${named.id}&text=text`), 200)
  assert.deepEqual(diff.authors, ['alice'])
  assert.deepEqual(diff.text, [{
    root: 'text',
    changes: [{ at: 0, deleted: 'hello', inserted: 'goodbye', authors: ['alice'] }]
  }])
})

e2e('history on a cluster: the worker SIGKILLed mid-restore; the restore is kept whole and the worker catches up', { skip, timeout: 90000 }, async (t) => {
  const { nodes, worker, startNode } = await startCluster(t)
  const name = 'hist/cluster-restore'
  const a = createClient(t, nodes[0], name, { name: 'alice@node-0', params: { token: alice } })
  const b = createClient(t, nodes[1], name, { name: 'bob@node-1', params: { token: bob } })
  await waitSynced([a, b])
  const target = 'the text to come back to, '.repeat(20)
  a.doc.getText('text').insert(0, target)
  await waitFor(() => b.doc.getText('text').toString() === target, { on: b.doc, what: 'bob to see alice' })
  await until(async () => (await textAt(nodes[1], name)) === target, 'node 1 to hold it')
  const v1 = await json(await api(nodes[1], 'POST', `/documents/${enc(name)}/versions`, { as: bob, body: { name: 'target' } }), 201)
  b.doc.getText('text').delete(0, target.length)
  b.doc.getText('text').insert(0, 'something else entirely')
  await waitFor(() => a.doc.getText('text').toString() === 'something else entirely', { on: a.doc, what: 'alice to see bob' })

  // The restore and the worker's SIGKILL race.
  const restoring = api(nodes[0], 'POST', `/documents/${enc(name)}/restore`, { body: { version: v1.id } })
  await sleep(Math.floor(Math.random() * 20))
  await worker.kill()
  const restored = await json(await restoring, 200)
  assert.equal(restored.kind, 'restore')
  await waitFor(() => a.doc.getText('text').toString() === target && b.doc.getText('text').toString() === target,
    { on: [a.doc, b.doc], timeout: 15000, what: 'both nodes\' clients to converge on the whole restored text' })

  // The restarted worker reads on from its last commit: lag back to 0,
  // the restore version names its author, a fresh node loads it restored.
  await worker.restart()
  await until(async () => (await metric(worker, 'weft_persist_lag_records')) === 0 &&
    (await metric(worker, 'weft_persist_records_folded_total')) > 0, 'the restarted worker to catch up', 30000)
  await until(async () => {
    const listed = (await versions(nodes[1], name)).find(v => v.id === restored.id)
    return listed && listed.authors.includes('alice')
  }, 'the restore version to name alice')
  const fresh = await startNode(2)
  assert.equal(await textAt(fresh, name), target)
})
