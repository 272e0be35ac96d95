// The REST API (`/api/`) with unmodified y-websocket clients: a read returns
// the document as clients see it, a service's update reaches connected
// clients, a deletion closes their sessions (4410), refuses clients that
// still hold the deleted history, lets fresh clients start the name again,
// and holds on every node and across restarts. One node (embedded), and a
// cluster over the real broker (WEFT_TEST_KAFKA) with a persistence worker
// on PostgreSQL (WEFT_TEST_POSTGRES_URL).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import * as hocuspocus from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, Y, WebSocket, signJwt, jwtClaims
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const clusterSkip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const SECRET = 'api-e2e-secret-0123456789abcdef0123'
const DELETED = 4410
const admin = signJwt(jwtClaims({ sub: 'admin', admin: true }), { secret: SECRET })
const editor = signJwt(jwtClaims({ sub: 'editor', docs: { 'api/**': 'rw' } }), { secret: SECRET })
const reader = signJwt(jwtClaims({ sub: 'reader', docs: { 'api/**': 'r' } }), { secret: SECRET })

/** An API request; returns the fetch Response. */
function api (server, method, route, { token = admin, headers = {}, body } = {}) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    signal: AbortSignal.timeout(15000)
  })
}

const enc = encodeURIComponent

/** The document over the API as a fresh Y.Doc (octet-stream), or null on 404. */
async function readAsDoc (server, name) {
  const res = await api(server, 'GET', `/documents/${enc(name)}`, { headers: { accept: 'application/octet-stream' } })
  if (res.status === 404) return null
  assert.equal(res.status, 200, await res.clone().text())
  assert.equal(res.headers.get('content-type'), 'application/octet-stream')
  const doc = new Y.Doc()
  Y.applyUpdate(doc, new Uint8Array(await res.arrayBuffer()))
  return doc
}

/** The document over the API as JSON of its `text` root and `meta` map. */
async function readAsJson (server, name) {
  const res = await api(server, 'GET', `/documents/${enc(name)}?text=text&map=meta`)
  return { status: res.status, body: await res.json() }
}

/** POSTs a Yjs update made on a fresh Y.Doc by `edit`. */
async function postUpdate (server, name, edit, { token = admin } = {}) {
  const doc = new Y.Doc()
  edit(doc)
  return api(server, 'POST', `/documents/${enc(name)}/updates`, {
    token,
    headers: { 'content-type': 'application/octet-stream' },
    body: Y.encodeStateAsUpdate(doc)
  })
}

const deletedCloses = (client) => client.closeCodes.filter(code => code === DELETED).length

function authArgs () { return ['--auth-jwt-secret', SECRET] }

e2e('api: read, service update, delete with tombstone, fresh start, restart (one node)', { timeout: 90000 }, async (t) => {
  const server = await startWeft(t, { args: authArgs() })
  const name = 'api/team/plan'
  const client = (label) => createClient(t, server, name, { name: label, params: { token: editor } })

  // Auth and negotiation refusals.
  assert.equal((await api(server, 'GET', '/documents', { token: null })).status, 401)
  assert.equal((await api(server, 'GET', `/documents/${enc('other/doc')}`, { token: editor })).status, 403)
  assert.equal((await postUpdate(server, name, (d) => d.getText('text').insert(0, 'x'), { token: reader })).status, 403)
  assert.equal((await api(server, 'DELETE', `/documents/${enc(name)}`, { token: editor })).status, 403)
  assert.equal((await api(server, 'GET', `/documents/${enc(name)}`, { headers: { accept: 'text/html' } })).status, 406)
  assert.equal((await api(server, 'PUT', `/documents/${enc(name)}`)).status, 405)
  assert.equal((await readAsJson(server, name)).status, 404, 'never written')

  // GET returns what clients see. A witness client seeing alice's edit
  // means the server applied it (it broadcasts only applied updates).
  const alice = client('alice')
  const witness = client('witness')
  await waitSynced([alice, witness])
  alice.doc.getText('text').insert(0, 'hello from alice')
  alice.doc.getMap('meta').set('owner', 'alice')
  await waitFor(() => witness.doc.getMap('meta').get('owner') === 'alice', { on: witness.doc, what: 'the witness to see alice\'s edit' })
  const seen = await readAsDoc(server, name)
  assert.equal(seen?.getText('text').toString(), 'hello from alice', 'octet-stream: the state clients see')
  const json = await readAsJson(server, name)
  assert.equal(json.status, 200)
  assert.deepEqual(json.body, { name, text: { text: 'hello from alice' }, map: { meta: { owner: 'alice' } }, array: {}, xml: {} })
  const listing = await (await api(server, 'GET', '/documents', { token: reader })).json()
  assert.deepEqual(listing.documents.map(d => d.name), [name], 'a reader lists what its globs read')

  // POST: a service's update reaches the connected client.
  const posted = await postUpdate(server, name, (d) => d.getMap('meta').set('status', 'approved'), { token: editor })
  assert.equal(posted.status, 204, await posted.text())
  await waitFor(() => alice.doc.getMap('meta').get('status') === 'approved', { on: alice.doc, what: 'alice to see the service update' })
  const garbage = await api(server, 'POST', `/documents/${enc(name)}/updates`, { headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array([0xff, 0xff, 0xff]) })
  assert.equal(garbage.status, 400)

  // DELETE: the sessions are closed with 4410; the document reads 404.
  witness.destroy()
  const deleted = await api(server, 'DELETE', `/documents/${enc(name)}`)
  assert.equal(deleted.status, 204, await deleted.text())
  await waitFor(() => deletedCloses(alice) >= 1, { on: alice.provider, what: 'alice closed with 4410', detail: () => `codes ${alice.closeCodes}` })
  assert.equal((await readAsJson(server, name)).status, 404)
  assert.equal((await api(server, 'DELETE', `/documents/${enc(name)}`)).status, 404, 'nothing left to delete')

  // y-websocket takes a 44xx close as final and stops reconnecting. Alice
  // still holds the old history: connecting again is refused too, and
  // nothing of it comes back.
  assert.equal(alice.provider.shouldConnect, false, 'y-websocket stops on 4410')
  alice.provider.connect()
  await waitFor(() => deletedCloses(alice) >= 2, { on: alice.provider, timeout: 15000, what: 'alice\'s reconnect refused', detail: () => `codes ${alice.closeCodes}` })
  assert.equal((await readAsJson(server, name)).status, 404, 'deleted content did not come back')

  // A fresh client starts the name again.
  const bob = client('bob')
  await waitSynced(bob)
  assert.equal(bob.doc.getText('text').toString(), '', 'bob starts from nothing')
  const bobWitness = client('bob-witness')
  await waitSynced(bobWitness)
  bob.doc.getText('text').insert(0, 'a new start')
  await waitFor(() => bobWitness.doc.getText('text').toString() === 'a new start', { on: bobWitness.doc, what: 'the witness to see bob\'s edit' })
  assert.deepEqual((await readAsJson(server, name)).body.text, { text: 'a new start' })
  assert.equal(deletedCloses(bob), 0)

  // A restart: the tombstone and the new content survive.
  bob.destroy()
  bobWitness.destroy()
  await server.stop()
  await server.restart()
  const afterRestart = await readAsJson(server, name)
  assert.equal(afterRestart.status, 200)
  assert.deepEqual(afterRestart.body.text, { text: 'a new start' }, 'after a restart: only the new content')
  assert.deepEqual(afterRestart.body.map, { meta: {} })
  const refusedBefore = deletedCloses(alice)
  alice.provider.connect()
  await waitFor(() => deletedCloses(alice) > refusedBefore, { on: alice.provider, timeout: 15000, what: 'alice refused after the restart', detail: () => `codes ${alice.closeCodes}` })
  alice.destroy()
  const carol = client('carol')
  await waitSynced(carol)
  assert.equal(carol.doc.getText('text').toString(), 'a new start')
})

/** Resolves once `predicate()` holds, checked on each `event` of the clients' Hocuspocus providers. */
function providerEvent (clients, event, predicate, what, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const subs = []
    const done = (err) => { clearTimeout(timer); for (const u of subs) u(); err ? reject(err) : resolve() }
    const timer = setTimeout(() => done(new Error(`timed out after ${timeout} ms waiting for ${what}`)), timeout)
    const check = () => { if (predicate()) done() }
    for (const { provider } of clients) { provider.on(event, check); subs.push(() => provider.off(event, check)) }
    check()
  })
}

e2e('api: deleting a document sends a Hocuspocus socket CLOSE for that document only', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, { args: authArgs() })
  const socket = new hocuspocus.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: WebSocket })
  t.after(() => socket.destroy())
  const open = (name) => {
    const doc = new Y.Doc()
    const events = { synced: false, closes: [] }
    const provider = new hocuspocus.HocuspocusProvider({
      websocketProvider: socket, name, document: doc, token: editor,
      onSynced: () => { events.synced = true },
      onClose: ({ event }) => { events.closes.push(event.reason) }
    })
    provider.attach()
    t.after(() => provider.destroy())
    return { doc, provider, events }
  }
  const doomed = open('api/hocus/doomed')
  const kept = open('api/hocus/kept')
  await providerEvent([doomed, kept], 'synced', () => doomed.events.synced && kept.events.synced, 'both documents to sync')
  doomed.doc.getText('text').insert(0, 'to be deleted')
  kept.doc.getText('text').insert(0, 'kept')
  const witness = createClient(t, server, 'api/hocus/doomed', { name: 'witness', params: { token: editor } })
  await waitFor(() => witness.doc.getText('text').toString() === 'to be deleted', { on: witness.doc, what: 'the witness to see the edit' })
  witness.destroy()
  assert.equal((await api(server, 'DELETE', `/documents/${enc('api/hocus/doomed')}`)).status, 204)
  await providerEvent([doomed], 'close', () => doomed.events.closes.includes('document deleted'), 'CLOSE for the deleted document')
  assert.deepEqual(kept.events.closes, [], 'the other document stays open')
  // The socket still serves the other document.
  const probe = createClient(t, server, 'api/hocus/kept', { name: 'probe', params: { token: editor } })
  await waitSynced(probe)
  probe.doc.getText('text').insert(0, '>')
  await waitFor(() => kept.doc.getText('text').toString() === '>kept', { on: kept.doc, what: 'the kept document to stay live on the socket' })
  assert.equal((await readAsJson(server, 'api/hocus/doomed')).status, 404)
})

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

e2e('api: a cluster applies a service update everywhere, deletes on every node, and the worker keeps the tombstone', { skip: clusterSkip, timeout: 120000 }, async (t) => {
  const topic = `e2e-api-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const clusterArgs = (node) => ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--node-id', node, '--kafka-fetch-wait-ms', '10', ...authArgs()]
  const nodes = []
  for (let i = 0; i < 2; i++) nodes.push(await startWeft(t, { name: `node-${i}`, store, args: clusterArgs(`node-${i}`) }))
  const worker = await startWeft(t, {
    name: 'worker',
    command: 'persist',
    store,
    ready: { timeout: 15000 },
    args: ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--node-id', 'worker', '--kafka-fetch-wait-ms', '10',
      '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s']
  })
  const name = 'api/cluster/doc'
  const onNode = (i, label) => createClient(t, nodes[i], name, { name: label, params: { token: editor } })
  const alice = onNode(0, 'alice@node-0')
  const bob = onNode(1, 'bob@node-1')
  await waitSynced([alice, bob])
  alice.doc.getText('text').insert(0, 'old content')
  await waitFor(() => bob.doc.getText('text').toString() === 'old content', { on: bob.doc, what: 'bob to see alice' })

  // POST on node 0 reaches the client on node 1.
  const posted = await postUpdate(nodes[0], name, (d) => d.getMap('meta').set('from', 'service'))
  assert.equal(posted.status, 204)
  await waitFor(() => bob.doc.getMap('meta').get('from') === 'service', { on: bob.doc, what: 'bob (node 1) to see the service update' })
  const fromNode1 = await readAsDoc(nodes[1], name)
  assert.equal(fromNode1.getText('text').toString(), 'old content')

  // DELETE on node 1 closes the sessions on both nodes.
  assert.equal((await api(nodes[1], 'DELETE', `/documents/${enc(name)}`)).status, 204)
  await waitFor(() => deletedCloses(alice) >= 1 && deletedCloses(bob) >= 1, { on: [alice.provider, bob.provider], what: 'both sessions closed with 4410', detail: () => `alice ${alice.closeCodes} bob ${bob.closeCodes}` })
  for (const node of nodes) assert.equal((await readAsJson(node, name)).status, 404, `${node.name} reads it deleted`)
  alice.destroy()
  bob.destroy()

  // The worker stores the tombstone; a fresh client starts the name again.
  // (The worker's write is in another process and database: polled, bounded.)
  for (let attempt = 0; attempt < 100; attempt++) {
    if (psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE doc = '${name}' AND deleted_position IS NOT NULL`) === '1') break
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  assert.equal(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE doc = '${name}' AND deleted_position IS NOT NULL`), '1')
  const carol = onNode(0, 'carol@node-0')
  await waitSynced(carol)
  carol.doc.getText('text').insert(0, 'fresh')
  const dave = onNode(1, 'dave@node-1')
  await waitFor(() => dave.doc.getText('text').toString() === 'fresh', { on: dave.doc, what: 'dave to see the fresh content' })

  // Restart node 1: it loads from the worker's snapshot and the topic.
  dave.destroy()
  await nodes[1].stop()
  await nodes[1].restart()
  const reloaded = await readAsJson(nodes[1], name)
  assert.equal(reloaded.status, 200)
  assert.deepEqual(reloaded.body.text, { text: 'fresh' })
  assert.deepEqual(reloaded.body.map, { meta: {} }, 'the service update was deleted too')
  void worker
})
