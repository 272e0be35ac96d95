// The change feed: webhooks delivered at least once and in order per
// document to a receiver that fails, times out and answers slowly at
// random while the node is SIGKILLed; server-sent events resumed after a
// disconnect with Last-Event-ID.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import http from 'node:http'
import {
  Y, e2e, startWeft, createClient, waitFor, waitSynced, sleep, prng, testSeed, metric, HOST
} from '../lib/harness.mjs'

const SECRET = 'webhook-test-secret'
const DOCS = ['wh-alpha', 'wh-beta', 'wh-gamma']
const TYPES = { text: ['text'], map: [], array: ['tokens'] }

// Failed attempts (refused or unanswered) the receiver allows each event.
const MAX_FAILURES = 2

/**
 * A receiver on 127.0.0.1 that answers each POST at random: 500, no
 * answer (the sender times out), a slow 200 or a 200. It checks every
 * request's signature and keeps what it accepted, in order.
 */
async function startReceiver (t, seed) {
  const random = prng(seed).next
  const receiver = Object.assign(new EventEmitter(), {
    accepted: [],
    attempts: 0,
    refused: 0,
    hung: 0,
    badSignatures: [],
    failedIds: new Set(),
    generation: 0
  })
  const hanging = new Set()
  const failuresOf = new Map()
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      receiver.attempts += 1
      receiver.emit('change')
      const signature = req.headers['weft-signature'] || ''
      const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature)
      const expected = match && crypto.createHmac('sha256', SECRET).update(`${match[1]}.`).update(body).digest('hex')
      if (!match || expected !== match[2] || Math.abs(Date.now() / 1000 - Number(match[1])) > 300) {
        receiver.badSignatures.push(signature)
        res.writeHead(401).end()
        return
      }
      const event = JSON.parse(body.toString('utf8'))
      assert.equal(req.headers['weft-delivery'], event.id, 'Weft-Delivery is the event id')
      // At most MAX_FAILURES failed attempts per event, so the retries'
      // doubling delays (1 s, 2 s, ...) keep the run within its bounds
      // whatever the seed draws.
      const failures = failuresOf.get(event.id) || 0
      const roll = failures >= MAX_FAILURES ? 1 : random()
      if (roll < 0.3) failuresOf.set(event.id, failures + 1)
      if (roll < 0.2) {
        receiver.refused += 1
        receiver.failedIds.add(event.id)
        res.writeHead(500).end('not now')
        return
      }
      if (roll < 0.3) {
        receiver.hung += 1
        receiver.failedIds.add(event.id)
        hanging.add(res)
        return // never answered: the sender's --webhook-timeout fires
      }
      const delay = roll < 0.5 ? Math.floor(random() * 400) : 0
      setTimeout(() => {
        if (res.destroyed) return
        receiver.accepted.push({ ...event, generation: receiver.generation })
        res.writeHead(204).end()
        receiver.emit('change')
      }, delay)
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

/** The delivered updates of `doc` applied to a fresh Y.Doc. */
function rebuilt (receiver, doc) {
  const ydoc = new Y.Doc()
  for (const event of receiver.accepted) {
    if (event.doc === doc && event.update) Y.applyUpdate(ydoc, Buffer.from(event.update, 'base64'))
  }
  return ydoc
}

const tokensOf = (ydoc) => [...ydoc.getArray('tokens').toJSON()].sort()

e2e('webhooks: every change delivered at least once, in order, signed, through SIGKILLs and a flaky receiver', { timeout: 100000 }, async (t) => {
  const seed = testSeed()
  const receiver = await startReceiver(t, seed)
  const server = await startWeft(t, {
    args: [
      '--webhook-url', receiver.url,
      '--webhook-secret', SECRET,
      '--webhook-debounce', '150ms',
      '--webhook-max-delay', '600ms',
      '--webhook-timeout', '700ms',
      '--webhook-roots', 'array:tokens'
    ]
  })
  const writers = DOCS.map((doc) => createClient(t, server, doc, { name: doc, maxBackoffTime: 200 }))
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
  await write(60)
  for (let crash = 0; crash < 2; crash++) {
    // Let some deliveries be under way (and some retrying), then kill.
    await waitFor(() => receiver.attempts > 0, { on: receiver, timeout: 15000, what: 'a first delivery attempt' })
    await sleep(300 + Math.floor(random() * 500))
    await server.kill()
    receiver.generation += 1
    await server.restart()
    await write(60)
  }
  // Every writer's edits reached the node (its clients resynced after each restart).
  await waitSynced(writers, { timeout: 20000 })

  for (const doc of DOCS) {
    const want = [...expected.get(doc)].sort()
    await waitFor(() => JSON.stringify(tokensOf(rebuilt(receiver, doc))) === JSON.stringify(want), {
      on: receiver,
      timeout: 45000,
      what: `every change of ${doc} delivered`,
      detail: () => `${tokensOf(rebuilt(receiver, doc)).length} of ${want.length} tokens delivered; ${receiver.attempts} attempts, ${receiver.refused} refused, ${receiver.hung} hung`
    })
    assert.deepEqual(tokensOf(rebuilt(receiver, doc)), want, `${doc}: delivered updates rebuild the document`)
  }
  console.log(`# webhooks (seed ${seed}): ${written} edits, ${receiver.attempts} attempts, ${receiver.refused} refused, ${receiver.hung} unanswered, ${receiver.accepted.length} accepted`)
  assert.deepEqual(receiver.badSignatures, [], 'every request carried a valid signature')
  assert.ok(receiver.refused + receiver.hung > 0, 'the receiver failed some attempts')

  // In order per document within each run of the node: an event's first
  // position comes after the previous event's last. (A restarted node
  // re-delivers from its stored position: at least once, so earlier
  // positions may come again after a crash, never within a run.)
  for (const doc of DOCS) {
    let previous = null
    for (const event of receiver.accepted.filter((e) => e.doc === doc)) {
      assert.equal(event.event, 'document.changed')
      assert.ok(Array.isArray(event.authors) && typeof event.at === 'string' && !Number.isNaN(Date.parse(event.at)))
      assert.ok(Number(event.from) <= Number(event.to))
      if (previous && previous.generation === event.generation) {
        assert.ok(Number(event.from) > Number(previous.to),
          `${doc}: event ${event.id} (gen ${event.generation}) after ${previous.id}`)
      }
      previous = event
    }
  }
  // --webhook-roots: the event holding a document's last change carries
  // the document as it is then.
  for (const doc of DOCS) {
    const events = receiver.accepted.filter((e) => e.doc === doc)
    const last = events.reduce((a, b) => (Number(b.to) > Number(a.to) ? b : a))
    assert.deepEqual([...last.roots.array.tokens].sort(), [...expected.get(doc)].sort(), `${doc}: roots of the last event`)
  }
  // A refused event is retried with the same Weft-Delivery id: in the last
  // run, every id that failed was later accepted under that id.
  const lastRun = new Set(receiver.accepted.filter((e) => e.generation === receiver.generation).map((e) => e.id))
  const retried = [...receiver.failedIds].filter((id) => lastRun.has(id))
  assert.ok(retried.length > 0 || receiver.failedIds.size === 0, 'a failed delivery was retried under its id')
})

/** Reads server-sent events from `url` until `until(events)` or abort. */
async function readEvents (url, { headers = {}, until }) {
  const controller = new AbortController()
  const res = await fetch(url, { headers, signal: controller.signal })
  assert.equal(res.status, 200, `GET ${url}`)
  assert.match(res.headers.get('content-type'), /^text\/event-stream/)
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
          if (colon <= 0) continue
          fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart()
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

e2e('server-sent events: each durable change, resumed after a disconnect with Last-Event-ID', { timeout: 30000 }, async (t) => {
  const server = await startWeft(t)
  const doc = 'sse-doc'
  const writer = createClient(t, server, doc, { name: 'writer' })
  await waitSynced([writer])
  const url = `${server.httpUrl}/api/documents/${doc}/events?after=0`
  const push = (from, to) => {
    for (let i = from; i < to; i++) writer.doc.getArray('tokens').push([`t${i}`])
  }
  push(0, 10)
  const first = await readEvents(url, { until: (events) => events.length >= 4 })
  const lastSeen = first[first.length - 1].id
  // Written while no one listens.
  push(10, 25)
  await waitSynced([writer])
  const rest = await readEvents(`${server.httpUrl}/api/documents/${doc}/events`, {
    headers: { 'Last-Event-ID': lastSeen },
    until: (events) => {
      const ydoc = new Y.Doc()
      for (const event of [...first, ...events]) Y.applyUpdate(ydoc, Buffer.from(event.data.update, 'base64'))
      return ydoc.getArray('tokens').length >= 25
    }
  })
  const ids = [...first, ...rest].map((event) => Number(event.id))
  assert.deepEqual(ids, [...new Set(ids)].sort((a, b) => a - b), 'ids are log positions, increasing, none twice')
  assert.ok(rest.every((event) => event.event === 'document.changed' && event.data.doc === doc))
  const ydoc = new Y.Doc()
  for (const event of [...first, ...rest]) Y.applyUpdate(ydoc, Buffer.from(event.data.update, 'base64'))
  assert.deepEqual(ydoc.getArray('tokens').toJSON(), writer.doc.getArray('tokens').toJSON())

  // Many documents by glob: a change of another document matching it.
  const other = createClient(t, server, 'sse-other', { name: 'other' })
  await waitSynced([other])
  const many = readEvents(`${server.httpUrl}/api/events?docs=sse-*`, { until: (events) => events.some((e) => e.data.doc === 'sse-other') })
  await sleep(300)
  other.doc.getArray('tokens').push(['x'])
  const seen = await many
  assert.ok(seen.every((event) => event.data.doc.startsWith('sse-')))

  const bad = await fetch(`${server.httpUrl}/api/documents/${doc}/events`, { headers: { 'Last-Event-ID': 'yesterday' } })
  assert.equal(bad.status, 400)
  await bad.arrayBuffer()
})

e2e('webhooks: an event refused past --webhook-retry-for is dead-lettered, later ones go on, a replay delivers again', { timeout: 40000 }, async (t) => {
  const accepted = []
  let refuseAll = true
  const hooks = new EventEmitter()
  const receiver = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      if (refuseAll) {
        res.writeHead(503).end()
        return
      }
      accepted.push(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      res.writeHead(200).end()
      hooks.emit('change')
    })
  })
  await new Promise((resolve) => receiver.listen(0, HOST, resolve))
  t.after(() => { receiver.closeAllConnections(); receiver.close() })
  const server = await startWeft(t, {
    args: [
      '--webhook-url', `http://${HOST}:${receiver.address().port}/hook`,
      '--webhook-secret', SECRET,
      '--webhook-debounce', '100ms',
      '--webhook-max-delay', '300ms',
      '--webhook-retry-for', '1500ms'
    ]
  })
  const started = new Date(Date.now() - 1000).toISOString()
  const writer = createClient(t, server, 'dead-doc', { name: 'writer' })
  await waitSynced([writer])
  writer.doc.getArray('tokens').push(['refused'])
  const deadLetters = async () => Number(await metric(server, 'weft_webhook_dead_letters_total'))
  const deadline = Date.now() + 15000
  while (await deadLetters() < 1) {
    assert.ok(Date.now() < deadline, 'no dead letter within 15 s')
    await sleep(200)
  }
  refuseAll = false
  writer.doc.getArray('tokens').push(['accepted'])
  await waitFor(() => accepted.some((e) => !e.id.includes('-r')), { on: hooks, timeout: 10000, what: 'the next event after the dead letter' })
  assert.ok(accepted.every((e) => e.doc === 'dead-doc'))

  // Replay (an open node: every caller is admin). A malformed instant is a 400.
  const bad = await fetch(`${server.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"from":"yesterday"}'
  })
  assert.equal(bad.status, 400)
  await bad.arrayBuffer()
  const replay = await fetch(`${server.httpUrl}/api/webhooks/replay`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ from: started })
  })
  assert.equal(replay.status, 202)
  await replay.json()
  const rebuilt = () => {
    const ydoc = new Y.Doc()
    for (const event of accepted.filter((e) => e.id.endsWith('-r1'))) Y.applyUpdate(ydoc, Buffer.from(event.update, 'base64'))
    return ydoc.getArray('tokens').toJSON()
  }
  await waitFor(() => rebuilt().length === 2, { on: hooks, timeout: 10000, what: 'the replay of both edits', detail: () => JSON.stringify(accepted.map((e) => e.id)) })
  assert.deepEqual(rebuilt(), writer.doc.getArray('tokens').toJSON())
})
