// A cluster of owners (`--cluster-mode ownership`): three `weft serve`
// nodes share the updates topic's partitions through a Kafka consumer
// group; a client that lands on a node that does not own its document is
// forwarded to the owner (a Hocuspocus socket per document, over one
// upstream per owner). Clients reach the nodes directly and through a
// round-robin TCP balancer that knows nothing of documents (started here,
// on 127.0.0.1). Uses the broker `make test` starts (WEFT_TEST_KAFKA).

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import net from 'node:net'

import * as hocuspocus from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, sleep, now, report,
  freePort, assertTokensOnce, metric, Y, WebSocket
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
if (!BROKER && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it')
}
const skip = BROKER ? false : 'set WEFT_TEST_KAFKA=host:port (make test does)'

const PARTITIONS = 6
const SECRET = 'e2e-cluster-secret-0123456789'
const TYPES = { text: ['text'], map: ['map'], array: ['array'] }

/** A node of a cluster of owners on `topic`, reached at its listen address. */
async function startOwner (t, topic, i) {
  const port = await freePort()
  return startWeft(t, {
    name: `owner-${i}`,
    port,
    args: [
      '--kafka-brokers', BROKER,
      '--kafka-topic', topic,
      '--kafka-partitions', String(PARTITIONS),
      '--node-id', `owner-${i}`,
      '--kafka-fetch-wait-ms', '10',
      '--node-heartbeat-interval', '200ms',
      '--node-timeout', '1500ms',
      '--cluster-mode', 'ownership',
      '--cluster-secret', SECRET
    ]
  })
}

/** `GET /api/cluster` of `node`. */
async function cluster (node) {
  const res = await fetch(`${node.httpUrl}/api/cluster`, { signal: AbortSignal.timeout(5000) })
  assert.equal(res.status, 200)
  return res.json()
}

/**
 * Waits until every node in `nodes` sees exactly `nodes` as the cluster, with
 * every partition owned once. Polls: the group changes on the broker, and
 * no event reaches the test. Bounded by `timeout`.
 */
async function waitBalanced (nodes, { timeout = 30000 } = {}) {
  const ids = nodes.map(n => n.name).sort()
  const deadline = now() + timeout
  let last = null
  while (now() < deadline) {
    const views = await Promise.all(nodes.map(n => cluster(n).catch(() => null)))
    last = views
    const balanced = views.every(view => {
      if (!view) return false
      const seen = view.nodes.map(n => n.id).sort()
      const owned = view.nodes.flatMap(n => n.partitions).sort((a, b) => a - b)
      return JSON.stringify(seen) === JSON.stringify(ids) &&
        JSON.stringify(owned) === JSON.stringify([...Array(PARTITIONS).keys()]) &&
        view.nodes.every(n => n.partitions.length > 0)
    })
    if (balanced) return views[0]
    await sleep(100)
  }
  throw new Error(`the cluster did not balance over ${ids.join(', ')} within ${timeout} ms: ${JSON.stringify(last)}`)
}

/** A TCP balancer on 127.0.0.1 that sends each connection to the next backend in turn. */
async function roundRobin (t, backends) {
  let next = 0
  const sockets = new Set()
  const server = net.createServer((client) => {
    const target = backends()[next++ % backends().length]
    const upstream = net.connect(target.port, '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  const port = await freePort()
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { wsUrl: `ws://127.0.0.1:${port}` }
}

e2e('ownership: clients of one document on every node and behind a round-robin balancer converge through the owner', { skip, timeout: 120000 }, async (t) => {
  const topic = `e2e-own-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 3; i++) nodes.push(await startOwner(t, topic, i))
  const view = await waitBalanced(nodes)
  assert.ok(view.generation >= 1, `a generation: ${JSON.stringify(view)}`)
  for (const node of view.nodes) {
    const started = nodes.find(n => n.name === node.id)
    assert.equal(node.address, `127.0.0.1:${started.port}`, 'each node advertises its listen address')
  }
  const balancer = await roundRobin(t, () => nodes)
  const doc = 'owned/one'
  const clients = [
    ...nodes.map((node, i) => createClient(t, node, doc, { name: `direct@${node.name}` })),
    ...[0, 1, 2].map(i => createClient(t, balancer.wsUrl, doc, { name: `balanced-${i}` }))
  ]
  await waitSynced(clients)
  for (const [i, client] of clients.entries()) {
    client.doc.getArray('array').push([`${client.name}`])
    client.doc.getText('text').insert(0, String(i))
  }
  const ms = await waitConverged(clients, { types: TYPES, timeout: 20000 })
  report('ownership: six clients (three direct, three round-robin) converged', ms)
  assertTokensOnce(clients[0], clients.map(c => c.name))
  // Only the owner loaded the document; the others relayed their clients.
  await loadedOn(nodes, 1)
  const forwarded = await Promise.all(nodes.map(n => metric(n, 'weft_forwarded_sessions')))
  assert.equal(forwarded.reduce((a, b) => a + b, 0) >= 2, true, `the two non-owners relay their direct clients: ${forwarded}`)
})

e2e('ownership: a SIGKILLed owner and a node added under edits lose nothing; every edit present exactly once', { skip, timeout: 180000 }, async (t) => {
  const topic = `e2e-own-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 3; i++) nodes.push(await startOwner(t, topic, i))
  await waitBalanced(nodes)
  const dead = new Set()
  const live = () => nodes.filter(n => !dead.has(n))
  const balancer = await roundRobin(t, live)
  const doc = 'owned/faults'
  const writers = [
    ...nodes.map(node => createClient(t, node, doc, { name: `w@${node.name}`, maxBackoffTime: 200 })),
    createClient(t, balancer.wsUrl, doc, { name: 'w@balancer-0', maxBackoffTime: 200 }),
    createClient(t, balancer.wsUrl, doc, { name: 'w@balancer-1', maxBackoffTime: 200 })
  ]
  await waitSynced(writers)
  const INSERTS = 100
  const expected = []
  let issued = 0
  const faults = (async () => {
    await waitFor(() => issued >= INSERTS * writers.length * 0.3, { on: writers, timeout: 60000, what: 'inserts before the kill' })
    // Kill the document's owner: its direct writer reconnects to it in
    // vain, so give that one the balancer instead.
    const partitionOwner = await loadedOn(nodes, 1)
    const killed = now()
    dead.add(partitionOwner)
    await partitionOwner.kill()
    const orphan = writers.find(w => w.name === `w@${partitionOwner.name}`)
    orphan.provider.serverUrl = balancer.wsUrl
    await waitSynced(writers, { timeout: 30000, what: 'writers to reconnect after the owner was SIGKILLed' })
    report('ownership: owner SIGKILLed, every writer synced again', now() - killed)
    await waitFor(() => issued >= INSERTS * writers.length * 0.6, { on: writers, timeout: 60000, what: 'inserts before the join' })
    const added = await startOwner(t, topic, 3)
    nodes.push(added)
    const joined = now()
    await waitBalanced(live(), { timeout: 40000 })
    report('ownership: a fourth node joined and the group balanced', now() - joined)
  })()
  const writing = Promise.all(writers.map(async (w) => {
    for (let i = 0; i < INSERTS; i++) {
      const token = `${w.name}-${i}`
      expected.push(token)
      w.doc.getArray('array').push([token])
      issued++
      await sleep(20)
    }
  }))
  await Promise.all([writing, faults])
  const ms = await waitConverged(writers, { types: TYPES, timeout: 40000, what: 'writers to converge after the kill and the join' })
  report(`ownership: ${writers.length} writers converged after their last insert (owner SIGKILLed, node added)`, ms)
  for (const w of writers) assertTokensOnce(w, expected)
  const fresh = createClient(t, balancer.wsUrl, doc, { name: 'fresh@balancer' })
  await waitSynced(fresh, { timeout: 20000 })
  assertTokensOnce(fresh, expected)
})

/** The one node of `nodes` holding `count` documents: the owner, since non-owners relay. */
async function loadedOn (nodes, count) {
  const loaded = await Promise.all(nodes.map(n => metric(n, 'weft_documents_loaded')))
  const holders = nodes.filter((_, i) => loaded[i] === count)
  assert.equal(holders.length, 1, `one node holds the document: ${loaded}`)
  return holders[0]
}

e2e('ownership: a SIGTERMed node leaves the group as its drain starts; its partitions move before the session timeout', { skip, timeout: 90000 }, async (t) => {
  const topic = `e2e-own-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 3; i++) nodes.push(await startOwner(t, topic, i))
  await waitBalanced(nodes)
  const leaving = nodes[2]
  const doc = 'owned/leave'
  const clients = [0, 1, 2].map(i => createClient(t, nodes[i], doc, { name: `c${i}@${nodes[i].name}`, maxBackoffTime: 200 }))
  await waitSynced(clients)
  const stopped = now()
  await leaving.stop()
  // The members' session timeout is 10 s: a balanced group of the two
  // others well before it means the node left rather than expired.
  await waitBalanced(nodes.slice(0, 2), { timeout: 8000 })
  const moved = now() - stopped
  report('ownership: a SIGTERMed node drained and its partitions moved to the others', moved)
  assert.ok(moved < 8000, `moved after ${moved} ms`)
  const stayed = clients.slice(0, 2)
  stayed[0].doc.getArray('array').push(['after the leave'])
  await waitConverged(stayed, { types: TYPES, timeout: 20000, what: 'the clients of the remaining nodes after the leave' })
})

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
assert.equal(murmur2(Buffer.from('foobar')), -790332482, "Kafka's test vector")
const partitionOf = (doc) => (murmur2(Buffer.from(doc)) & 0x7fffffff) % PARTITIONS

/** A document name whose partition `node` owns in `view`. */
function docOwnedBy (view, node, prefix) {
  const partitions = view.nodes.find(n => n.id === node.name).partitions
  for (let i = 0; i < 1000; i++) {
    if (partitions.includes(partitionOf(`${prefix}/${i}`))) return `${prefix}/${i}`
  }
  throw new Error(`no document of ${prefix} on ${node.name}`)
}

/**
 * A HocuspocusProvider for `name` on the shared `socket`; `events` emits
 * `change` when it syncs or its unacknowledged edits change (for waitFor).
 */
function hocusClient (t, socket, name) {
  const doc = new Y.Doc()
  const events = new EventEmitter()
  const client = { doc, name: `hocuspocus:${name}`, events, synced: false }
  client.provider = new hocuspocus.HocuspocusProvider({
    websocketProvider: socket,
    name,
    document: doc,
    onSynced: () => { client.synced = true; events.emit('change') },
    onUnsyncedChanges: () => events.emit('change')
  })
  client.provider.attach()
  t.after(() => client.provider.destroy())
  return client
}

e2e('ownership: one Hocuspocus socket behind the balancer has each document served by its owner; it converges with y-websocket clients on other nodes', { skip, timeout: 60000 }, async (t) => {
  const topic = `e2e-own-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 3; i++) nodes.push(await startOwner(t, topic, i))
  const view = await waitBalanced(nodes)
  // The balancer's first connection (the Hocuspocus socket) reaches
  // nodes[0]; two of its documents are owned elsewhere, one there.
  const docs = [
    docOwnedBy(view, nodes[1], 'hocus-a'),
    docOwnedBy(view, nodes[2], 'hocus-b'),
    docOwnedBy(view, nodes[0], 'hocus-c')
  ]
  const stopped = new Set()
  const balancer = await roundRobin(t, () => nodes.filter(n => !stopped.has(n)))
  const socket = new hocuspocus.HocuspocusProviderWebsocket({ url: balancer.wsUrl, WebSocketPolyfill: WebSocket })
  const closes = []
  const socketEvents = new EventEmitter()
  socket.on('close', ({ event }) => { closes.push(event?.code); socketEvents.emit('change') })
  t.after(() => socket.destroy())
  const started = now()
  const hocus = docs.map(doc => hocusClient(t, socket, doc))
  await waitFor(() => hocus.every(h => h.synced), { on: hocus.map(h => h.events), timeout: 15000, what: 'the three Hocuspocus documents to sync' })
  report('ownership: one Hocuspocus socket synced three documents of three owners', now() - started)
  // y-websocket clients of each document: on a node that does not own it
  // (forwarded; nodes[0] for the second document) and on its owner.
  const owners = [1, 2, 0]
  const ywebsocket = docs.flatMap((doc, i) => [nodes[(owners[i] + 1) % 3], nodes[owners[i]]]
    .map(node => createClient(t, node, doc, { name: `y@${node.name}:${doc}` })))
  await waitSynced(ywebsocket)
  for (const [i, h] of hocus.entries()) {
    h.doc.getArray('array').push([h.name])
    ywebsocket[2 * i].doc.getArray('array').push([ywebsocket[2 * i].name])
  }
  for (const [i, doc] of docs.entries()) {
    const clients = [hocus[i], ywebsocket[2 * i], ywebsocket[2 * i + 1]]
    const ms = await waitConverged(clients, { types: TYPES, timeout: 15000, what: `the clients of ${doc} to converge` })
    report(`ownership: ${doc} converged (Hocuspocus through the balancer, y-websocket on two nodes)`, ms)
    assertTokensOnce(clients[2], [hocus[i].name, ywebsocket[2 * i].name])
  }
  await waitFor(() => hocus.every(h => h.provider.unsyncedChanges === 0), { on: hocus.map(h => h.events), timeout: 10000, what: 'the Hocuspocus edits to be acknowledged' })
  // Each document is loaded by its owner only: nodes[0] serves its own
  // and relays the other two over one upstream per owner.
  const loaded = await Promise.all(nodes.map(n => metric(n, 'weft_documents_loaded')))
  assert.deepEqual(loaded, [1, 1, 1], `each node loads the document it owns: ${loaded}`)
  const upstreams = await metric(nodes[0], 'weft_forwarded_sessions')
  assert.ok(upstreams >= 3, `nodes[0] relays two Hocuspocus documents and one y-websocket client: ${upstreams}`)
  assert.equal(await metric(nodes[0], 'weft_forward_fallbacks_total'), 0, 'no owner was unreachable')
  const views = await Promise.all(nodes.map(cluster))
  assert.ok(views.every(v => v.generation === view.generation), 'no rebalance before the move')
  // The first document's owner drains: its upstream closes with 1012, the
  // edge closes the client's socket with 1012, the provider reconnects and
  // its documents reach their (new) owners; edits still converge.
  stopped.add(nodes[1])
  const moved = now()
  await nodes[1].stop()
  await waitFor(() => closes.includes(1012), { on: socketEvents, timeout: 10000, what: 'the client socket to close with 1012', detail: () => `closes: ${closes}` })
  hocus[0].doc.getArray('array').push(['after the move'])
  const survivor = ywebsocket[0]
  await waitConverged([hocus[0], survivor], { types: TYPES, timeout: 20000, what: 'the first document after its owner drained' })
  report('ownership: owner of a forwarded Hocuspocus document drained; converged again', now() - moved)
  assertTokensOnce(survivor, [hocus[0].name, survivor.name, 'after the move'])
})
