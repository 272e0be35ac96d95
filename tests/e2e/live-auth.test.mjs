// Auth while connected, against the binary with real clients: a session is
// closed with 4401 when its token expires and y-websocket reconnects with a
// fresh token from `params`; a Hocuspocus provider refreshes its token in
// band (`sendToken()`) without reconnecting, and a narrower token makes it
// read-only; `POST /api/revocations` closes (4403) or downgrades matching
// sessions, refuses tokens issued before it, and survives a restart; on a
// two-node cluster over a real Kafka a revocation posted to one node closes
// the session on the other within a second.

import assert from 'node:assert/strict'
import * as providerV4 from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, rawUpgrade, assertRefusal,
  signJwt, jwtClaims, report, sleep, now, WebSocket
} from '../lib/harness.mjs'

const SECRET = 'live-auth-e2e-shared-secret-0123456789'
const LEEWAY_SECS = 30
const nowSecs = () => Math.floor(Date.now() / 1000)
const hs = (claims) => signJwt(claims, { alg: 'HS256', secret: SECRET })
/** A token whose `exp` plus the leeway passes in `secs` seconds. */
const closingIn = (secs, claims) => hs({ ...jwtClaims(claims), iat: nowSecs() - 60, exp: nowSecs() - LEEWAY_SECS + secs })
const ADMIN = hs(jwtClaims({ sub: 'operator', admin: true }))

async function api (server, method, path, body, token = ADMIN) {
  const res = await fetch(`${server.httpUrl}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined
  })
  return { status: res.status, body: await res.json().catch(() => null) }
}

function hocusSocket (t, server) {
  const socket = new providerV4.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: WebSocket })
  socket.closes = []
  socket.on('close', ({ event }) => socket.closes.push(event?.code))
  t.after(() => socket.destroy())
  return socket
}

/** A HocuspocusProvider whose token is a function (asked on every (re)connect and `sendToken()`). */
function hocusClient (t, socket, name, tokenRef) {
  const events = { scopes: [], denied: [] }
  const provider = new providerV4.HocuspocusProvider({
    websocketProvider: socket,
    name,
    token: () => tokenRef.current,
    onAuthenticated: ({ scope }) => events.scopes.push(scope),
    onAuthenticationFailed: ({ reason }) => events.denied.push(reason)
  })
  provider.attach()
  t.after(() => provider.destroy())
  const emitter = {
    on: (_ev, fn) => { for (const ev of ['authenticated', 'authenticationFailed', 'synced', 'unsyncedChanges']) provider.on(ev, fn); provider.document.on('update', fn) },
    off: (_ev, fn) => { for (const ev of ['authenticated', 'authenticationFailed', 'synced', 'unsyncedChanges']) provider.off(ev, fn); provider.document.off('update', fn) }
  }
  return { provider, doc: provider.document, events, emitter }
}

e2e('expiry: a y-websocket session closes with 4401 when its token expires and reconnects with a fresh token from params', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const docs = { 'expiring/doc': 'rw' }
  const client = createClient(t, server, 'expiring/doc', { name: 'A', params: { token: closingIn(2, { sub: 'alice', docs }) } })
  const opened = now()
  let refreshedAt = null
  // What an application does: y-websocket treats 4400-4499 as final and
  // emits 'closed'; on 4401 it puts a fresh token in `params` and connects.
  client.provider.on('closed', ({ code }) => {
    if (code === 4401) {
      refreshedAt = now()
      client.provider.params = { ...client.provider.params, token: hs({ ...jwtClaims({ sub: 'alice', docs }), iat: nowSecs() }) }
      client.provider.connect()
    }
  })
  await waitSynced(client)
  client.doc.getText('text').insert(0, 'before expiry')
  await waitFor(() => client.closeCodes.includes(4401), { on: client, timeout: 10000, what: 'the 4401 close' })
  const closedAfter = refreshedAt - opened
  assert.ok(closedAfter > 1000 && closedAfter < 4500, `closed about 2 s after opening (${closedAfter.toFixed(0)} ms)`)
  await waitFor(() => client.provider.wsconnected && client.provider.synced, { on: client, timeout: 10000, what: 'the reconnect with the fresh token' })
  client.doc.getText('text').insert(0, 'after refresh: ')
  const reader = createClient(t, server, 'expiring/doc', { name: 'B', params: { token: hs({ ...jwtClaims({ sub: 'bob', docs }), iat: nowSecs() }) } })
  await waitConverged([client, reader])
  assert.equal(reader.doc.getText('text').toString(), 'after refresh: before expiry')
  assert.deepEqual(client.closeCodes, [4401], 'one close, then a session that lasts')
})

e2e('expiry: a Hocuspocus socket closes with 4401 and the provider reconnects, asking its token function again', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const docs = { 'hocus-expiring': 'rw' }
  const token = { current: closingIn(2, { sub: 'alice', docs }) }
  const socket = hocusSocket(t, server)
  const a = hocusClient(t, socket, 'hocus-expiring', token)
  await waitFor(() => a.events.scopes.length === 1, { on: a.emitter, what: 'A authenticated' })
  token.current = hs({ ...jwtClaims({ sub: 'alice', docs }), iat: nowSecs() })
  await waitFor(() => socket.closes.includes(4401) && a.events.scopes.length === 2, { on: a.emitter, timeout: 10000, what: 'the 4401 close and the second authentication', detail: () => `closes ${socket.closes}` })
})

e2e('refresh in band: a Hocuspocus provider sends a new token; the session outlives the old one, and a read-only token downgrades it', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const rw = { 'refreshed/doc': 'rw' }
  const token = { current: closingIn(2, { sub: 'alice', docs: rw }) }
  const socket = hocusSocket(t, server)
  const a = hocusClient(t, socket, 'refreshed/doc', token)
  await waitFor(() => a.events.scopes.length === 1 && a.provider.isSynced, { on: a.emitter, what: 'A synced' })
  const otherToken = { current: hs({ ...jwtClaims({ sub: 'bob', docs: rw }), iat: nowSecs() }) }
  const otherSocket = hocusSocket(t, server)
  const b = hocusClient(t, otherSocket, 'refreshed/doc', otherToken)
  await waitFor(() => b.provider.isSynced, { on: b.emitter, what: 'B synced' })

  // In band: a later exp, on the open socket.
  token.current = hs({ ...jwtClaims({ sub: 'alice', docs: rw }), iat: nowSecs() })
  await a.provider.sendToken()
  await waitFor(() => a.events.scopes.length === 2, { on: a.emitter, what: 'the refresh answered' })
  assert.equal(a.events.scopes[1], 'read-write')
  // Past the first token's deadline (2 s): the socket stays, edits flow.
  await sleep(3000)
  assert.deepEqual(socket.closes, [], 'no close: the refreshed token holds the session')
  a.doc.getText('text').insert(0, 'still writing')
  await waitFor(() => b.doc.getText('text').toString() === 'still writing', { on: b.emitter, what: 'B to see A\'s edit after the refresh' })

  // A token that grants less: read-only, without a reconnect.
  token.current = hs({ ...jwtClaims({ sub: 'alice', docs: { 'refreshed/**': 'r' } }), iat: nowSecs() })
  await a.provider.sendToken()
  await waitFor(() => a.events.scopes.length === 3, { on: a.emitter, what: 'the downgrade answered' })
  assert.equal(a.events.scopes[2], 'readonly')
  a.doc.getText('text').insert(0, 'refused: ')
  b.doc.getText('text').insert(13, '!')
  await waitFor(() => a.doc.getText('text').toString() === 'refused: still writing!', { on: a.emitter, what: 'A to still receive B\'s edits' })
  // B's edit after A's refused one is the barrier: A's never reached B.
  b.doc.getText('text').insert(0, '>')
  await waitFor(() => a.doc.getText('text').toString().includes('>'), { on: a.emitter, what: 'A to see B\'s next edit' })
  assert.equal(b.doc.getText('text').toString(), '>still writing!', 'the read-only session\'s write reached nobody')
  assert.deepEqual(socket.closes, [], 'the downgrade did not close the socket')

  // A token that grants nothing detaches the document (the socket stays).
  token.current = hs({ ...jwtClaims({ sub: 'alice', docs: { 'elsewhere/*': 'rw' } }), iat: nowSecs() })
  await a.provider.sendToken()
  await waitFor(() => a.events.denied.length === 1, { on: a.emitter, what: 'the document detached' })
  assert.deepEqual(socket.closes, [])
})

e2e('revocation (embedded): a subject is closed with 4403 at once, its old tokens are refused, newer ones work; a document revocation downgrades; both survive a restart', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const docs = { 'rev/**': 'rw' }
  const old = hs({ ...jwtClaims({ sub: 'alice', docs }), iat: nowSecs() - 5 })
  const alice = createClient(t, server, 'rev/a', { name: 'alice', params: { token: old }, connect: true })
  const bob = createClient(t, server, 'rev/a', { name: 'bob', params: { token: hs({ ...jwtClaims({ sub: 'bob', docs }), iat: nowSecs() - 5 }) } })
  await waitSynced([alice, bob])
  // Not an admin: 403.
  const refused = await api(server, 'POST', '/api/revocations', { sub: 'alice' }, old)
  assert.equal(refused.status, 403)
  const bad = await api(server, 'POST', '/api/revocations', { docs: 'rev/*' })
  assert.equal(bad.status, 400, 'a revocation names a sub or a jti')

  const posted = now()
  const made = await api(server, 'POST', '/api/revocations', { sub: 'alice' })
  assert.equal(made.status, 201, JSON.stringify(made.body))
  assert.equal(made.body.sub, 'alice')
  assert.equal(made.body.access, 'none')
  assert.equal(made.body.expires_at - made.body.revoked_at, 24 * 3600, 'ends after --auth-max-token-lifetime (24h)')
  await waitFor(() => alice.closeCodes.includes(4403), { on: alice, timeout: 2000, what: 'alice closed with 4403' })
  report('revocation -> 4403 close, embedded node', now() - posted)
  assert.deepEqual(bob.closeCodes, [], 'bob is not touched')

  assertRefusal(await rawUpgrade(server, `/rev/a?token=${old}`), 403)
  const fresh = hs({ ...jwtClaims({ sub: 'alice', docs }), iat: nowSecs() + 1 })
  assert.equal((await rawUpgrade(server, `/rev/a?token=${fresh}`)).status, 101, 'a token issued after the revocation works')

  // A document revocation downgrades carol's session on rev/a to read-only.
  const carol = createClient(t, server, 'rev/a', { name: 'carol', params: { token: hs({ ...jwtClaims({ sub: 'carol', docs }), iat: nowSecs() - 5 }) } })
  await waitSynced(carol)
  const downgrade = await api(server, 'POST', '/api/revocations', { sub: 'carol', docs: 'rev/*', access: 'r' })
  assert.equal(downgrade.status, 201)
  carol.doc.getText('text').insert(0, 'x')
  bob.doc.getText('text').insert(0, 'from bob')
  await waitFor(() => carol.doc.getText('text').toString().includes('from bob'), { on: carol, what: 'carol still reads' })
  bob.doc.getText('text').insert(0, '>')
  await waitFor(() => carol.doc.getText('text').toString().includes('>'), { on: carol, what: 'carol sees bob\'s next edit' })
  assert.equal(bob.doc.getText('text').toString(), '>from bob', 'carol\'s write was refused')
  assert.deepEqual(carol.closeCodes, [], 'a downgrade does not close')

  const listed = await api(server, 'GET', '/api/revocations')
  assert.equal(listed.status, 200)
  assert.deepEqual(listed.body.revocations.map(r => r.sub), ['alice', 'carol'])

  for (const c of [alice, bob, carol]) c.destroy()
  await server.stop()
  await server.restart()
  const relisted = await api(server, 'GET', '/api/revocations')
  assert.deepEqual(relisted.body.revocations, listed.body.revocations, 'the revocations survive a restart')
  assertRefusal(await rawUpgrade(server, `/rev/a?token=${old}`), 403)
})

e2e('revocation (embedded): a Hocuspocus document is detached with PermissionDenied, the socket and its other documents stay', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const token = { current: hs({ ...jwtClaims({ sub: 'dave', docs: { 'hrev/**': 'rw' } }), iat: nowSecs() - 5 }) }
  const socket = hocusSocket(t, server)
  const kept = hocusClient(t, socket, 'hrev/kept', token)
  const lost = hocusClient(t, socket, 'hrev/lost', token)
  await waitFor(() => kept.events.scopes.length === 1 && lost.events.scopes.length === 1, { on: [kept.emitter, lost.emitter], what: 'both documents authenticated' })
  const made = await api(server, 'POST', '/api/revocations', { sub: 'dave', docs: 'hrev/lost' })
  assert.equal(made.status, 201)
  await waitFor(() => lost.events.denied.length === 1, { on: lost.emitter, timeout: 2000, what: 'the revoked document denied' })
  assert.match(lost.events.denied[0], /access revoked/)
  const reader = hocusClient(t, hocusSocket(t, server), 'hrev/kept', { current: hs({ ...jwtClaims({ sub: 'erin', docs: { 'hrev/**': 'rw' } }), iat: nowSecs() }) })
  await waitFor(() => reader.provider.isSynced, { on: reader.emitter, what: 'a reader synced' })
  kept.doc.getText('text').insert(0, 'still here')
  await waitFor(() => reader.doc.getText('text').toString() === 'still here', { on: reader.emitter, what: 'the kept document still syncs' })
  assert.deepEqual(socket.closes, [], 'the socket stays open')
})

const BROKER = process.env.WEFT_TEST_KAFKA
const skip = BROKER ? false : 'set WEFT_TEST_KAFKA=host:port (make test does)'

e2e('revocation (cluster): posted to node A, it closes the session on node B within a second, and node B still knows it after a restart', { skip, timeout: 120000 }, async (t) => {
  const topic = `e2e-revoke-${crypto.randomUUID()}`
  const nodes = []
  for (const name of ['node-a', 'node-b']) {
    nodes.push(await startWeft(t, {
      name,
      args: ['--auth-jwt-secret', SECRET, '--kafka-brokers', BROKER, '--kafka-topic', topic, '--node-id', name, '--kafka-fetch-wait-ms', '10']
    }))
  }
  const [a, b] = nodes
  const docs = { 'cluster/**': 'rw' }
  const tokens = [0, 1, 2].map(round => hs({ ...jwtClaims({ sub: 'mallory', docs, jti: `token-${round}` }), iat: nowSecs() - 5 }))
  const samples = []
  for (let round = 0; round < 3; round++) {
    const token = tokens[round]
    const session = createClient(t, b, `cluster/doc-${round}`, { name: `mallory on B #${round}`, params: { token } })
    await waitSynced(session)
    const posted = now()
    const made = await api(a, 'POST', '/api/revocations', round === 0 ? { jti: 'token-0' } : { sub: 'mallory', docs: `cluster/doc-${round}` })
    assert.equal(made.status, 201, JSON.stringify(made.body))
    await waitFor(() => session.closeCodes.includes(4403), { on: session, timeout: 5000, what: 'the 4403 close on node B' })
    samples.push(now() - posted)
    session.destroy()
  }
  for (const ms of samples) report('revocation on node A -> 4403 on node B', ms)
  assert.ok(Math.max(...samples) < 1000, `every close within 1 s: ${samples.map(ms => ms.toFixed(0)).join(', ')} ms`)

  await b.stop()
  await b.restart()
  const listed = await api(b, 'GET', '/api/revocations')
  assert.equal(listed.body.revocations.length, 3, 'node B read every revocation back before it was ready')
  assertRefusal(await rawUpgrade(b, `/cluster/doc-0?token=${tokens[0]}`), 403)
  assertRefusal(await rawUpgrade(b, `/cluster/doc-1?token=${tokens[1]}`), 403)
  assert.equal((await rawUpgrade(b, `/cluster/doc-0?token=${tokens[1]}`)).status, 101, 'a document revocation covers its documents only')
})
