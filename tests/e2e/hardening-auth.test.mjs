// Access control against the binary: JWT authentication (HS256 secret, or a
// PEM public key for RS256 / ES256 / EdDSA), per-document grants with globs,
// read-only sessions, and the Origin allow-list. Every refusal happens before
// the 101 with a status and a JSON error body.

import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged,
  rawUpgrade, assertRefusal, openRaw, customWebSocket, syncFrame,
  signJwt, jwtKeyPair, jwtClaims, writeTempFile, Y
} from '../lib/harness.mjs'

const SECRET = 'hardening-e2e-shared-secret-0123456789'
const nowSecs = () => Math.floor(Date.now() / 1000)
const hs = (claims, secret = SECRET) => signJwt(claims, { alg: 'HS256', secret })
const q = (token) => `?token=${encodeURIComponent(token)}`

/** Decoded frames a provider received; emits 'change' on each (for waitFor). */
class FrameRecorder extends EventEmitter {
  constructor () {
    super()
    this.frames = []
    this.record = (frame) => { this.frames.push(frame); this.emit('change') }
  }
}

/** A raw session reaches its greeting; returns once the SyncStep1 arrived. */
async function openAndGreet (t, server, target, opts = {}) {
  const session = await openRaw(t, server, target, opts)
  await session.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting (SyncStep1)' })
  return session
}

/**
 * A raw session asks for the server's state (SyncStep1 with an empty state
 * vector) and waits for the SyncStep2 answer: a barrier after which any
 * frame the server sends right after its greeting has arrived.
 */
async function roundTrip (session) {
  const before = session.frames.filter(f => f.type === 'sync-step2').length
  session.send(syncFrame(0, Y.encodeStateVector(new Y.Doc())))
  await waitFor(() => session.frames.filter(f => f.type === 'sync-step2').length > before, {
    on: session, what: `${session.name} to get a SyncStep2 answer`,
    detail: () => `frames: ${session.frames.map(f => f.type).join(', ')}; close: ${JSON.stringify(session.close)}`
  })
}

e2e('open mode (no key): loud warning at start-up, no token needed, any Origin', async (t) => {
  const server = await startWeft(t)
  const startup = server.logs()
  assert.match(startup, /WARN/, 'a WARN line at start-up')
  assert.match(startup, /auth/i, 'the warning is about authentication')

  const a = createClient(t, server, 'open-doc', { name: 'A' })
  const b = createClient(t, server, 'open-doc', { name: 'B' })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'open')
  await waitConverged([a, b])

  // without --allowed-origins any Origin is allowed
  const res = await rawUpgrade(server, '/open-doc', { headers: { Origin: 'http://anything.example' } })
  assert.equal(res.status, 101, 'any Origin is accepted without --allowed-origins')
})

e2e('HS256: a valid token is accepted in the query and in an Authorization header', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const token = hs(jwtClaims({ sub: 'alice', docs: { 'hs-doc': 'rw' } }))

  // a real y-websocket client with `params: { token }` (sent as ?token=)
  const a = createClient(t, server, 'hs-doc', { name: 'A', params: { token } })
  // a real client whose socket carries `Authorization: Bearer ...` instead
  const b = createClient(t, server, 'hs-doc', {
    name: 'B', WebSocketPolyfill: customWebSocket({ headers: { Authorization: `Bearer ${token}` } })
  })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'from the query client')
  await waitFor(() => b.doc.getText('text').toString() === 'from the query client', {
    on: b, what: 'B (header token) to see A\'s edit'
  })
  b.doc.getMap('map').set('from', 'header client')
  await waitConverged([a, b])
  assert.equal(a.doc.getMap('map').get('from'), 'header client')
  assert.deepEqual([a.closeCodes, b.closeCodes], [[], []], 'no session was closed')

  // the raw view of both forms: a 101
  assert.equal((await rawUpgrade(server, `/hs-doc${q(token)}`)).status, 101, 'query token')
  assert.equal((await rawUpgrade(server, '/hs-doc', { headers: { Authorization: `Bearer ${token}` } })).status, 101, 'header token')
})

e2e('HS256 secret from WEFT_AUTH_JWT_SECRET is enforced', async (t) => {
  const server = await startWeft(t, { env: { WEFT_AUTH_JWT_SECRET: SECRET } })
  assertRefusal(await rawUpgrade(server, '/env-doc'), 401, { what: 'no token' })
  const token = hs(jwtClaims({ docs: { 'env-doc': 'rw' } }))
  assert.equal((await rawUpgrade(server, `/env-doc${q(token)}`)).status, 101)
})

e2e('HS256: every kind of bad token is refused with 401 before the upgrade', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const docs = { 'guarded': 'rw' }
  const good = jwtClaims({ docs })
  const [head, body] = hs(good).split('.')
  const cases = [
    { what: 'no token at all', target: '/guarded' },
    { what: 'empty token', target: '/guarded?token=' },
    { what: 'signed with another secret', target: `/guarded${q(hs(good, 'another-secret-entirely'))}` },
    { what: 'signature of another payload', target: `/guarded${q(`${head}.${body}.${hs(jwtClaims({ docs: { '**': 'rw' } })).split('.')[2]}`)}` },
    { what: 'not a JWT', target: '/guarded?token=hello' },
    { what: 'three garbage segments', target: '/guarded?token=a.b.c' },
    { what: 'payload that is not JSON', target: `/guarded${q(hs('not json'))}` },
    { what: 'alg none (unsigned)', target: `/guarded${q(signJwt(good, { alg: 'none' }))}` },
    { what: 'expired by 120 s (beyond the 30 s leeway)', target: `/guarded${q(hs({ ...good, exp: nowSecs() - 120 }))}` },
    { what: 'not valid for another 120 s (nbf beyond the leeway)', target: `/guarded${q(hs({ ...good, nbf: nowSecs() + 120 }))}` },
    { what: 'missing exp', target: `/guarded${q(hs({ sub: 'alice', docs }))}` },
    { what: 'missing sub', target: `/guarded${q(hs({ exp: nowSecs() + 3600, docs }))}` },
    { what: 'bad token in the Authorization header', target: '/guarded', headers: { Authorization: `Bearer ${hs(good, 'wrong')}` } },
    { what: 'Authorization without the Bearer scheme', target: '/guarded', headers: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } }
  ]
  for (const c of cases) {
    const res = await rawUpgrade(server, c.target, { headers: c.headers })
    assertRefusal(res, 401, { what: c.what })
  }

  // the leeway works both ways: 10 s past exp or 10 s before nbf is accepted
  const lateButInLeeway = hs({ ...good, exp: nowSecs() - 10 })
  assert.equal((await rawUpgrade(server, `/guarded${q(lateButInLeeway)}`)).status, 101, 'expired 10 s ago is within the 30 s leeway')
  const earlyButInLeeway = hs({ ...good, nbf: nowSecs() + 10 })
  assert.equal((await rawUpgrade(server, `/guarded${q(earlyButInLeeway)}`)).status, 101, 'nbf 10 s ahead is within the 30 s leeway')

  // the server still serves a valid token after all those refusals
  const ok = createClient(t, server, 'guarded', { name: 'ok', params: { token: hs(good) } })
  await waitSynced(ok)
})

e2e('grants: a valid token without a grant for the document gets 403; globs and widest grant', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const token = hs(jwtClaims({
    sub: 'bob',
    docs: {
      'exact-doc': 'rw',
      'team/*': 'rw',
      'archive/**': 'r',
      'shared/*': 'r',
      'shared/edit-me': 'rw'
    }
  }))
  const allowed = ['exact-doc', 'team/notes', 'archive/2024/q1/report', 'archive/x', 'shared/readme', 'shared/edit-me']
  for (const doc of allowed) {
    const res = await rawUpgrade(server, `/${doc}${q(token)}`)
    assert.equal(res.status, 101, `${doc} is granted (got ${res.status} ${res.body || ''})`)
  }
  const forbidden = ['other-doc', 'exact-doc-2', 'exact', 'team/notes/deeper', 'team', 'teams/notes', 'archive', 'shared/a/b']
  for (const doc of forbidden) {
    assertRefusal(await rawUpgrade(server, `/${doc}${q(token)}`), 403, { what: `no grant for ${doc}` })
  }
  // a token with no "docs" claim at all grants nothing
  const bare = hs({ sub: 'carol', exp: nowSecs() + 3600 })
  assertRefusal(await rawUpgrade(server, `/exact-doc${q(bare)}`), 403, { what: 'token without docs' })

  // widest grant wins: "shared/edit-me" matches "shared/*": "r" and
  // "shared/edit-me": "rw", so it is writable and not told "permission denied"
  const rw = await openAndGreet(t, server, `shared/edit-me${q(token)}`, { name: 'rw' })
  await roundTrip(rw)
  assert.deepEqual(rw.frames.filter(f => f.type === 'auth'), [], 'no permission-denied message for a rw grant')
  const ro = await openAndGreet(t, server, `shared/readme${q(token)}`, { name: 'ro' })
  await ro.waitFrame(f => f.type === 'auth', { what: 'permission denied for an r grant' })

  const writer = createClient(t, server, 'shared/edit-me', { name: 'writer', params: { token } })
  const peer = createClient(t, server, 'shared/edit-me', { name: 'peer', params: { token } })
  await waitSynced([writer, peer])
  writer.doc.getText('text').insert(0, 'writable through the wider grant')
  await waitConverged([writer, peer], { what: 'the rw edit to reach the peer' })

  // the same with "**" read-only and an exact rw grant on top of it
  const star = hs(jwtClaims({ docs: { '**': 'r', 'one/exact': 'rw' } }))
  const starWriter = createClient(t, server, 'one/exact', { name: 'star-writer', params: { token: star } })
  const starPeer = createClient(t, server, 'one/exact', { name: 'star-peer', params: { token: star } })
  await waitSynced([starWriter, starPeer])
  starWriter.doc.getMap('map').set('k', 'v')
  await waitConverged([starWriter, starPeer], { what: 'the rw edit under "**": "r" to reach the peer' })
})

for (const alg of ['RS256', 'ES256', 'EdDSA']) {
  e2e(`${alg}: a token signed with the key in --auth-jwt-public-key is accepted, another key's is refused`, async (t) => {
    const { privateKey, publicKeyPem } = jwtKeyPair(alg)
    const other = jwtKeyPair(alg)
    const keyFile = writeTempFile(t, 'jwt-public.pem', publicKeyPem)
    const server = await startWeft(t, { args: ['--auth-jwt-public-key', keyFile] })
    const claims = jwtClaims({ sub: `user-${alg}`, docs: { [`pk/${alg}`]: 'rw' } })
    const token = signJwt(claims, { alg, privateKey })

    const a = createClient(t, server, `pk/${alg}`, { name: 'A', params: { token } })
    const b = createClient(t, server, `pk/${alg}`, {
      name: 'B', WebSocketPolyfill: customWebSocket({ headers: { Authorization: `Bearer ${token}` } })
    })
    await waitSynced([a, b])
    a.doc.getText('text').insert(0, `signed with ${alg}`)
    await waitConverged([a, b])

    const refused = [
      { what: `${alg} token of another key`, token: signJwt(claims, { alg, privateKey: other.privateKey }) },
      // algorithm confusion: the public key PEM used as an HMAC secret
      { what: 'HS256 token keyed with the public key PEM', token: signJwt(claims, { alg: 'HS256', secret: publicKeyPem }) },
      { what: 'unsigned token', token: signJwt(claims, { alg: 'none' }) },
      { what: 'expired token of the right key', token: signJwt({ ...claims, exp: nowSecs() - 120 }, { alg, privateKey }) }
    ]
    for (const r of refused) {
      assertRefusal(await rawUpgrade(server, `/pk/${alg}${q(r.token)}`), 401, { what: r.what })
    }
    // the right key but no grant for this document
    assertRefusal(await rawUpgrade(server, `/pk/elsewhere${q(token)}`), 403, { what: 'no grant' })
  })
}

e2e('EdDSA public key from WEFT_AUTH_JWT_PUBLIC_KEY; a token of another algorithm is refused', async (t) => {
  const ed = jwtKeyPair('EdDSA')
  const es = jwtKeyPair('ES256')
  const keyFile = writeTempFile(t, 'ed25519.pem', ed.publicKeyPem)
  const server = await startWeft(t, { env: { WEFT_AUTH_JWT_PUBLIC_KEY: keyFile } })
  const claims = jwtClaims({ docs: { 'env-pk': 'rw' } })
  assert.equal((await rawUpgrade(server, `/env-pk${q(signJwt(claims, { alg: 'EdDSA', privateKey: ed.privateKey }))}`)).status, 101)
  assertRefusal(await rawUpgrade(server, `/env-pk${q(signJwt(claims, { alg: 'ES256', privateKey: es.privateKey }))}`), 401, { what: 'ES256 token on an Ed25519 key' })
  assertRefusal(await rawUpgrade(server, '/env-pk'), 401, { what: 'no token' })
})

e2e('read-only grant: receives sync, edits and awareness, is told "permission denied", cannot write', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET, '--shutdown-grace', '10s'] })
  const DOC = 'ro/doc'
  const rwToken = hs(jwtClaims({ sub: 'writer', docs: { 'ro/*': 'rw' } }))
  const roToken = hs(jwtClaims({ sub: 'reader', docs: { 'ro/*': 'r' } }))

  const writer = createClient(t, server, DOC, { name: 'writer', params: { token: rwToken } })
  const watcher = createClient(t, server, DOC, { name: 'watcher', params: { token: rwToken } })
  await waitSynced([writer, watcher])
  writer.doc.getText('text').insert(0, 'written before the reader joined')
  await waitConverged([writer, watcher])

  // The reader edits before it even connects: its SyncStep2 answer to the
  // server carries that edit and must be ignored too.
  const recorder = new FrameRecorder()
  const readerFrames = recorder.frames
  const reader = createClient(t, server, DOC, {
    name: 'reader',
    connect: false,
    params: { token: roToken },
    WebSocketPolyfill: customWebSocket({ onFrame: recorder.record })
  })
  reader.doc.getMap('map').set('reader-offline', 'must not be stored')
  reader.provider.connect()
  await waitSynced(reader)

  // initial sync: the reader has the writer's text
  await waitFor(() => reader.doc.getText('text').toString() === 'written before the reader joined', {
    on: reader, what: 'the reader to receive the existing content'
  })

  // the permission-denied auth message (tag 2, 0, reason), right after the
  // greeting (only SyncStep1 / awareness frames before it)
  const auth = await waitFor(() => readerFrames.find(f => f.type === 'auth'), {
    on: [reader, recorder], what: 'the reader to receive an auth message',
    detail: () => `reader frames: ${readerFrames.map(f => f.type).join(', ')}`
  })
  assert.equal(auth.sub, 0, 'auth message sub-type is permission-denied (0)')
  assert.equal(typeof auth.reason, 'string')
  assert.ok(auth.reason.length > 0, 'the permission-denied message carries a reason')
  const authIndex = readerFrames.indexOf(auth)
  const beforeAuth = readerFrames.slice(0, authIndex).map(f => f.type)
  assert.ok(beforeAuth.length >= 1 && beforeAuth.every(type => type === 'sync-step1' || type === 'awareness'),
    `only the greeting precedes the auth message, got: ${beforeAuth.join(', ')}`)
  assert.equal(readerFrames[0].type, 'sync-step1', 'the greeting starts with SyncStep1')

  // live updates reach the reader
  writer.doc.getText('text').insert(0, 'live: ')
  await waitFor(() => reader.doc.getText('text').toString().startsWith('live: written before'), {
    on: reader, what: 'the reader to receive a live edit'
  })

  // awareness is relayed both ways
  reader.awareness.setLocalStateField('user', { name: 'Reader' })
  writer.awareness.setLocalStateField('user', { name: 'Writer' })
  await waitFor(() => writer.awareness.getStates().get(reader.doc.clientID)?.user?.name === 'Reader', {
    on: writer, what: 'the writer to see the reader\'s awareness'
  })
  await waitFor(() => reader.awareness.getStates().get(writer.doc.clientID)?.user?.name === 'Writer', {
    on: reader, what: 'the reader to see the writer\'s awareness'
  })

  // the reader writes while connected...
  reader.doc.getText('text').insert(0, 'READER WAS HERE ')
  reader.doc.getArray('array').push(['reader-online'])
  // ...then sends an awareness change after those updates (same session,
  // same order): once the writer sees it, the server has read the updates.
  reader.awareness.setLocalStateField('user', { name: 'Reader', after: 'edits' })
  await waitFor(() => writer.awareness.getStates().get(reader.doc.clientID)?.user?.after === 'edits', {
    on: writer, what: 'the writer to see the reader\'s awareness sent after its edits'
  })
  // and a write of the writer's own, which reaches the watcher only after
  // anything the server broadcast before it
  writer.doc.getMap('map').set('barrier', 1)
  await waitFor(() => watcher.doc.getMap('map').get('barrier') === 1, { on: watcher, what: 'the barrier edit' })
  // a fresh rw client syncs the server's state as it is now
  const fresh = createClient(t, server, DOC, { name: 'fresh', params: { token: rwToken } })
  await waitSynced(fresh)
  await waitConverged([writer, watcher, fresh], { what: 'the rw clients to agree' })
  for (const c of [writer, watcher, fresh]) {
    assert.equal(c.doc.getText('text').toString(), 'live: written before the reader joined', `${c.name} text has no reader edit`)
    assert.equal(c.doc.getMap('map').get('reader-offline'), undefined, `${c.name} has no offline reader edit`)
    assert.deepEqual(c.doc.getArray('array').toJSON(), [], `${c.name} array has no reader edit`)
    const sv = Y.decodeStateVector(Y.encodeStateVector(c.doc))
    assert.equal(sv.has(reader.doc.clientID), false, `${c.name}'s state vector has no entry of the reader's client`)
  }
  // the reader's session stayed open
  assert.deepEqual(reader.closeCodes, [], 'the read-only session was not closed')
  assert.equal(reader.provider.wsconnected, true, 'the reader is still connected')
  // and it keeps receiving
  writer.doc.getArray('array').push(['still-live'])
  await waitFor(() => reader.doc.getArray('array').toJSON().includes('still-live'), {
    on: reader, what: 'the reader to keep receiving edits after its refused writes'
  })

  // a graceful restart: nothing of the reader's was stored either
  for (const c of [writer, watcher, fresh, reader]) c.destroy()
  const stop = await server.stop({ timeout: 15000 })
  assert.equal(stop.code, 0)
  await server.restart()
  const after = createClient(t, server, DOC, { name: 'after-restart', params: { token: rwToken } })
  await waitSynced(after)
  assert.equal(after.doc.getText('text').toString(), 'live: written before the reader joined')
  assert.equal(after.doc.getMap('map').get('reader-offline'), undefined)
  assert.equal(after.doc.getMap('map').get('barrier'), 1)
  assert.deepEqual(after.doc.getArray('array').toJSON(), ['still-live'])
  const sv = Y.decodeStateVector(Y.encodeStateVector(after.doc))
  assert.equal(sv.has(reader.doc.clientID), false, 'no update of the reader was stored')
})

e2e('read-only grant: a raw reader gets "permission denied" after the greeting and its update is not relayed', async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const rwToken = hs(jwtClaims({ docs: { 'raw-ro': 'rw' } }))
  const roToken = hs(jwtClaims({ docs: { 'raw-ro': 'r' } }))
  const writer = createClient(t, server, 'raw-ro', { name: 'writer', params: { token: rwToken } })
  await waitSynced(writer)
  writer.doc.getText('text').insert(0, 'hello')
  // make sure the server has it (a second rw client sees it)
  const peer = createClient(t, server, 'raw-ro', { name: 'peer', params: { token: rwToken } })
  await waitConverged([writer, peer])

  const reader = await openAndGreet(t, server, `raw-ro${q(roToken)}`, { name: 'raw-reader' })
  const auth = await reader.waitFrame(f => f.type === 'auth', { what: 'the permission-denied message' })
  assert.equal(auth.sub, 0)
  assert.ok(auth.reason.length > 0)
  const idx = reader.frames.indexOf(auth)
  assert.ok(reader.frames.slice(0, idx).every(f => f.type === 'sync-step1' || f.type === 'awareness'),
    `only greeting frames precede the auth message: ${reader.frames.map(f => f.type).join(', ')}`)

  // an update from the reader (as Update and as SyncStep2)
  const rogue = new Y.Doc()
  rogue.getText('text').insert(0, 'ROGUE ')
  const update = Y.encodeStateAsUpdate(rogue)
  reader.send(syncFrame(2, update))
  reader.send(syncFrame(1, update))
  // a SyncStep1 after them: its SyncStep2 answer comes after the updates were handled
  await roundTrip(reader)
  const answer = reader.frames.filter(f => f.type === 'sync-step2').at(-1)
  const probe = new Y.Doc()
  Y.applyUpdate(probe, answer.payload)
  assert.equal(probe.getText('text').toString(), 'hello', 'the server state (SyncStep2 answer) has no reader edit')
  assert.equal(reader.close, null, 'the read-only session stays open')

  writer.doc.getText('text').insert(5, ' world')
  await waitFor(() => reader.frames.some(f => f.type === 'update'), { on: reader, what: 'the reader to receive a live update' })
  await waitConverged([writer, peer])
  assert.equal(peer.doc.getText('text').toString(), 'hello world')
  const fresh = createClient(t, server, 'raw-ro', { name: 'fresh', params: { token: rwToken } })
  await waitSynced(fresh)
  assert.equal(fresh.doc.getText('text').toString(), 'hello world')
  assert.equal(reader.close, null, 'the read-only session is still open')
})

e2e('Origin allow-list: a listed Origin or none is accepted, any other gets 403', async (t) => {
  const server = await startWeft(t, { args: ['--allowed-origins', 'http://good.example,https://app.good.example'] })
  for (const origin of ['http://good.example', 'https://app.good.example']) {
    assert.equal((await rawUpgrade(server, '/origin-doc', { headers: { Origin: origin } })).status, 101, `Origin ${origin}`)
  }
  assert.equal((await rawUpgrade(server, '/origin-doc')).status, 101, 'no Origin header (non-browser client)')
  for (const origin of ['http://evil.example', 'http://good.example.evil.example', 'https://good.example', 'http://good.example:8080', 'null']) {
    assertRefusal(await rawUpgrade(server, '/origin-doc', { headers: { Origin: origin } }), 403, { what: `Origin ${origin}` })
  }
  // a real client with an allowed Origin works
  const a = createClient(t, server, 'origin-doc', {
    name: 'A', WebSocketPolyfill: customWebSocket({ headers: { Origin: 'http://good.example' } })
  })
  const b = createClient(t, server, 'origin-doc', { name: 'B' })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'same-origin editor')
  await waitConverged([a, b])
})

e2e('Origin allow-list from WEFT_ALLOWED_ORIGINS, together with authentication', async (t) => {
  const server = await startWeft(t, {
    args: ['--auth-jwt-secret', SECRET],
    env: { WEFT_ALLOWED_ORIGINS: 'http://good.example' }
  })
  const token = hs(jwtClaims({ docs: { 'both': 'rw' } }))
  assert.equal((await rawUpgrade(server, `/both${q(token)}`, { headers: { Origin: 'http://good.example' } })).status, 101)
  assertRefusal(await rawUpgrade(server, `/both${q(token)}`, { headers: { Origin: 'http://evil.example' } }), 403, { what: 'valid token, bad Origin' })
  assertRefusal(await rawUpgrade(server, '/both', { headers: { Origin: 'http://good.example' } }), 401, { what: 'good Origin, no token' })
})
