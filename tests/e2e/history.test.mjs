// History with unmodified clients (y-websocket and @hocuspocus/provider) on
// one embedded node: attribution, named versions, reads at a version and at
// an instant, diff, activity, bad input, and a restore while both clients
// edit (everyone converges on the restored state plus their later edits; a
// second restore to the same version changes nothing), and an automatic
// version when the last session leaves. On a cluster (Kafka + PostgreSQL):
// named versions and a restore, converging clients on both nodes. And a
// node SIGKILLed at six moments of a restore: the document comes back either
// restored or not, never half, and a restore answered 200 is kept.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import * as hocuspocus from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, Y, WebSocket, signJwt, jwtClaims, sleep, metric
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const clusterSkip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const SECRET = 'history-e2e-secret-0123456789abcdef'
const token = (sub, docs) => signJwt(jwtClaims({ sub, docs }), { secret: SECRET })
const alice = token('alice', { 'hist/**': 'rw' })
const bob = token('bob', { 'hist/**': 'rw' })
const reader = token('reader', { 'hist/**': 'r' })

const enc = encodeURIComponent

function api (server, method, route, { as = alice, body, headers = {} } = {}) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: {
      authorization: `Bearer ${as}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers
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

async function assertError (res, status, mentions) {
  const body = await json(res, status)
  assert.equal(body.error.code, status)
  assert.match(body.error.details, mentions)
}

/** The document's state on the server (a Yjs update), as hex. */
async function serverState (server, name) {
  const res = await api(server, 'GET', `/documents/${enc(name)}`, { headers: { accept: 'application/octet-stream' } })
  assert.equal(res.status, 200)
  return Buffer.from(await res.arrayBuffer()).toString('hex')
}

/** A Hocuspocus client of `name` on its own socket. */
function hocuspocusClient (t, server, name, tokenValue) {
  const socket = new hocuspocus.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: WebSocket })
  const doc = new Y.Doc()
  let markSynced
  const synced = new Promise((resolve) => { markSynced = resolve })
  const provider = new hocuspocus.HocuspocusProvider({
    websocketProvider: socket, name, document: doc, token: tokenValue,
    onSynced: () => markSynced()
  })
  provider.attach()
  t.after(() => { provider.destroy(); socket.destroy() })
  return { doc, provider, synced }
}

/** Polls the HTTP API until `check` holds (HTTP reads have no events). */
async function until (check, what, timeout = 10000) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(20)
  }
}

/** Waits until the clock is past `at` (RFC 3339), so later edits are later. */
async function after (at) {
  while (Date.now() <= Date.parse(at) + 1) await sleep(2)
}

e2e('history: versions with authors, reads then, diff, activity, bad input (one node)', { timeout: 90000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'hist/routes'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  ws.doc.getText('text').insert(0, 'hello')
  await until(async () => (await textAt(server, name)) === 'hello', 'the API to read alice\'s edit')

  await assertError(await api(server, 'POST', `/documents/${enc(name)}/versions`, { as: reader, body: { name: 'no' } }), 403, /read-only/)
  const v1 = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { body: { name: 'first draft' } }), 201)
  assert.equal(v1.kind, 'named')
  assert.equal(v1.name, 'first draft')
  assert.deepEqual(v1.authors, ['alice'])
  assert.match(v1.id, /^\d+$/)

  await after(v1.at)
  const hp = hocuspocusClient(t, server, name, bob)
  await hp.synced
  await waitFor(() => hp.doc.getText('text').toString() === 'hello', { on: hp.doc, what: 'bob to sync' })
  hp.doc.getText('text').insert(5, ' world')
  await until(async () => (await textAt(server, name)) === 'hello world', 'the API to read bob\'s edit')
  const v2 = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { as: bob, body: { name: 'second' } }), 201)
  assert.deepEqual(v2.authors, ['bob'], 'only the authors since the previous version')

  // Listing: newest first, paged.
  const all = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`, { as: reader }), 200)
  assert.deepEqual(all.versions.map(v => v.id), [v2.id, v1.id])
  assert.equal(all.next, null)
  const first = await json(await api(server, 'GET', `/documents/${enc(name)}/versions?limit=1`, { as: reader }), 200)
  assert.deepEqual(first.versions.map(v => v.id), [v2.id])
  assert.equal(first.next, v2.id)
  const rest = await json(await api(server, 'GET', `/documents/${enc(name)}/versions?limit=1&before=${first.next}`, { as: reader }), 200)
  assert.deepEqual(rest.versions.map(v => v.id), [v1.id])

  // Reads then: at a version, at an instant, as JSON and as a Yjs update.
  assert.equal(await textAt(server, name, `&version=${v1.id}`), 'hello')
  assert.equal(await textAt(server, name, `&version=${v2.id}`), 'hello world')
  assert.equal(await textAt(server, name, `&at=${enc(v1.at)}`), 'hello')
  const raw = await api(server, 'GET', `/documents/${enc(name)}?version=${v1.id}`, { as: reader, headers: { accept: 'application/octet-stream' } })
  assert.equal(raw.status, 200)
  const then = new Y.Doc()
  Y.applyUpdate(then, new Uint8Array(await raw.arrayBuffer()))
  assert.equal(then.getText('text').toString(), 'hello')

  // Compare and activity.
  const diff = await json(await api(server, 'GET', `/documents/${enc(name)}/diff?from=${v1.id}&to=${v2.id}&text=text`, { as: reader }), 200)
  assert.deepEqual(diff.authors, ['bob'])
  assert.deepEqual(diff.text, [{ root: 'text', changes: [{ at: 5, deleted: '', inserted: ' world', authors: ['bob'] }] }])
  const activity = await json(await api(server, 'GET', `/documents/${enc(name)}/activity`, { as: reader }), 200)
  assert.deepEqual(activity.activity.map(a => a.author), ['alice', 'bob'])
  for (const row of activity.activity) {
    assert.ok(row.updates >= 1)
    assert.ok(Date.parse(row.first) <= Date.parse(row.last))
  }

  // Bad input: 4xx naming the problem, nothing changed.
  await assertError(await api(server, 'GET', `/documents/${enc(name)}?version=999999`), 404, /no version 999999/)
  await assertError(await api(server, 'GET', `/documents/${enc(name)}?version=abc`), 400, /version id/)
  await assertError(await api(server, 'GET', `/documents/${enc(name)}?at=yesterday`), 400, /RFC 3339/)
  await assertError(await api(server, 'GET', `/documents/${enc(name)}?at=2000-01-01T00:00:00Z`), 400, /retention/)
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { version: '999999' } }), 404, /no version/)
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { at: 'soon' } }), 400, /RFC 3339/)
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: {} }), 400, /exactly one/)
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/restore`, { as: reader, body: { version: v1.id } }), 403, /read-only/)
  assert.equal(await textAt(server, name), 'hello world', 'refused requests changed nothing')
  const unchanged = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.equal(unchanged.versions.length, 2)

  // An automatic version once the last session leaves a changed document.
  ws.doc.getText('text').insert(11, '!')
  await until(async () => (await textAt(server, name)) === 'hello world!', 'the last edit to land')
  ws.destroy()
  hp.provider.destroy()
  let auto
  await until(async () => {
    const page = await json(await api(server, 'GET', `/documents/${enc(name)}/versions?limit=1`), 200)
    auto = page.versions[0]
    return auto.kind === 'auto'
  }, 'an automatic version after the last session left')
  assert.deepEqual(auto.authors, ['alice'])
  assert.equal(auto.name, null)
  assert.equal(await textAt(server, name, `&version=${auto.id}`), 'hello world!')
})

e2e('history: an automatic version after --version-interval of activity while a session stays', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET, '--version-interval', '300ms'] })
  const name = 'hist/interval'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  ws.doc.getText('text').insert(0, 'still editing')
  let auto
  await until(async () => {
    const page = await json(await api(server, 'GET', `/documents/${enc(name)}/versions?limit=1`), 200)
    auto = page.versions[0]
    return auto !== undefined
  }, 'an automatic version while the session stays')
  assert.equal(auto.kind, 'auto')
  assert.deepEqual(auto.authors, ['alice'])
  assert.equal(ws.provider.wsconnected, true, 'the session is still open')
  assert.equal(await textAt(server, name, `&version=${auto.id}`), 'still editing')
})

e2e('history: a restore while y-websocket and Hocuspocus clients edit converges everyone (one node)', { timeout: 90000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'hist/restore'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  ws.doc.getText('text').insert(0, 'version one')
  await until(async () => (await textAt(server, name)) === 'version one', 'the first edit to land')
  const v1 = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { body: { name: 'v1' } }), 201)

  const hp = hocuspocusClient(t, server, name, bob)
  await hp.synced
  await waitFor(() => hp.doc.getText('text').toString() === 'version one', { on: hp.doc, what: 'bob to sync' })
  hp.doc.getText('text').insert(11, ' then bob rewrote it')
  await waitFor(() => ws.doc.getText('text').toString() === 'version one then bob rewrote it', { on: ws.doc, what: 'alice to see bob' })

  // Both keep typing at the start while the restore runs.
  let typing = true
  let typed = 0
  const typer = (async () => {
    while (typing) {
      const who = typed % 2 === 0 ? ws.doc : hp.doc
      who.getText('text').insert(0, typed % 2 === 0 ? 'a' : 'b')
      typed += 1
      await sleep(5)
    }
  })()
  const restored = await json(await api(server, 'POST', `/documents/${enc(name)}/restore`, { as: bob, body: { version: v1.id } }), 200)
  typing = false
  await typer
  assert.equal(restored.kind, 'restore')
  assert.ok(BigInt(restored.id) > BigInt(v1.id))
  assert.equal(await metric(server, 'weft_history_restores_total'), 1)
  assert.equal(await metric(server, 'weft_history_versions_total'), 2, 'v1 and the restore\'s')
  assert.equal(await metric(server, 'weft_history_read_seconds_count'), 1)

  // Later edits on top of the restored state.
  ws.doc.getText('text').insert(ws.doc.getText('text').length, ' [alice after]')
  const converged = () => {
    const a = ws.doc.getText('text').toString()
    const b = hp.doc.getText('text').toString()
    return a === b && a.endsWith('version one [alice after]') && !a.includes('bob rewrote')
  }
  await waitFor(converged, { on: [ws.doc, hp.doc], timeout: 15000, what: 'both clients to converge on the restored state plus later edits', detail: () => [ws.doc.getText('text').toString(), hp.doc.getText('text').toString()] })
  const prefix = ws.doc.getText('text').toString().slice(0, -'version one [alice after]'.length)
  // Typing the restore read is reverted with the rest; typing after it
  // survives, in front of the restored text.
  assert.match(prefix, /^[ab]*$/, 'the restored-away text is gone')
  assert.ok(typed > 0)
  await until(async () => (await textAt(server, name)) === ws.doc.getText('text').toString(), 'the API to agree')

  // The history before the restore stays readable.
  const beforeRestore = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.deepEqual(beforeRestore.versions.map(v => v.kind), ['restore', 'named'])

  // Restoring twice with no edit between is idempotent.
  const again = await json(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { version: restored.id } }), 200)
  const before = await serverState(server, name)
  const twice = await json(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { version: restored.id } }), 200)
  assert.equal(twice.id, again.id, 'the second restore takes no new version')
  assert.deepEqual(await serverState(server, name), before, 'the second restore changed nothing')
})

e2e('history: a deleted document comes back with undelete; purge removes it for good (one node)', { timeout: 90000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const admin = signJwt(jwtClaims({ sub: 'admin', admin: true }), { secret: SECRET })
  const name = 'hist/deleted'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  ws.doc.getText('text').insert(0, 'worth keeping')
  await until(async () => (await textAt(server, name)) === 'worth keeping', 'the edit to land')
  const kept = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { body: { name: 'before delete' } }), 201)

  await assertError(await api(server, 'POST', `/documents/${enc(name)}/undelete`), 409, /not deleted/)
  await assertError(await api(server, 'DELETE', `/documents/${enc(name)}?purge=maybe`, { as: admin }), 400, /purge/)
  assert.equal((await api(server, 'DELETE', `/documents/${enc(name)}`, { as: admin })).status, 204)
  await waitFor(() => ws.closeCodes.includes(4410), { on: ws, what: 'the session to close as deleted' })
  ws.destroy()
  assert.equal(await textAt(server, name), null, 'deleted: a 404')
  // Its history stays readable, and it comes back as it was.
  assert.equal(await textAt(server, name, `&version=${kept.id}`), 'worth keeping')
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/undelete`, { as: reader }), 403, /read-only/)
  const back = await json(await api(server, 'POST', `/documents/${enc(name)}/undelete`, { as: bob }), 200)
  assert.equal(back.kind, 'restore')
  assert.deepEqual(back.authors, ['bob'])
  assert.equal(await textAt(server, name), 'worth keeping')
  const fresh = createClient(t, server, name, { name: 'fresh', params: { token: alice } })
  await waitFor(() => fresh.doc.getText('text').toString() === 'worth keeping', { on: fresh.doc, what: 'a fresh client to load the undeleted document' })
  fresh.destroy()

  // Purge: deleted with its history; nothing to undelete or read then.
  assert.equal((await api(server, 'DELETE', `/documents/${enc(name)}?purge=true`, { as: admin })).status, 204)
  assert.equal(await textAt(server, name), null)
  await assertError(await api(server, 'GET', `/documents/${enc(name)}?version=${kept.id}`), 404, /no version/)
  await assertError(await api(server, 'POST', `/documents/${enc(name)}/undelete`), 404, /no content/)
  const none = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.deepEqual(none.versions, [])
})

e2e('history: a node SIGKILLed mid-restore comes back with the restore whole or not at all (one node)', { timeout: 120000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'hist/killed-restore'
  // Two contents that share nothing, large enough that a restore is one
  // sizeable edit: any half-applied state would match neither.
  const before = Array.from({ length: 400 }, (_, i) => `line ${i} as it was named\n`).join('')
  const after = Array.from({ length: 400 }, (_, i) => `LINE ${i} REWRITTEN SINCE\n`).join('')
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  ws.doc.getText('text').insert(0, before)
  await until(async () => (await textAt(server, name)) === before, 'the first content to land')
  const named = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { body: { name: 'before' } }), 201)
  ws.doc.transact(() => {
    const text = ws.doc.getText('text')
    text.delete(0, text.length)
    text.insert(0, after)
  })
  await until(async () => (await textAt(server, name)) === after, 'the rewrite to land')
  ws.destroy()

  // Each round SIGKILLs the node at another moment of a restore (from
  // right after the request is written to well after it could finish).
  const outcomes = []
  for (const delayMs of [0, 1, 3, 8, 20, 60]) {
    const restore = api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { version: named.id } })
      .then((res) => res.status, () => 'no answer')
    await sleep(delayMs)
    await server.kill()
    const answered = await restore
    await server.restart()
    const text = await textAt(server, name)
    assert.ok(text === before || text === after, `after a SIGKILL ${delayMs} ms into a restore the document is one whole state, not ${JSON.stringify(text?.slice(0, 80))}...`)
    if (answered === 200) assert.equal(text, before, 'a restore answered 200 is durable')
    outcomes.push(text === before ? 'restored' : 'not restored')
    // Back to the rewritten state for the next round (itself a restore's
    // opposite: a plain edit through a client).
    if (text === before) {
      const back = createClient(t, server, name, { name: 'alice', params: { token: alice } })
      await waitSynced(back)
      back.doc.transact(() => {
        const shared = back.doc.getText('text')
        shared.delete(0, shared.length)
        shared.insert(0, after)
      })
      await until(async () => (await textAt(server, name)) === after, 'the rewrite to land again')
      back.destroy()
    }
  }
  t.diagnostic(`restore outcomes by SIGKILL delay: ${outcomes.join(', ')}`)
  // And a restore that is not interrupted completes.
  await json(await api(server, 'POST', `/documents/${enc(name)}/restore`, { body: { version: named.id } }), 200)
  assert.equal(await textAt(server, name), before)
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

e2e('history: named versions and a restore on a cluster converge clients on both nodes', { skip: clusterSkip, timeout: 120000 }, async (t) => {
  const topic = `e2e-history-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const clusterArgs = (node) => ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--node-id', node,
    '--kafka-fetch-wait-ms', '10', '--auth-jwt-secret', SECRET]
  const nodes = []
  for (let i = 0; i < 2; i++) nodes.push(await startWeft(t, { name: `node-${i}`, store, args: clusterArgs(`node-${i}`) }))
  const name = 'hist/cluster'
  const a = createClient(t, nodes[0], name, { name: 'alice@node-0', params: { token: alice } })
  const b = createClient(t, nodes[1], name, { name: 'bob@node-1', params: { token: bob } })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'agreed text')
  await waitFor(() => b.doc.getText('text').toString() === 'agreed text', { on: b.doc, what: 'bob to see alice' })
  await until(async () => (await textAt(nodes[1], name)) === 'agreed text', 'node 1 to hold the edit')
  const v1 = await json(await api(nodes[1], 'POST', `/documents/${enc(name)}/versions`, { as: bob, body: { name: 'agreed' } }), 201)
  assert.equal(v1.kind, 'named')

  b.doc.getText('text').insert(11, ', then changed')
  await waitFor(() => a.doc.getText('text').toString() === 'agreed text, then changed', { on: a.doc, what: 'alice to see bob' })
  // Either node lists the versions and reads the document then.
  const listed = await json(await api(nodes[0], 'GET', `/documents/${enc(name)}/versions`, { as: reader }), 200)
  assert.deepEqual(listed.versions.map(v => v.id), [v1.id])
  assert.equal(await textAt(nodes[0], name, `&version=${v1.id}`), 'agreed text')

  const restored = await json(await api(nodes[0], 'POST', `/documents/${enc(name)}/restore`, { body: { version: v1.id } }), 200)
  assert.equal(restored.kind, 'restore')
  await waitFor(() => a.doc.getText('text').toString() === 'agreed text' && b.doc.getText('text').toString() === 'agreed text',
    { on: [a.doc, b.doc], timeout: 15000, what: 'both nodes\' clients to converge on the restored version' })
  b.doc.getText('text').insert(0, '> ')
  await waitFor(() => a.doc.getText('text').toString() === '> agreed text', { on: a.doc, what: 'later edits on top of the restore' })
  const again = await json(await api(nodes[1], 'POST', `/documents/${enc(name)}/restore`, { body: { version: v1.id } }), 200)
  assert.equal(again.kind, 'restore')
  await waitFor(() => a.doc.getText('text').toString() === 'agreed text' && b.doc.getText('text').toString() === 'agreed text',
    { on: [a.doc, b.doc], timeout: 15000, what: 'a restore from the other node to converge too' })
})
