// The change feed on a cluster (a node, a persistence worker, a real Kafka
// broker and PostgreSQL): `weft persist --webhook-url` delivers every
// change at least once, in order per document, signed, to a receiver that
// fails at random while the worker is SIGKILLed once; a cluster node
// serves server-sent events from the rows the worker stored (read grants
// apply), resumed with Last-Event-ID. An event the receiver always
// refuses becomes a record on `<topic>-deadletter` after
// --webhook-retry-for; a replay asked of a node is applied by the worker:
// the changes since then arrive again, in order per document, signed.

import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import http from 'node:http'
import path from 'node:path'
import {
  Y, e2e, startWeft, createClient, waitFor, waitSynced, sleep, prng, testSeed, signJwt, jwtClaims, metric, HOST, KAFKA_SH
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const skip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const HOOK_SECRET = 'webhook-cluster-test-secret'
const JWT_SECRET = 'webhooks-cluster-e2e-secret-0123456789ab'
const writerToken = signJwt(jwtClaims({ sub: 'writer', docs: { 'whc/**': 'rw' } }), { secret: JWT_SECRET })
const readerToken = signJwt(jwtClaims({ sub: 'reader', docs: { 'whc/a': 'r' } }), { secret: JWT_SECRET })
const adminToken = signJwt(jwtClaims({ sub: 'admin', admin: true }), { secret: JWT_SECRET })
const DOCS = ['whc/a', 'whc/b', 'whc/c']

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

/** A receiver on 127.0.0.1 failing a third of the POSTs (500 or no answer), checking signatures. */
async function startReceiver (t, seed) {
  const random = prng(seed).next
  const receiver = Object.assign(new EventEmitter(), { accepted: [], attempts: 0, failed: 0, badSignatures: [], generation: 0 })
  const hanging = new Set()
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      receiver.attempts += 1
      const signature = req.headers['weft-signature'] || ''
      const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature)
      const expected = match && crypto.createHmac('sha256', HOOK_SECRET).update(`${match[1]}.`).update(body).digest('hex')
      if (!match || expected !== match[2]) {
        receiver.badSignatures.push(signature)
        res.writeHead(401).end()
        return
      }
      const roll = random()
      if (roll < 0.2) {
        receiver.failed += 1
        res.writeHead(500).end('not now')
        return
      }
      if (roll < 0.3) {
        receiver.failed += 1
        hanging.add(res)
        return // never answered: --webhook-timeout fires
      }
      receiver.accepted.push({ ...JSON.parse(body.toString('utf8')), generation: receiver.generation })
      res.writeHead(204).end()
      receiver.emit('change')
    })
  })
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  t.after(() => {
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    server.close()
  })
  receiver.url = `http://${HOST}:${server.address().port}/hook`
  return receiver
}

const tokensOf = (events, doc) => {
  const ydoc = new Y.Doc()
  for (const event of events) {
    if (event.doc === doc && event.update) Y.applyUpdate(ydoc, Buffer.from(event.update, 'base64'))
  }
  return ydoc.getArray('tokens').toJSON().sort()
}

/** Reads server-sent events from `url` until `until(events)`. */
async function readEvents (url, { headers = {}, until }) {
  const controller = new AbortController()
  const res = await fetch(url, { headers, signal: controller.signal })
  assert.equal(res.status, 200, `GET ${url}`)
  const events = []
  const decoder = new TextDecoder()
  let buffer = ''
  try {
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true })
      let cut
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        const fields = {}
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':')
          if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart()
        }
        if (fields.data) events.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data) })
      }
      if (until(events)) break
    }
  } finally {
    controller.abort()
  }
  return events
}

e2e('cluster change feed: weft persist delivers every change through a worker SIGKILL; a node streams events resumed with Last-Event-ID', { skip, timeout: 60000 }, async (t) => {
  const seed = testSeed()
  const receiver = await startReceiver(t, seed)
  const topic = `e2e-webhooks-cluster-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const common = ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--kafka-fetch-wait-ms', '10']
  const node = await startWeft(t, { name: 'node-0', store, args: [...common, '--node-id', 'node-0', '--auth-jwt-secret', JWT_SECRET] })
  const worker = await startWeft(t, {
    name: 'worker',
    command: 'persist',
    store,
    args: [...common, '--node-id', 'worker', '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s',
      '--webhook-url', receiver.url, '--webhook-secret', HOOK_SECRET, '--webhook-debounce', '150ms',
      '--webhook-max-delay', '600ms', '--webhook-timeout', '700ms']
  })
  const writers = DOCS.map((doc) => createClient(t, node, doc, { name: doc, maxBackoffTime: 200, params: { token: writerToken } }))
  await waitSynced(writers)
  const expected = new Map(DOCS.map((doc) => [doc, []]))
  const random = prng(seed + 1).next
  let written = 0
  const write = async (count) => {
    for (let i = 0; i < count; i++) {
      const writer = writers[Math.floor(random() * writers.length)]
      const token = `${writer.name}-${written++}`
      writer.doc.getArray('tokens').push([token])
      expected.get(writer.name).push(token)
      await sleep(5 + Math.floor(random() * 20))
    }
  }
  await write(40)
  await waitFor(() => receiver.accepted.length > 0, { on: receiver, timeout: 20000, what: 'a first delivery' })
  await worker.kill()
  receiver.generation += 1
  await write(40)
  await worker.restart()
  await waitSynced(writers, { timeout: 20000 })

  for (const doc of DOCS) {
    const want = [...expected.get(doc)].sort()
    await waitFor(() => JSON.stringify(tokensOf(receiver.accepted, doc)) === JSON.stringify(want), {
      on: receiver,
      timeout: 30000,
      what: `every change of ${doc} delivered`,
      detail: () => `${tokensOf(receiver.accepted, doc).length} of ${want.length}; ${receiver.attempts} attempts, ${receiver.failed} failed`
    })
  }
  console.log(`# webhooks-cluster (seed ${seed}): ${written} edits, ${receiver.attempts} attempts, ${receiver.failed} failed, ${receiver.accepted.length} accepted`)
  assert.deepEqual(receiver.badSignatures, [], 'every request carried a valid signature')
  // In order per document within one run of the worker (a restarted
  // worker re-delivers from its stored position: never earlier ones within a run).
  for (const doc of DOCS) {
    let previous = null
    for (const event of receiver.accepted.filter((e) => e.doc === doc)) {
      assert.ok(Number(event.from) <= Number(event.to))
      if (previous && previous.generation === event.generation) {
        assert.ok(Number(event.from) > Number(previous.to), `${doc}: event ${event.id} after ${previous.id}`)
      }
      previous = event
    }
  }

  // Server-sent events on the node, from the worker's stored rows; read
  // grants apply; resumed with Last-Event-ID.
  const doc = 'whc/a'
  const headers = { authorization: `Bearer ${readerToken}` }
  const denied = await fetch(`${node.httpUrl}/api/documents/${encodeURIComponent('whc/b')}/events?after=0`, { headers })
  assert.equal(denied.status, 403)
  await denied.arrayBuffer()
  const url = `${node.httpUrl}/api/documents/${encodeURIComponent(doc)}/events`
  const first = await readEvents(`${url}?after=0`, { headers, until: (events) => events.length >= 3 })
  const lastSeen = first[first.length - 1].id
  const wantAll = expected.get(doc).length
  const all = () => [...first, ...rest].map((event) => event.data)
  let rest = []
  rest = await readEvents(url, {
    headers: { ...headers, 'Last-Event-ID': lastSeen },
    until: (events) => { rest = events; return tokensOf(all(), doc).length >= wantAll }
  })
  const ids = [...first, ...rest].map((event) => Number(event.id))
  assert.deepEqual(ids, [...new Set(ids)].sort((a, b) => a - b), 'ids increase, none twice')
  assert.deepEqual(tokensOf(all(), doc), [...expected.get(doc)].sort())

  // A live change after the stream opened reaches it (once the worker stored it).
  const opened = Date.now()
  const live = readEvents(url, { headers: { ...headers, 'Last-Event-ID': String(ids[ids.length - 1]) }, until: (events) => events.length >= 1 })
  writers[0].doc.getArray('tokens').push(['live'])
  const [liveEvent] = await live
  assert.equal(liveEvent.data.doc, doc)
  console.log(`# webhooks-cluster: a live change reached a node's event stream in ${Date.now() - opened} ms`)

})

/** A receiver on 127.0.0.1 refusing (500) every event of `refusedDoc`, accepting the rest, checking signatures. */
async function startStrictReceiver (t, refusedDoc) {
  const receiver = Object.assign(new EventEmitter(), { accepted: [], refused: 0, badSignatures: [] })
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const signature = req.headers['weft-signature'] || ''
      const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature)
      const expected = match && crypto.createHmac('sha256', HOOK_SECRET).update(`${match[1]}.`).update(body).digest('hex')
      if (!match || expected !== match[2]) {
        receiver.badSignatures.push(signature)
        res.writeHead(401).end()
        return
      }
      const event = JSON.parse(body.toString('utf8'))
      if (event.doc === refusedDoc) {
        receiver.refused += 1
        res.writeHead(500).end('never')
        return
      }
      receiver.accepted.push({ ...event, delivery: req.headers['weft-delivery'] })
      res.writeHead(204).end()
      receiver.emit('change')
    })
  })
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  receiver.url = `http://${HOST}:${server.address().port}/hook`
  return receiver
}

/** Run `command` (not blocking the event loop), bounded by `timeout` ms; resolves with its stdout. */
function run (command, args, timeout) {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${path.basename(command)} ${args.slice(-4).join(' ')}: ${error.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

/** Up to `count` records of `topic` from its start, read with Apache Kafka's own consumer (tests/kafka/ConsumeRaw.java). */
async function consumeRaw (topic, count, timeoutMs) {
  const classpath = (await run(KAFKA_SH, ['classpath'], 600000)).trim()
  const program = path.join(path.dirname(KAFKA_SH), 'ConsumeRaw.java')
  const out = await run('java', ['-cp', `${classpath}/*`, program, BROKER, topic, String(count), String(timeoutMs)], timeoutMs + 60000)
  return out.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line))
}

e2e('cluster webhooks: a refused event becomes a record on <topic>-deadletter; a replay asked of a node is delivered again by the worker', { skip, timeout: 120000 }, async (t) => {
  const refusedDoc = 'whc/refused'
  const docs = ['whc/a', 'whc/b']
  const receiver = await startStrictReceiver(t, refusedDoc)
  const topic = `e2e-webhooks-deadletter-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const common = ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '2', '--kafka-fetch-wait-ms', '10']
  const node = await startWeft(t, { name: 'node-0', store, args: [...common, '--node-id', 'node-0', '--auth-jwt-secret', JWT_SECRET] })
  const worker = await startWeft(t, {
    name: 'worker',
    command: 'persist',
    store,
    args: [...common, '--node-id', 'worker', '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s',
      '--webhook-url', receiver.url, '--webhook-secret', HOOK_SECRET, '--webhook-debounce', '100ms',
      '--webhook-max-delay', '400ms', '--webhook-timeout', '2s', '--webhook-retry-for', '1s']
  })
  const writers = [...docs, refusedDoc].map((doc) => createClient(t, node, doc, { name: doc, maxBackoffTime: 200, params: { token: writerToken } }))
  await waitSynced(writers)
  const startedAt = new Date(Date.now() - 1000)
  const expected = new Map(docs.map((doc) => [doc, []]))
  for (let i = 0; i < 12; i++) {
    const writer = writers[i % 2]
    const token = `${writer.name}-${i}`
    writer.doc.getArray('tokens').push([token])
    expected.get(writer.name).push(token)
    await sleep(20)
  }
  writers[2].doc.getArray('tokens').push(['refused-0'])
  const everyDoc = (events) => docs.every((doc) => JSON.stringify(tokensOf(events, doc)) === JSON.stringify([...expected.get(doc)].sort()))
  await waitFor(() => everyDoc(receiver.accepted), { on: receiver, timeout: 30000, what: 'every change delivered once' })

  // The refused event: one record keyed by its document, the body as POSTed, what happened in headers.
  const deadLetterTopic = `${topic}-deadletter`
  const [letter] = await consumeRaw(deadLetterTopic, 1, 30000)
  assert.ok(letter, `a record on ${deadLetterTopic}`)
  assert.equal(letter.key, refusedDoc)
  const body = JSON.parse(letter.value)
  assert.equal(body.doc, refusedDoc)
  assert.equal(body.event, 'document.changed')
  assert.deepEqual(tokensOf([body], refusedDoc), ['refused-0'])
  assert.match(letter.headers['weft-delivery'], /^\d+-\d+$/)
  assert.equal(letter.headers['weft-target'], receiver.url)
  assert.match(letter.headers['weft-error'], /500/)
  assert.ok(Number(letter.headers['weft-attempts']) >= 1, `attempts: ${letter.headers['weft-attempts']}`)
  assert.equal(letter.headers['weft-positions'], `${body.from}-${body.to}`)
  assert.ok(receiver.refused >= Number(letter.headers['weft-attempts']))
  // Counted once the brokers acknowledged the record (a moment after a consumer may see it).
  let counted = 0
  for (let i = 0; i < 50 && counted < 1; i++) {
    counted = await metric(worker, 'weft_persist_webhook_dead_letters_total')
    if (counted < 1) await sleep(100)
  }
  assert.ok(counted >= 1, 'the dead letter is counted')
  assert.equal(psql(store, 'SELECT count(*) FROM weft_webhook_dead_letters'), '0', 'a cluster dead-letters to the topic, not the table')

  // A replay asked of the node: the worker delivers every change since then again, as new deliveries.
  const firstRun = receiver.accepted.length
  const badBody = await fetch(`${node.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: '{"from":"yesterday"}'
  })
  assert.equal(badBody.status, 400)
  await badBody.arrayBuffer()
  const notAdmin = await fetch(`${node.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/json' }, body: '{"from":"2020-01-01T00:00:00Z"}'
  })
  assert.equal(notAdmin.status, 403)
  await notAdmin.arrayBuffer()
  const asked = Date.now()
  const replay = await fetch(`${node.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ from: startedAt.toISOString() })
  })
  const replayBody = await replay.json()
  assert.equal(replay.status, 202, JSON.stringify(replayBody))
  assert.deepEqual(Object.keys(replayBody).sort(), ['after', 'from'], 'the embedded node\'s answer')
  assert.ok(Math.abs(new Date(replayBody.from).getTime() - startedAt.getTime()) < 1000, replayBody.from)
  assert.match(replayBody.after, /^\d+$/)
  const replayed = () => receiver.accepted.slice(firstRun)
  await waitFor(() => everyDoc(replayed()), {
    on: receiver,
    timeout: 30000,
    what: 'every change delivered again after the replay',
    detail: () => `${replayed().length} events since the replay`
  })
  console.log(`# webhooks-cluster: a replay asked of a node was delivered again in ${Date.now() - asked} ms`)
  assert.equal(psql(store, 'SELECT count(*) FROM weft_webhook_replays WHERE done_at_ms IS NULL'), '0', 'the replay is marked applied')
  for (const event of replayed()) assert.match(event.delivery, /-r\d+$/, `a replayed event gets a new id: ${event.delivery}`)
  for (const doc of docs) {
    let previous = null
    for (const event of replayed().filter((e) => e.doc === doc)) {
      if (previous) assert.ok(Number(event.from) > Number(previous.to), `${doc}: replayed ${event.delivery} after ${previous.delivery}`)
      previous = event
    }
  }

  // A replay asked while no worker delivers waits in the store and is applied when one comes back.
  await worker.kill()
  const secondRun = receiver.accepted.length
  const whileDown = await fetch(`${node.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ from: startedAt.toISOString() })
  })
  assert.equal(whileDown.status, 202)
  await whileDown.arrayBuffer()
  assert.equal(psql(store, 'SELECT count(*) FROM weft_webhook_replays WHERE done_at_ms IS NULL'), '1', 'pending while no worker delivers')
  await worker.restart()
  const replayedAgain = () => receiver.accepted.slice(secondRun)
  await waitFor(() => everyDoc(replayedAgain()), {
    on: receiver,
    timeout: 30000,
    what: 'every change delivered again by the restarted worker',
    detail: () => `${replayedAgain().length} events since the worker restarted`
  })
  assert.equal(psql(store, 'SELECT count(*) FROM weft_webhook_replays WHERE done_at_ms IS NULL'), '0', 'applied by the restarted worker')
  assert.deepEqual(receiver.badSignatures, [], 'every request carried a valid signature')
})
