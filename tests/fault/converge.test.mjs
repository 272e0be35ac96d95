// Convergence under load on a cluster: three Weft nodes on a fresh Apache
// Kafka broker per run (KRaft, from tests/kafka/kafka.sh), a topic of 12
// partitions, 30 documents (so most partitions hold several), one
// unmodified y-websocket client per document on every node, all connecting
// at once and editing at once (text inserts and deletes, map sets, and a
// token per edit), while the nodes are still loading the documents. Then:
// every document's clients converge, every client's tokens are in every
// client exactly once, and a fresh client on every node (the node's
// replica) gets the same state.
//
// The race this hunts is the hand-over between loading a document (its
// replay) and the live records of its partition, which other documents of
// the same partition may already be reading. A y-websocket client never
// re-syncs by itself, so a record a node's replica missed stays missing for
// its clients until they reconnect: every wait here is bounded, and a run
// that does not converge says which replica lacks what.
//
// Environment:
//   WEFT_STRESS_RUNS        runs (a fresh broker each; default 3; a long mode is 50)
//   WEFT_STRESS_RF3_EVERY   every Nth run uses a 3-broker cluster, RF 3 (default 3; 0: never)
//   WEFT_STRESS_DOCS        documents (default 30)
//   WEFT_STRESS_EDITS       edits per client (default 40)
//   WEFT_STRESS_CONSUME     --kafka-consume of the nodes: held (default) or all
//   WEFT_STRESS_PAUSE_MS    longest pause between two edits of a client (default 40)
//   WEFT_STRESS_STAGGER_MS  spread of the clients' connection times (default 1500)
//   WEFT_STRESS_BROKER_PAUSE_MS  in runs on 3 brokers, pause one (SIGSTOP) this long while the nodes load (default 0: never)
//   WEFT_STRESS_BROKER      host:port of a broker to use instead of a fresh one per run (fresh topics)
//   WEFT_E2E_SEED           replay a seed printed by a run

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, sleep, now, report, prng, testSeed,
  stateVectorString, fingerprint, canonicalJson, docContent, metric, KafkaCluster
} from '../lib/harness.mjs'

const RUNS = Number(process.env.WEFT_STRESS_RUNS || 3)
const RF3_EVERY = Number(process.env.WEFT_STRESS_RF3_EVERY ?? 3)
const DOCS = Number(process.env.WEFT_STRESS_DOCS || 30)
const EDITS = Number(process.env.WEFT_STRESS_EDITS || 40)
const CONSUME = process.env.WEFT_STRESS_CONSUME || 'held'
/** Longest pause between two edits of a client, and the spread of the clients' connection times (ms). */
const PAUSE_MS = Number(process.env.WEFT_STRESS_PAUSE_MS || 40)
const STAGGER_MS = Number(process.env.WEFT_STRESS_STAGGER_MS || 1500)
/** In runs on 3 brokers, one broker is paused (SIGSTOP) this long while the nodes load (0: never). */
const BROKER_PAUSE_MS = Number(process.env.WEFT_STRESS_BROKER_PAUSE_MS ?? 0)
/** A broker to use instead of a fresh one per run (a fresh topic per run), e.g. another Kafka-API broker. */
const SHARED_BROKER = process.env.WEFT_STRESS_BROKER || ''
const NODES = 3
const PARTITIONS = 12

/** Bounds of one run's phases (ms). */
const SYNC_TIMEOUT = 60000
const CONVERGE_TIMEOUT = 60000
const FRESH_TIMEOUT = 30000

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }

/** One random edit: a text insert or delete, or a map set. */
function randomChange (doc, rand, name) {
  const text = doc.getText('text')
  const r = rand.next()
  if (r < 0.45) {
    text.insert(rand.int(text.length + 1), rand.string(1 + rand.int(5)))
  } else if (r < 0.7 && text.length > 0) {
    const at = rand.int(text.length)
    text.delete(at, Math.min(1 + rand.int(3), text.length - at))
  } else {
    doc.getMap('map').set(`k${rand.int(10)}`, rand.next() < 0.5 ? `${name}:${rand.string(3)}` : rand.int(1000))
  }
}

/**
 * A client's edit loop: `EDITS` edits, each a random change and a token
 * pushed to the array; sometimes the two go as one update, sometimes as two
 * (so deletions travel alone too), with short random pauses so that the
 * clients' updates interleave on the wire. Starts at once: edits made before
 * the client synced travel in its SyncStep2.
 */
async function editLoop (client, rand) {
  const doc = client.doc
  if (rand.next() < 0.5) await waitSynced(client, { timeout: SYNC_TIMEOUT })
  for (let i = 0; i < EDITS; i++) {
    const token = `${client.name}#${i}`
    if (rand.next() < 0.5) {
      doc.transact(() => {
        randomChange(doc, rand, client.name)
        doc.getArray('array').push([token])
      })
    } else {
      randomChange(doc, rand, client.name)
      if (rand.next() < 0.5) await new Promise(resolve => setImmediate(resolve))
      doc.getArray('array').push([token])
    }
    client.tokens.push(token)
    const pause = rand.next()
    if (pause < 0.6) await sleep(rand.int(PAUSE_MS))
    else if (pause < 0.8) await new Promise(resolve => setImmediate(resolve))
  }
}

/** Each token of `expected` in the client's array exactly once, and nothing else. */
function tokenProblems (client, expected) {
  const counts = new Map()
  for (const token of client.doc.getArray('array').toJSON()) counts.set(token, (counts.get(token) || 0) + 1)
  const missing = expected.filter(token => !counts.has(token))
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([token]) => token)
  const unexpected = [...counts.keys()].filter(token => !expected.includes(token))
  if (missing.length + duplicated.length + unexpected.length === 0) return null
  return `${client.name}: missing ${JSON.stringify(missing.slice(0, 10))} (${missing.length}), duplicated ${JSON.stringify(duplicated.slice(0, 10))}, unexpected ${unexpected.length}`
}

function shortState (client) {
  const content = canonicalJson(docContent(client.doc, TYPES))
  return `${client.name} (connected=${client.provider.wsconnected} synced=${client.provider.synced} closes=${JSON.stringify(client.closeCodes)}): sv=${stateVectorString(client.doc)} array=${client.doc.getArray('array').length} content=${content.length > 160 ? content.slice(0, 160) + '…' : content}`
}

/** The state each node holds of `docName`, seen by a fresh client there (for a failure report). */
async function replicaStates (t, nodes, docName) {
  const probes = nodes.map((node, n) => createClient(t, node, docName, { name: `probe@node-${n}` }))
  await waitSynced(probes, { timeout: 10000 }).catch(() => {})
  const states = probes.map(shortState)
  for (const probe of probes) probe.destroy()
  return states
}

/** Waits until `clients` hold the same state; on timeout, fails naming which client and replica lacks what. */
async function converged (t, nodes, docName, clients) {
  const started = now()
  try {
    await waitFor(() => {
      const first = fingerprint(clients[0].doc, TYPES)
      return clients.every(c => fingerprint(c.doc, TYPES) === first)
    }, { on: clients, timeout: CONVERGE_TIMEOUT, what: `convergence of ${docName}` })
  } catch (err) {
    const replicas = await replicaStates(t, nodes, docName)
    throw new Error(`${err.message}\nclients:\n${clients.map(shortState).join('\n')}\nreplicas (a fresh client on each node):\n${replicas.join('\n')}`)
  }
  return now() - started
}

/**
 * A fresh cluster of `nodes` brokers. Starting one can fail for reasons of
 * the machine, not of Weft (a free port taken by another process between
 * kafka.sh picking and binding it): tried three times.
 */
async function startBrokers (t, nodes) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await KafkaCluster.start(t, { nodes })
    } catch (err) {
      if (attempt >= 3) throw err
      console.log(`[converge] starting the brokers failed (attempt ${attempt}): ${String(err.message).split('\n')[0]}; again`)
    }
  }
}

/** Per node: replay passes, skipped offset ranges re-read, documents re-read and repaired. */
async function busCounts (nodes) {
  const counts = []
  for (const node of nodes) {
    counts.push([
      await metric(node, 'weft_bus_replay_passes_total'),
      await metric(node, 'weft_bus_live_gaps_total'),
      await metric(node, 'weft_documents_reread_total'),
      await metric(node, 'weft_documents_repaired_total')
    ].join('/'))
  }
  return counts
}

for (let run = 1; run <= RUNS; run++) {
  const brokers = !SHARED_BROKER && RF3_EVERY > 0 && run % RF3_EVERY === 0 ? 3 : 1
  const title = `converge: run ${run}/${RUNS}, ${NODES} nodes, ${brokers} broker${brokers > 1 ? 's (RF 3)' : ''}, ${DOCS} documents of ${PARTITIONS} partitions, ${EDITS} edits per client`
  e2e(title, { timeout: brokers > 1 ? 420000 : 300000 }, async (t) => {
    const seed = testSeed()
    console.log(`[converge] run ${run}: WEFT_E2E_SEED=${seed} brokers=${brokers} consume=${CONSUME}`)
    const timings = []
    const phase = (label, started) => {
      const ms = now() - started
      timings.push(`${label} ${(ms / 1000).toFixed(1)} s`)
      report(`converge run ${run}: ${label}`, ms)
    }

    let started = now()
    const cluster = SHARED_BROKER ? { bootstrap: SHARED_BROKER } : await startBrokers(t, brokers)
    phase(SHARED_BROKER ? 'shared broker' : `${brokers} broker(s) up`, started)

    started = now()
    const topic = `converge-${crypto.randomUUID()}`
    const nodes = await Promise.all(Array.from({ length: NODES }, (_, n) => startWeft(t, {
      name: `node-${n}`,
      ready: { timeout: 60000 },
      args: [
        '--kafka-brokers', cluster.bootstrap,
        '--kafka-topic', topic,
        '--kafka-partitions', String(PARTITIONS),
        '--kafka-replication-factor', String(brokers > 1 ? 3 : 1),
        '--kafka-consume', CONSUME,
        '--node-id', `node-${n}`,
        '--node-heartbeat-interval', '500ms'
      ]
    })))
    phase('nodes ready', started)

    // Every client of every document on every node, connecting within
    // STAGGER_MS of each other and editing at once (half of them before
    // they synced): each node loads 30 documents of 12 partitions while
    // records of those partitions stream in.
    const rand = prng(seed)
    const docs = Array.from({ length: DOCS }, (_, d) => ({ name: `stress/${seed}/${d}`, clients: [] }))
    for (const doc of docs) {
      for (let n = 0; n < NODES; n++) {
        const client = createClient(t, nodes[n], doc.name, { name: `d${docs.indexOf(doc)}@node-${n}`, connect: false })
        client.tokens = []
        doc.clients.push(client)
      }
    }
    const all = docs.flatMap(doc => doc.clients)
    started = now()
    const editing = Promise.all(all.map(async client => {
      const own = prng(rand.int(2 ** 32))
      await sleep(own.int(STAGGER_MS + 1))
      client.provider.connect()
      await editLoop(client, own)
    }))
    if (brokers > 1 && BROKER_PAUSE_MS > 0) {
      // A broker that stops answering for longer than its session timeout
      // (a long GC pause, a starved machine): its partitions get new
      // leaders while documents load and records stream.
      const paused = 1 + rand.int(brokers)
      await sleep(rand.int(STAGGER_MS + 1))
      await cluster.signal(paused, 'SIGSTOP')
      console.log(`[converge] run ${run}: broker ${paused} paused for ${BROKER_PAUSE_MS} ms`)
      await sleep(BROKER_PAUSE_MS)
      await cluster.signal(paused, 'SIGCONT')
    }
    await waitSynced(all, { timeout: SYNC_TIMEOUT, what: `sync of all ${all.length} clients` })
    phase(`${all.length} clients synced (editing meanwhile)`, started)
    await editing
    phase(`${all.length * EDITS} edits issued`, started)

    started = now()
    const problems = []
    for (const doc of docs) {
      try {
        await converged(t, nodes, doc.name, doc.clients)
      } catch (err) {
        problems.push(err.message)
        continue
      }
      const expected = doc.clients.flatMap(client => client.tokens)
      for (const client of doc.clients) {
        const problem = tokenProblems(client, expected)
        if (problem) problems.push(`${doc.name}: ${problem}`)
      }
    }
    phase('every document converged', started)

    // The replicas: a fresh client on every node gets the same state.
    started = now()
    const fresh = docs.flatMap(doc => nodes.map((node, n) => {
      const client = createClient(t, node, doc.name, { name: `fresh-${docs.indexOf(doc)}@node-${n}` })
      client.reference = doc.clients[0]
      client.expected = doc.clients.flatMap(c => c.tokens)
      return client
    }))
    await waitSynced(fresh, { timeout: FRESH_TIMEOUT, what: `sync of ${fresh.length} fresh clients` })
    for (const client of fresh) {
      if (fingerprint(client.doc, TYPES) !== fingerprint(client.reference.doc, TYPES)) {
        problems.push(`${client.docName}: replica differs from its clients\n  ${shortState(client)}\n  ${shortState(client.reference)}`)
        continue
      }
      const problem = tokenProblems(client, client.expected)
      if (problem) problems.push(`${client.docName}: ${problem}`)
    }
    phase(`${fresh.length} fresh clients synced and compared`, started)

    console.log(`[converge] run ${run}: per node, replay passes/skipped ranges re-read/documents re-read/repaired: ${(await busCounts(nodes)).join(', ')}`)
    console.log(`[converge] run ${run} timings: ${timings.join(', ')}`)
    assert.deepEqual(problems, [], `run ${run} (seed ${seed}): ${problems.length} problem(s)`)
  })
}
