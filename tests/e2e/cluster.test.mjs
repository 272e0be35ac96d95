// Clusters: three `weft serve` nodes sharing a real Apache Kafka broker (the
// one `make test` starts, named by WEFT_TEST_KAFKA), with the same
// unmodified y-websocket clients. Every test uses a fresh topic; tests that
// kill, restart or replicate brokers start an Apache Kafka cluster of their
// own (KafkaCluster).

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, sleep, now, report,
  prng, testSeed, Y, WeftServer, freePort, KafkaCluster, KAFKA_SH, assertTokensOnce, metric
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
if (!BROKER && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it')
}
const skip = BROKER ? false : 'set WEFT_TEST_KAFKA=host:port (make test does)'

/** The fetch wait the nodes use (Kafka answers a fetch as soon as data arrives: it bounds idle polling). */
const FETCH_WAIT_MS = 10
const HEARTBEAT = '200ms'
const NODE_TIMEOUT_MS = 1500

/** Start `count` nodes on one fresh topic. */
async function startCluster (t, count, { topic = `e2e-${crypto.randomUUID()}`, extraArgs = [] } = {}) {
  const nodes = []
  for (let i = 0; i < count; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      args: [
        '--kafka-brokers', BROKER,
        '--kafka-topic', topic,
        '--kafka-partitions', '4',
        '--node-id', `node-${i}`,
        '--kafka-fetch-wait-ms', String(FETCH_WAIT_MS),
        '--node-heartbeat-interval', HEARTBEAT,
        '--node-timeout', `${NODE_TIMEOUT_MS}ms`,
        ...extraArgs
      ]
    }))
  }
  return { nodes, topic }
}

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }

/** One random edit of text, map or array. */
function randomEdit (client, rand) {
  const doc = client.doc
  switch (rand.int(3)) {
    case 0: {
      const text = doc.getText('text')
      if (text.length > 0 && rand.next() < 0.3) text.delete(rand.int(text.length), 1)
      else text.insert(rand.int(text.length + 1), rand.string(1 + rand.int(4)))
      break
    }
    case 1:
      doc.getMap('map').set(`k${rand.int(20)}`, rand.string(3))
      break
    default: {
      const array = doc.getArray('array')
      if (array.length > 0 && rand.next() < 0.3) array.delete(rand.int(array.length), 1)
      else array.insert(rand.int(array.length + 1), [rand.int(1000)])
    }
  }
}

e2e('cluster: clients spread over three nodes converge; late joiners on any node see the state', { skip, timeout: 120000 }, async (t) => {
  const { nodes } = await startCluster(t, 3)
  const seed = testSeed()
  console.log(`[seed] WEFT_E2E_SEED=${seed}`)
  const rand = prng(seed)
  const docs = ['cluster/a', 'cluster/b']
  const clients = []
  for (const doc of docs) {
    for (let i = 0; i < 6; i++) {
      clients.push(createClient(t, nodes[i % 3], doc, { name: `${doc}#${i}@node-${i % 3}` }))
    }
  }
  await waitSynced(clients, { timeout: 20000 })
  const EDITS = 40
  for (let round = 0; round < EDITS; round++) {
    for (const client of clients) randomEdit(client, rand)
    if (round % 5 === 0) await sleep(5)
  }
  for (const doc of docs) {
    const group = clients.filter(c => c.docName === doc)
    const ms = await waitConverged(group, { types: TYPES, timeout: 30000, what: `${doc}: 6 clients on 3 nodes to converge` })
    report(`cluster: ${doc}, 6 clients on 3 nodes x ${EDITS} random edits: converged after the last edit`, ms)
  }
  // Late joiners on every node: the document is loaded there already.
  for (const [index, node] of nodes.entries()) {
    const late = createClient(t, node, docs[0], { name: `late@node-${index}` })
    await waitSynced(late, { timeout: 15000 })
    await waitConverged([clients[0], late], { types: TYPES, what: `late joiner on node-${index}` })
  }
})

e2e('cluster: a node that loads a document after others edited it sees everything (replay from the broker)', { skip, timeout: 120000 }, async (t) => {
  const { nodes } = await startCluster(t, 3)
  const doc = 'cluster/replayed'
  const writers = [createClient(t, nodes[0], doc, { name: 'w@node-0' }), createClient(t, nodes[1], doc, { name: 'w@node-1' })]
  await waitSynced(writers)
  const TOKENS = 150
  for (let i = 0; i < TOKENS; i++) writers[i % 2].doc.getArray('array').push([`t${i}`])
  await waitConverged(writers, { types: TYPES, timeout: 20000 })
  // node-2 has never had this document open.
  const started = now()
  const reader = createClient(t, nodes[2], doc, { name: 'reader@node-2' })
  await waitSynced(reader, { timeout: 20000 })
  report(`cluster: ${TOKENS} updates replayed into a node that never held the document (connect to synced)`, now() - started)
  const got = reader.doc.getArray('array').toJSON()
  assert.equal(got.length, TOKENS, 'every update, once')
  assert.deepEqual([...got].sort(), Array.from({ length: TOKENS }, (_, i) => `t${i}`).sort())
  // And live from here on, both ways.
  reader.doc.getArray('array').push(['from-node-2'])
  await waitFor(() => writers.every(w => w.doc.getArray('array').toJSON().includes('from-node-2')), {
    on: writers, timeout: 10000, what: 'node-2 edit to reach node-0 and node-1'
  })
})

/** The partitions a node's live consumer reads, from its consumer-lag metric. */
async function assignedPartitions (node, topic) {
  const res = await fetch(`${node.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  const found = { updates: new Set(), awareness: new Set() }
  for (const match of text.matchAll(/^weft_bus_consumer_lag\{topic="([^"]+)",partition="(\d+)"\} \S+$/gm)) {
    if (match[1] === topic) found.updates.add(Number(match[2]))
    else if (match[1] === `${topic}-awareness`) found.awareness.add(Number(match[2]))
  }
  return found
}

/** What a node's live consumer fetched from `topic` so far: { bytes, records } (0 before librdkafka's first report). */
async function fetchedFrom (node, topic) {
  const res = await fetch(`${node.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  const read = (name) => {
    const match = text.match(new RegExp(`^weft_bus_${name}_total\\{topic="${topic}"\\} (\\S+)$`, 'm'))
    return match ? Number(match[1]) : 0
  }
  return { bytes: read('fetched_bytes'), records: read('fetched_records') }
}

/**
 * Poll the consumer-lag metric (librdkafka reports every 5 s; no event to
 * wait on) until `predicate` holds: every 250 ms, at most `timeout` ms.
 */
async function eventuallyAssigned (node, topic, predicate, what, timeout = 20000) {
  let last = null
  for (let attempt = 0; attempt <= timeout / 250; attempt++) {
    last = await assignedPartitions(node, topic)
    if (predicate(last)) return last
    await sleep(250)
  }
  throw new Error(`${what}: partitions never matched within ${timeout} ms (updates ${[...last.updates]}, awareness ${[...last.awareness]})`)
}

e2e('cluster: a node reads only the partitions of the documents it holds, adds one when a client lands on it, releases it after', { skip, timeout: 120000 }, async (t) => {
  const { nodes, topic } = await startCluster(t, 2, { extraArgs: ['--doc-unload-grace', '1s'] })
  const doc = 'cluster/held'
  const writer = createClient(t, nodes[0], doc, { name: 'w@node-0' })
  await waitSynced(writer)
  writer.doc.getArray('array').push(['before'])
  // node-1 holds nothing: only the heartbeats' partition of the awareness topic.
  const idle = await eventuallyAssigned(nodes[1], topic, (p) => p.awareness.size > 0, 'node-1 before any document')
  assert.deepEqual([...idle.updates], [], 'no partition of the updates topic')
  assert.deepEqual([...idle.awareness], [0], 'the heartbeats\' partition only')
  const atNode0 = await eventuallyAssigned(nodes[0], topic, (p) => p.updates.size === 1, 'node-0 holding one document')
  // A client of the same document lands on node-1: it still works, both ways.
  const reader = createClient(t, nodes[1], doc, { name: 'r@node-1' })
  await waitSynced(reader)
  await waitFor(() => reader.doc.getArray('array').toJSON().includes('before'), { on: reader, what: 'the replayed edit' })
  writer.doc.getArray('array').push(['live'])
  await waitFor(() => reader.doc.getArray('array').toJSON().includes('live'), { on: reader, what: 'a live edit from node-0' })
  reader.doc.getArray('array').push(['back'])
  await waitFor(() => writer.doc.getArray('array').toJSON().includes('back'), { on: writer, what: 'a live edit from node-1' })
  const holding = await eventuallyAssigned(nodes[1], topic, (p) => p.updates.size === 1, 'node-1 holding the document')
  assert.deepEqual([...holding.updates], [...atNode0.updates], 'the document\'s partition, the same on both nodes')
  // node-1 received node-0's live edit through the log: its fetch counters
  // for the updates topic grow (librdkafka reports every 5 s; poll, bounded).
  let fetched = await fetchedFrom(nodes[1], topic)
  for (let attempt = 0; attempt < 60 && fetched.records < 1; attempt++) {
    await sleep(250)
    fetched = await fetchedFrom(nodes[1], topic)
  }
  assert.ok(fetched.records >= 1, `node-1 fetched node-0's record (records ${fetched.records})`)
  assert.ok(fetched.bytes > doc.length, `node-1 fetched its bytes, at least the key's (bytes ${fetched.bytes})`)
  let atNode0Fetched = await fetchedFrom(nodes[0], topic)
  for (let attempt = 0; attempt < 60 && atNode0Fetched.records < 1; attempt++) {
    await sleep(250)
    atNode0Fetched = await fetchedFrom(nodes[0], topic)
  }
  assert.ok(atNode0Fetched.records >= 1, `node-0 fetched node-1's record (records ${atNode0Fetched.records})`)
  // The client leaves; after the unload grace node-1 reads that partition no more.
  reader.destroy()
  await eventuallyAssigned(nodes[1], topic, (p) => p.updates.size === 0 && p.awareness.size > 0, 'node-1 after the document unloaded')
})

e2e('cluster: cross-node latency, writer on node-0, reader on node-1', { skip, timeout: 60000 }, async (t) => {
  const { nodes } = await startCluster(t, 2)
  const writer = createClient(t, nodes[0], 'cluster/latency', { name: 'writer' })
  const reader = createClient(t, nodes[1], 'cluster/latency', { name: 'reader' })
  await waitSynced([writer, reader])
  const SAMPLES = 60
  const samples = []
  const map = reader.doc.getMap('map')
  for (let i = 0; i < SAMPLES; i++) {
    const key = `probe-${i}`
    const arrived = waitFor(() => map.has(key), { on: reader, timeout: 5000, what: `probe ${i}` })
    const sent = now()
    writer.doc.getMap('map').set(key, i)
    await arrived
    samples.push(now() - sent)
  }
  samples.sort((a, b) => a - b)
  const pct = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]
  report(`cluster: cross-node latency p50 (fetch.wait.max.ms=${FETCH_WAIT_MS}, ${SAMPLES} sequential probes)`, pct(0.5))
  report(`cluster: cross-node latency p99 (fetch.wait.max.ms=${FETCH_WAIT_MS})`, pct(0.99))
  report(`cluster: cross-node latency max (fetch.wait.max.ms=${FETCH_WAIT_MS})`, samples[samples.length - 1])
  assert.equal(samples.length, SAMPLES)
})

e2e('cluster: a node killed with SIGKILL mid-edit and restarted loses nothing; every edit present exactly once', { skip, timeout: 180000 }, async (t) => {
  const { nodes } = await startCluster(t, 3)
  const doc = 'cluster/sigkill'
  const writers = [0, 0, 1, 2].map((n, i) => createClient(t, nodes[n], doc, { name: `w${i}@node-${n}`, maxBackoffTime: 200 }))
  await waitSynced(writers)
  const INSERTS = 120
  const expected = []
  let issued = 0
  const chaos = (async () => {
    await waitFor(() => issued >= INSERTS * writers.length * 0.4, { on: writers, timeout: 60000, what: 'inserts before the kill' })
    const killed = now()
    await nodes[0].kill()
    await sleep(300)
    await nodes[0].restart()
    await waitSynced(writers, { timeout: 20000, what: 'writers of node-0 to reconnect after SIGKILL' })
    report('cluster: node-0 SIGKILLed, restarted, its writers resynced', now() - killed)
  })()
  const writing = Promise.all(writers.map(async (w) => {
    for (let i = 0; i < INSERTS; i++) {
      const token = `${w.name}-${i}`
      expected.push(token)
      w.doc.getArray('array').push([token])
      issued++
      await sleep(8)
    }
  }))
  await Promise.all([writing, chaos])
  const ms = await waitConverged(writers, { types: TYPES, timeout: 30000, what: 'writers to converge after the kill' })
  report(`cluster: ${writers.length} writers converged after their last insert (one node SIGKILLed mid-edit)`, ms)
  for (const w of writers) assertTokensOnce(w, expected)
  // A fresh client on a node that has the document loaded, and one on the
  // restarted node, which loaded it by replay.
  for (const n of [1, 0]) {
    const fresh = createClient(t, nodes[n], doc, { name: `fresh@node-${n}` })
    await waitSynced(fresh, { timeout: 20000 })
    assertTokensOnce(fresh, expected)
  }
})

e2e('cluster: all nodes restarted load every document again', { skip, timeout: 120000 }, async (t) => {
  const { nodes } = await startCluster(t, 3)
  const docs = Array.from({ length: 5 }, (_, i) => `cluster/restart-${i}`)
  const expected = new Map()
  for (const [i, doc] of docs.entries()) {
    const writer = createClient(t, nodes[i % 3], doc, { name: `writer ${doc}` })
    await waitSynced(writer)
    writer.doc.getText('text').insert(0, `content of ${doc}`)
    writer.doc.getArray('array').push([i])
    expected.set(doc, Y.encodeStateAsUpdate(writer.doc))
    // Another node's client saw it: the cluster accepted it.
    const witness = createClient(t, nodes[(i + 1) % 3], doc, { name: `witness ${doc}` })
    await waitConverged([writer, witness], { types: TYPES })
    writer.destroy()
    witness.destroy()
  }
  for (const node of nodes) await node.stop()
  for (const node of nodes) await node.restart()
  for (const [i, doc] of docs.entries()) {
    const reader = createClient(t, nodes[(i + 2) % 3], doc, { name: `reader ${doc}` })
    await waitSynced(reader, { timeout: 20000 })
    assert.equal(reader.doc.getText('text').toString(), `content of ${doc}`)
    assert.deepEqual(reader.doc.getArray('array').toJSON(), [i])
  }
})

e2e('cluster: awareness crosses nodes, and a SIGKILLed node\'s clients disappear from the others', { skip, timeout: 60000 }, async (t) => {
  const { nodes } = await startCluster(t, 2)
  const doc = 'cluster/awareness'
  const ghost = createClient(t, nodes[0], doc, { name: 'on-node-0', maxBackoffTime: 60000 })
  const watcher = createClient(t, nodes[1], doc, { name: 'on-node-1' })
  await waitSynced([ghost, watcher])
  ghost.awareness.setLocalStateField('user', { name: 'Ghost' })
  watcher.awareness.setLocalStateField('user', { name: 'Watcher' })
  await waitFor(() => watcher.awareness.getStates().get(ghost.doc.clientID)?.user?.name === 'Ghost', {
    on: watcher, timeout: 10000, what: 'node-1 client to see the node-0 client'
  })
  await waitFor(() => ghost.awareness.getStates().get(watcher.doc.clientID)?.user?.name === 'Watcher', {
    on: ghost, timeout: 10000, what: 'node-0 client to see the node-1 client'
  })
  // The node-0 client can not reconnect anywhere (its node is dead and its
  // backoff long); only the server side can remove its cursor, well before
  // y-protocols' own 30 s client timeout.
  ghost.provider.shouldConnect = false
  const killed = now()
  await nodes[0].kill()
  await waitFor(() => !watcher.awareness.getStates().has(ghost.doc.clientID), {
    on: watcher, timeout: NODE_TIMEOUT_MS + 8000, what: 'the dead node\'s client to disappear'
  })
  const gone = now() - killed
  report(`cluster: awareness of a SIGKILLed node's client removed on the other node (node timeout ${NODE_TIMEOUT_MS} ms)`, gone)
  assert.ok(gone < 15000, `removed by the node timeout, not y-protocols' 30 s: ${gone} ms`)
})

/**
 * Produce `count` records that are not Weft envelopes, keyed `key` (raw
 * bytes, as any Kafka producer writes them), into `partition` of `topic`,
 * through Apache Kafka's own Java producer (tests/kafka/ProduceRaw.java),
 * not Weft's. Returns once the broker acknowledged them (acks=all).
 */
async function produceGarbage (topic, key, partition, count) {
  const values = Array.from({ length: count }, (_, i) => `not an envelope ${i}`)
  await kafkaJava('ProduceRaw.java', [BROKER, topic, String(partition), key, ...values])
}

/** The node id of the broker leading `partition` of `topic` (-1: none now), from Kafka's own admin client. */
async function partitionLeader (bootstrap, topic, partition) {
  return Number((await kafkaJava('PartitionLeader.java', [bootstrap, topic, String(partition)])).trim())
}

/** Run one of tests/kafka's single-file Java programs against the cached Kafka jars; resolves with its stdout. */
async function kafkaJava (file, args) {
  const classpath = (await run(KAFKA_SH, ['classpath'], 600000)).trim()
  return run('java', ['-cp', `${classpath}/*`, path.join(path.dirname(KAFKA_SH), file), ...args], 60000)
}

/** Run `command` (not blocking the clients' event loop), bounded by `timeout` ms; resolves with its stdout. */
function run (command, args, timeout) {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${path.basename(command)} ${args.slice(-6).join(' ')}: ${error.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

e2e('cluster: a malformed record in the topic is skipped; nodes keep serving and replaying', { skip, timeout: 120000 }, async (t) => {
  const { nodes, topic } = await startCluster(t, 2)
  const doc = 'cluster/poisoned'
  const a = createClient(t, nodes[0], doc, { name: 'a@node-0' })
  const b = createClient(t, nodes[1], doc, { name: 'b@node-1' })
  await waitSynced([a, b])
  a.doc.getArray('array').push(['before'])
  await waitConverged([a, b], { types: TYPES })
  // Both nodes have the document loaded, so their live consumers read its
  // partition (the one its records go to) and decode what lands there.
  const held = await eventuallyAssigned(nodes[0], topic, (p) => p.updates.size === 1, 'node-0 holding the document')
  await produceGarbage(topic, doc, [...held.updates][0], 2)
  // Both nodes read the two records, count them and say so in their log.
  // The counter goes up just before the warning is written: wait for both
  // (bounded; neither is an event source).
  for (const node of nodes) {
    let skipped = 0
    const logged = () => /malformed record skipped/.test(node.logs())
    for (let attempt = 0; attempt < 200 && (skipped < 2 || !logged()); attempt++) {
      skipped = await metric(node, 'weft_bus_records_malformed_total')
      if (skipped < 2 || !logged()) await sleep(100)
    }
    assert.equal(skipped, 2, `${node.name} counted both malformed records`)
    assert.ok(logged(), `${node.name} logged the skip`)
  }
  b.doc.getArray('array').push(['after'])
  await waitConverged([a, b], { types: TYPES, what: 'edits after the malformed records' })
  for (const node of nodes) assert.ok(node.running, `${node.name} still running`)
  // A restarted node loads its snapshot and replays the partition after it.
  await nodes[1].stop()
  await nodes[1].restart()
  const fresh = createClient(t, nodes[1], doc, { name: 'fresh@node-1' })
  await waitSynced(fresh, { timeout: 20000 })
  assert.deepEqual(fresh.doc.getArray('array').toJSON(), ['before', 'after'])
})

e2e('cluster: a node is not ready until its broker answers, then serves without a restart', { skip, timeout: 120000 }, async (t) => {
  // A broker of the test's own, killed before the node starts: its address
  // is known, and nothing answers there until it is started again.
  const kafka = await KafkaCluster.start(t)
  await kafka.signal(1, 'SIGKILL')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-e2e-late-broker-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  const node = new WeftServer({
    port,
    storeDir: path.join(dir, 'store'),
    name: 'node-waiting',
    args: ['--kafka-brokers', kafka.bootstrap, '--kafka-topic', 'late-broker', '--node-id', 'waiting']
  })
  t.after(() => node.cleanup({ removeStore: false }))
  node.spawn()
  // The HTTP side is up, readiness says why it is not ready, upgrades wait.
  // Polling is the only way to see an HTTP listener come up; bounded.
  let answer = null
  for (let attempt = 0; attempt < 200 && answer === null; attempt++) {
    try {
      const res = await fetch(`${node.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
      answer = { status: res.status, body: await res.json() }
    } catch {
      await sleep(50)
    }
  }
  assert.ok(answer, '/readyz answers while the broker is away')
  assert.equal(answer.status, 503)
  assert.match(answer.body.error.details, /message bus/)
  // The broker appears; the node connects by itself (backoff retries).
  await kafka.start(1)
  const served = now()
  await node.waitReady({ timeout: 20000 })
  report('cluster: node ready after its broker came up (retry backoff up to 5 s)', now() - served)
  const a = createClient(t, node, 'late-broker/doc', { name: 'a' })
  const b = createClient(t, node, 'late-broker/doc', { name: 'b' })
  await waitSynced([a, b], { timeout: 15000 })
  a.doc.getText('text').insert(0, 'through the broker')
  await waitConverged([a, b], { types: TYPES })
})

e2e('cluster: the broker dies; an unacknowledged edit closes its session and reaches nobody, the client keeps it, readiness goes 503', { skip, timeout: 120000 }, async (t) => {
  const kafka = await KafkaCluster.start(t)
  const nodes = []
  for (let i = 0; i < 2; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      args: [
        '--kafka-brokers', kafka.bootstrap, '--kafka-topic', 'broker-death', '--node-id', `node-${i}`,
        '--kafka-fetch-wait-ms', String(FETCH_WAIT_MS), '--kafka-publish-timeout', '2s'
      ]
    }))
  }
  const doc = 'broker-death/doc'
  const a = createClient(t, nodes[0], doc, { name: 'a@node-0', maxBackoffTime: 60000 })
  const b = createClient(t, nodes[1], doc, { name: 'b@node-1' })
  await waitSynced([a, b])
  a.doc.getArray('array').push(['acknowledged'])
  await waitConverged([a, b], { types: TYPES, what: 'the first edit to cross' })

  await kafka.signal(1, 'SIGKILL')
  const killed = now()
  a.doc.getArray('array').push(['unacknowledged'])
  await waitFor(() => a.closeCodes.includes(1011), {
    on: a, timeout: 15000, what: 'the session with an unpublishable edit to close with 1011',
    detail: () => `close codes: ${a.closeCodes}`
  })
  report('cluster: broker dead; session with an unacknowledged edit closed (publish timeout 2 s)', now() - killed)
  a.provider.shouldConnect = false
  assert.deepEqual(a.doc.getArray('array').toJSON().sort(), ['acknowledged', 'unacknowledged'], 'the client still holds its edit, to re-send')
  assert.deepEqual(b.doc.getArray('array').toJSON(), ['acknowledged'], 'no node applied what the broker never acknowledged')
  const fresh = createClient(t, nodes[0], doc, { name: 'fresh@node-0', connect: false })
  // node-0 never applied it either: a reader sees the acknowledged state only
  // (it joins the loaded document; no broker needed).
  fresh.provider.connect()
  await waitSynced(fresh, { timeout: 10000 })
  assert.deepEqual(fresh.doc.getArray('array').toJSON(), ['acknowledged'])
  const ready = await fetch(`${nodes[1].httpUrl}/readyz`)
  const body = await ready.json()
  assert.equal(ready.status, 503, 'not ready without a broker')
  assert.match(body.error.details, /message bus/)
})

e2e('cluster: a document edited offline arrives as one update over 1 MB (Kafka\'s default record limit) and crosses nodes', { skip, timeout: 60000 }, async (t) => {
  const { nodes } = await startCluster(t, 2)
  const doc = 'cluster/offline-megabytes'
  const offline = createClient(t, nodes[0], doc, { name: 'offline writer', connect: false })
  const big = 'x'.repeat(3 * 1024 * 1024)
  offline.doc.getText('text').insert(0, big)
  const reader = createClient(t, nodes[1], doc, { name: 'reader@node-1' })
  await waitSynced(reader)
  const started = now()
  offline.provider.connect()
  await waitFor(() => reader.doc.getText('text').length === big.length, {
    on: reader, timeout: 30000, what: 'the 3 MiB offline edit to reach the other node'
  })
  report('cluster: a 3 MiB offline edit reached a client on another node', now() - started)
  assert.deepEqual(offline.closeCodes, [], 'the writer was never disconnected')
})

e2e('cluster: the broker restarts on its data; nodes recover by themselves and nothing acknowledged or re-sent is lost', { skip, timeout: 150000 }, async (t) => {
  const kafka = await KafkaCluster.start(t)
  const args = (i) => [
    '--kafka-brokers', kafka.bootstrap, '--kafka-topic', 'broker-restart', '--node-id', `node-${i}`,
    '--kafka-fetch-wait-ms', String(FETCH_WAIT_MS), '--kafka-publish-timeout', '2s'
  ]
  const nodes = [await startWeft(t, { name: 'node-0', args: args(0) }), await startWeft(t, { name: 'node-1', args: args(1) })]
  const doc = 'broker-restart/doc'
  const a = createClient(t, nodes[0], doc, { name: 'a@node-0' })
  const b = createClient(t, nodes[1], doc, { name: 'b@node-1' })
  await waitSynced([a, b])
  a.doc.getArray('array').push(['acknowledged'])
  await waitConverged([a, b], { types: TYPES, what: 'the first edit to cross' })

  await kafka.signal(1, 'SIGKILL')
  a.doc.getArray('array').push(['while-down'])
  await waitFor(() => a.closeCodes.includes(1011), {
    on: a, timeout: 15000, what: 'the session with an unacknowledged edit to close with 1011'
  })
  const restarting = now()
  await kafka.start(1)
  const restarted = now()
  report('cluster: broker restarted on its data (start to serving clients)', restarted - restarting)
  await waitFor(() => b.doc.getArray('array').toJSON().includes('while-down'), {
    on: [a, b], timeout: 60000, what: 'the re-sent edit to reach node-1 after the broker restart'
  })
  report('cluster: broker restarted; the edit made while it was down reached the other node', now() - restarted)
  b.doc.getArray('array').push(['after'])
  await waitFor(() => a.doc.getArray('array').toJSON().includes('after'), {
    on: [a, b], timeout: 30000, what: 'an edit on node-1 to reach node-0 after the restart'
  })
  const all = ['acknowledged', 'after', 'while-down']
  assert.deepEqual(a.doc.getArray('array').toJSON().sort(), all)
  // A node that never held the document loads it from the restarted broker.
  const fresh = await startWeft(t, { name: 'node-2', args: args(2) })
  const reader = createClient(t, fresh, doc, { name: 'reader@node-2' })
  await waitSynced(reader, { timeout: 20000 })
  assert.deepEqual(reader.doc.getArray('array').toJSON().sort(), all)
})

e2e('cluster: on three brokers (replication factor 3), the leader of a document\'s partition SIGKILLed mid-edit and restarted; every edit present exactly once, and a fresh node replays them all', { skip, timeout: 240000 }, async (t) => {
  const kafka = await KafkaCluster.start(t, { nodes: 3 })
  const topic = `e2e-replicated-${crypto.randomUUID()}`
  const args = (i) => [
    '--kafka-brokers', kafka.bootstrap, '--kafka-topic', topic, '--kafka-partitions', '4',
    '--kafka-replication-factor', '3', '--node-id', `node-${i}`, '--kafka-fetch-wait-ms', String(FETCH_WAIT_MS)
  ]
  const nodes = [await startWeft(t, { name: 'node-0', args: args(0) }), await startWeft(t, { name: 'node-1', args: args(1) })]
  const doc = 'cluster/replicated'
  const writers = [0, 1, 1].map((n, i) => createClient(t, nodes[n], doc, { name: `w${i}@node-${n}`, maxBackoffTime: 200 }))
  await waitSynced(writers, { timeout: 30000 })
  const held = await eventuallyAssigned(nodes[0], topic, (p) => p.updates.size === 1, 'node-0 holding the document')
  const partition = [...held.updates][0]
  const leader = await partitionLeader(kafka.bootstrap, topic, partition)
  assert.ok(leader >= 1 && leader <= 3, `partition ${partition} has a leader (${leader})`)
  const expected = []
  let issued = 0
  let chaosDone = false
  const chaos = (async () => {
    try {
      const before = issued
      await waitFor(() => issued >= before + 30, { on: writers, timeout: 60000, what: 'edits before the leader is killed' })
      const killed = now()
      await kafka.signal(leader, 'SIGKILL')
      // Another broker takes the partition over once the controller misses
      // the dead one (broker.session.timeout.ms: 3 s). Polled: no event.
      let next = leader
      for (let attempt = 0; attempt < 30 && (next === leader || next < 0); attempt++) {
        next = await partitionLeader(kafka.bootstrap, topic, partition)
        if (next === leader || next < 0) await sleep(250)
      }
      assert.ok(next !== leader && next >= 1, `partition ${partition} moved from broker ${leader} (now ${next})`)
      report(`cluster: partition leader (broker ${leader} of 3) SIGKILLed under writers; broker ${next} leads`, now() - killed)
      const down = issued
      await waitFor(() => issued >= down + 100, { on: writers, timeout: 60000, what: `edits while broker ${leader} is down` })
      await kafka.start(leader)
      report(`cluster: broker ${leader} of 3 restarted on its data under writers (from its kill)`, now() - killed)
      const back = issued
      await waitFor(() => issued >= back + 30, { on: writers, timeout: 60000, what: 'edits after the restart' })
    } finally {
      chaosDone = true
    }
  })()
  // Until the broker is back (20 inserts/s per writer; at most 200 s).
  const MAX_INSERTS = 4000
  const writing = Promise.all(writers.map(async (w) => {
    for (let i = 0; i < MAX_INSERTS && !chaosDone; i++) {
      const token = `${w.name}-${i}`
      expected.push(token)
      w.doc.getArray('array').push([token])
      issued++
      await sleep(50)
    }
  }))
  await Promise.all([writing, chaos])
  const ms = await waitConverged(writers, { types: TYPES, timeout: 60000, what: 'writers to converge after the leader\'s kill' })
  report(`cluster: ${writers.length} writers (${expected.length} inserts) converged after their last insert (partition leader killed)`, ms)
  for (const w of writers) assertTokensOnce(w, expected)
  const fresh = await startWeft(t, { name: 'node-2', args: args(2) })
  const reader = createClient(t, fresh, doc, { name: 'reader@node-2' })
  await waitSynced(reader, { timeout: 60000 })
  assertTokensOnce(reader, expected)
})
