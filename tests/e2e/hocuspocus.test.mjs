// The Hocuspocus protocol at `/` with the unmodified @hocuspocus/provider
// (4.8, and 3.4 for what both versions do): many documents over one socket,
// per-document tokens, sync-status acknowledgements, stateless messages, and
// a Hocuspocus client and a y-websocket client on one document.

import assert from 'node:assert/strict'
import * as decoding from 'lib0/decoding'
import * as providerV4 from '@hocuspocus/provider'
import * as providerV3 from '@hocuspocus/provider-v3'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, Y, WebSocket, signJwt, jwtClaims
} from '../lib/harness.mjs'

const VERSIONS = { '4.8': providerV4, '3.4': providerV3 }

/** The Hocuspocus sync status message type. */
const SYNC_STATUS = 8

/** The applied flag of a sync status frame, or `null` for any other frame. */
function syncStatusOf (data) {
  const decoder = decoding.createDecoder(new Uint8Array(data))
  decoding.readVarString(decoder)
  if (decoding.readVarUint(decoder) !== SYNC_STATUS) return null
  return decoding.readVarInt(decoder) === 1
}

/**
 * A HocuspocusProvider on `socket` (a shared HocuspocusProviderWebsocket).
 * `opts.seed`: an update applied to its document before it connects (what
 * a client that cached the document holds). `events.statuses` lists the
 * sync statuses the server sent it, in order.
 */
function hocus (t, socket, name, opts = {}) {
  const doc = new Y.Doc()
  if (opts.seed) Y.applyUpdate(doc, opts.seed)
  const events = { authenticated: null, denied: null, synced: false, stateless: [], statuses: [] }
  const provider = new socket.weftProviderModule.HocuspocusProvider({
    websocketProvider: socket,
    name,
    document: doc,
    token: opts.token ?? null,
    onAuthenticated: ({ scope }) => { events.authenticated = scope ?? 'authenticated' },
    onAuthenticationFailed: ({ reason }) => { events.denied = reason },
    onSynced: () => { events.synced = true },
    onStateless: ({ payload }) => { events.stateless.push(payload) },
    onMessage: ({ event }) => {
      const applied = syncStatusOf(event.data)
      if (applied !== null) events.statuses.push(applied)
    }
  })
  provider.attach()
  t.after(() => provider.destroy())
  return { doc, provider, events, awareness: provider.awareness, name }
}

function hocusSocket (t, server, module = providerV4) {
  const socket = new module.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: WebSocket })
  socket.weftProviderModule = module
  t.after(() => socket.destroy())
  return socket
}

/** Waits on a Hocuspocus client's doc, awareness and provider events. */
function waitHocus (clients, predicate, what, timeout = 10000) {
  const list = Array.isArray(clients) ? clients : [clients]
  return new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) { cleanup(); resolve() }
    }
    const timer = setTimeout(() => { cleanup(); reject(new Error(`timed out after ${timeout} ms waiting for ${what}`)) }, timeout)
    const subs = []
    for (const c of list) {
      c.doc.on('update', check); subs.push(() => c.doc.off('update', check))
      c.awareness.on('change', check); subs.push(() => c.awareness.off('change', check))
      for (const ev of ['synced', 'authenticated', 'authenticationFailed', 'unsyncedChanges', 'status', 'stateless', 'message']) {
        c.provider.on(ev, check); subs.push(() => c.provider.off(ev, check))
      }
    }
    const cleanup = () => { clearTimeout(timer); for (const u of subs) u() }
    check()
  })
}

for (const [version, module] of Object.entries(VERSIONS)) {
e2e(`hocuspocus ${version}: two providers converge; two documents share one socket`, async (t) => {
  const server = await startWeft(t)
  const socketA = hocusSocket(t, server, module)
  const socketB = hocusSocket(t, server, module)
  const a1 = hocus(t, socketA, 'hocus/one')
  const a2 = hocus(t, socketA, 'hocus/two')
  const b1 = hocus(t, socketB, 'hocus/one')
  const b2 = hocus(t, socketB, 'hocus/two')
  await waitHocus([a1, a2, b1, b2], () => [a1, a2, b1, b2].every(c => c.events.synced), 'all four to sync')
  a1.doc.getText('text').insert(0, 'one from a')
  b2.doc.getText('text').insert(0, 'two from b')
  await waitHocus([b1, a2], () => b1.doc.getText('text').toString() === 'one from a' &&
    a2.doc.getText('text').toString() === 'two from b', 'each edit to reach the other socket')
  assert.equal(a1.doc.getText('text').toString(), 'one from a', 'documents do not mix')
  assert.equal(b1.doc.getText('text').length, 'one from a'.length)
  // Sync-status acknowledgements: nothing left unsynced once durable.
  await waitHocus([a1, b2], () => a1.provider.unsyncedChanges === 0 && b2.provider.unsyncedChanges === 0, 'the edits to be acknowledged')
})
}

e2e('hocuspocus: a Hocuspocus client and a y-websocket client edit one document and see each other\'s presence', async (t) => {
  const server = await startWeft(t)
  const h = hocus(t, hocusSocket(t, server), 'mixed/doc')
  const y = createClient(t, server, 'mixed/doc', { name: 'y-websocket' })
  await waitSynced(y)
  await waitHocus(h, () => h.events.synced, 'the hocuspocus client to sync')
  h.doc.getArray('array').push(['from hocuspocus'])
  y.doc.getArray('array').push(['from y-websocket'])
  await waitFor(() => y.doc.getArray('array').length === 2, { on: y, what: 'y-websocket to see both' })
  await waitHocus(h, () => h.doc.getArray('array').length === 2, 'hocuspocus to see both')
  assert.deepEqual(h.doc.getArray('array').toJSON().sort(), y.doc.getArray('array').toJSON().sort())
  h.awareness.setLocalStateField('user', { name: 'Hocus' })
  y.awareness.setLocalStateField('user', { name: 'Ywebs' })
  await waitFor(() => y.awareness.getStates().get(h.doc.clientID)?.user?.name === 'Hocus', { on: y, what: 'the hocuspocus cursor on y-websocket' })
  await waitHocus(h, () => h.awareness.getStates().get(y.doc.clientID)?.user?.name === 'Ywebs', 'the y-websocket cursor on hocuspocus')
})

for (const [version, module] of Object.entries(VERSIONS)) {
e2e(`hocuspocus ${version}: per-document tokens: a granted document syncs, a refused one is denied on the same socket`, async (t) => {
  const secret = 'hocuspocus-test-secret'
  const server = await startWeft(t, { args: ['--auth-jwt-secret', secret] })
  const token = signJwt(jwtClaims({ docs: { 'team/*': 'rw', 'public/*': 'r' } }), { secret })
  const socket = hocusSocket(t, server, module)
  const granted = hocus(t, socket, 'team/notes', { token })
  const readOnly = hocus(t, socket, 'public/page', { token })
  const refused = hocus(t, socket, 'secret/plans', { token })
  await waitHocus([granted, readOnly, refused], () => granted.events.synced && readOnly.events.synced && refused.events.denied !== null,
    'two documents to sync and one to be refused')
  assert.equal(readOnly.events.authenticated, 'readonly')
  assert.match(refused.events.denied, /token|document/i)
  // The read-only client's edit is acknowledged as not applied and never
  // reaches another client.
  const writer = hocus(t, hocusSocket(t, server, module), 'public/page', { token: signJwt(jwtClaims({ docs: { 'public/*': 'rw' } }), { secret }) })
  await waitHocus(writer, () => writer.events.synced, 'the writer to sync')
  readOnly.doc.getText('text').insert(0, 'not allowed')
  writer.doc.getText('text').insert(0, 'allowed')
  await waitHocus(readOnly, () => readOnly.doc.getText('text').toString().includes('allowed'), 'the writer\'s edit on the reader')
  assert.equal(writer.doc.getText('text').toString(), 'allowed', 'the read-only edit was not applied')
})
}

for (const [version, module] of Object.entries(VERSIONS)) {
e2e(`hocuspocus ${version}: a read-only provider is answered as Hocuspocus answers it: synced for what the document holds, not applied for an edit`, async (t) => {
  const secret = 'hocuspocus-test-secret'
  const server = await startWeft(t, { args: ['--auth-jwt-secret', secret] })
  const readToken = signJwt(jwtClaims({ docs: { 'public/*': 'r' } }), { secret })
  const writer = hocus(t, hocusSocket(t, server, module), 'public/page', { token: signJwt(jwtClaims({ docs: { 'public/*': 'rw' } }), { secret }) })
  await waitHocus(writer, () => writer.events.synced, 'the writer to sync')
  writer.doc.getText('text').insert(0, 'hello!!')
  writer.doc.getText('text').delete(5, 2)
  await waitHocus(writer, () => writer.provider.unsyncedChanges === 0, 'the writer\'s edits to be acknowledged')

  // A reader with an empty document, and one that cached the document (its
  // SyncStep2 carries the document's deletions): what each sends on
  // joining brings nothing the document lacks, so it is answered as synced
  // and nothing stays unsynced.
  const fresh = hocus(t, hocusSocket(t, server, module), 'public/page', { token: readToken })
  const cached = hocus(t, hocusSocket(t, server, module), 'public/page', { token: readToken, seed: Y.encodeStateAsUpdate(writer.doc) })
  await waitHocus([fresh, cached], () => [fresh, cached].every(c => c.events.synced && c.provider.unsyncedChanges === 0 &&
    c.doc.getText('text').toString() === 'hello'), 'both readers to sync with nothing unsynced')
  for (const reader of [fresh, cached]) {
    assert.equal(reader.events.authenticated, 'readonly')
    assert.deepEqual(reader.events.statuses, [true], 'the joining SyncStep2 answered as synced')
  }

  // An edit is new to the document: answered as not applied (as Hocuspocus
  // does), so the provider keeps it unsynced, and never applied.
  fresh.doc.getText('text').insert(0, 'not allowed ')
  await waitHocus(fresh, () => fresh.events.statuses.length === 2, 'the answer to the read-only edit')
  assert.deepEqual(fresh.events.statuses, [true, false], 'the edit answered as not applied')
  assert.equal(fresh.provider.unsyncedChanges, 1, 'the refused edit stays unsynced')
  // The writer's next edit reaches the readers after anything the node
  // applied before it: the read-only edit is not among it.
  writer.doc.getText('text').insert(5, ', world')
  await waitHocus([fresh, cached], () => cached.doc.getText('text').toString() === 'hello, world' &&
    fresh.doc.getText('text').toString().includes(', world'), 'the writer\'s edit on the readers')
  assert.equal(writer.doc.getText('text').toString(), 'hello, world', 'the read-only edit was not applied')
  assert.equal(cached.provider.unsyncedChanges, 0)
})
}

const BROKER = process.env.WEFT_TEST_KAFKA
if (!BROKER && process.env.CI) throw new Error('WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it')

e2e('hocuspocus: a Hocuspocus client and a y-websocket client on different nodes see each other\'s edits and presence', {
  skip: BROKER ? false : 'set WEFT_TEST_KAFKA (make test does)', timeout: 60000
}, async (t) => {
  const topic = `hocus-${Date.now()}-${process.pid}`
  const node = (i) => startWeft(t, {
    name: `node-${i}`,
    args: ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '2', '--node-id', `node-${i}`, '--kafka-fetch-wait-ms', '10']
  })
  const nodes = [await node(0), await node(1)]
  const h = hocus(t, hocusSocket(t, nodes[0]), 'cross/doc')
  const y = createClient(t, nodes[1], 'cross/doc', { name: 'y-websocket@node-1' })
  await waitSynced(y)
  await waitHocus(h, () => h.events.synced, 'the hocuspocus client to sync')
  h.doc.getText('text').insert(0, 'H')
  y.doc.getText('text').insert(0, 'Y')
  await waitFor(() => y.doc.getText('text').length === 2, { on: y, timeout: 15000, what: 'node-1 to see the hocuspocus edit' })
  await waitHocus(h, () => h.doc.getText('text').length === 2, 'node-0 to see the y-websocket edit', 15000)
  assert.equal(h.doc.getText('text').toString(), y.doc.getText('text').toString())
  await waitHocus(h, () => h.provider.unsyncedChanges === 0, 'the hocuspocus edit acknowledged once the broker holds it')
  h.awareness.setLocalStateField('user', { name: 'Hocus' })
  await waitFor(() => y.awareness.getStates().get(h.doc.clientID)?.user?.name === 'Hocus', { on: y, timeout: 15000, what: 'the hocuspocus cursor on node-1' })
  y.awareness.setLocalStateField('user', { name: 'Ywebs' })
  await waitHocus(h, () => h.awareness.getStates().get(y.doc.clientID)?.user?.name === 'Ywebs', 'the y-websocket cursor on node-0', 15000)

  // Stateless messages cross nodes too (and are never stored).
  const other = hocus(t, hocusSocket(t, nodes[1]), 'cross/doc')
  await waitHocus(other, () => other.events.synced, 'a hocuspocus client on node-1 to sync')
  h.provider.sendStateless(JSON.stringify({ ping: 'across' }))
  await waitHocus(other, () => other.events.stateless.length === 1, 'the stateless message on node-1', 15000)
  assert.deepEqual(JSON.parse(other.events.stateless[0]), { ping: 'across' })
  assert.deepEqual(h.events.stateless, [], 'not echoed to its sender')
})

e2e('hocuspocus: stateless messages reach the document\'s other Hocuspocus clients only', async (t) => {
  const server = await startWeft(t)
  const sender = hocus(t, hocusSocket(t, server), 'stateless/doc')
  const receiver = hocus(t, hocusSocket(t, server), 'stateless/doc')
  const elsewhere = hocus(t, hocusSocket(t, server), 'stateless/other')
  const y = createClient(t, server, 'stateless/doc', { name: 'y-websocket' })
  await waitSynced(y)
  await waitHocus([sender, receiver, elsewhere], () => sender.events.synced && receiver.events.synced && elsewhere.events.synced, 'all to sync')
  sender.provider.sendStateless('first')
  sender.provider.sendStateless('second')
  await waitHocus(receiver, () => receiver.events.stateless.length === 2, 'both stateless messages')
  assert.deepEqual(receiver.events.stateless, ['first', 'second'], 'in order')
  assert.deepEqual(sender.events.stateless, [], 'not echoed')
  assert.deepEqual(elsewhere.events.stateless, [], 'not to another document')
  // The y-websocket client of the same document got nothing it cannot read
  // and is still connected.
  assert.equal(y.provider.wsconnected, true)
  assert.deepEqual(y.closeCodes, [])
})
