// Admission and rate limits against the binary: node-wide and per-IP
// connection limits, the per-IP upgrade rate, the document limit, draining,
// the per-session update rate, the memory bound of a client that never
// reads, and SIGTERM.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, now, report, sleep, within,
  rawUpgrade, assertRefusal, openRaw, procMemory
} from '../lib/harness.mjs'

/** Open `n` raw sessions on `doc` and wait for each one's greeting. */
async function openSessions (t, server, doc, n, prefix = 's') {
  const sessions = []
  for (let i = 0; i < n; i++) {
    const s = await openRaw(t, server, doc, { name: `${prefix}${i}` })
    await s.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting' })
    sessions.push(s)
  }
  return sessions
}

/**
 * After a session closed, the server frees its slot once the session task
 * has ended, which a client cannot observe directly: retry the upgrade a
 * bounded number of times until it is accepted.
 */
async function upgradeEventually (server, target, { attempts = 40, interval = 50, what } = {}) {
  let last
  for (let i = 0; i < attempts; i++) {
    last = await rawUpgrade(server, target)
    if (last.status === 101) return last
    await sleep(interval)
  }
  assert.fail(`${what || target}: still refused after ${attempts} attempts: HTTP ${last.status} ${last.body}`)
}

e2e('--max-connections: one session past the node limit gets 503 with Retry-After', async (t) => {
  const server = await startWeft(t, { args: ['--max-connections', '3'] })
  const open = await openSessions(t, server, 'conn-limit', 3)
  const refused = await rawUpgrade(server, '/conn-limit')
  assertRefusal(refused, 503, { retryAfter: true, what: 'upgrade past --max-connections' })
  // another document does not help: the limit is node-wide
  assertRefusal(await rawUpgrade(server, '/conn-limit-other'), 503, { retryAfter: true, what: 'other doc past --max-connections' })
  // the open sessions are unaffected
  assert.ok(open.every(s => s.close === null), 'the open sessions stay open')
  // a freed slot is taken again
  open[0].ws.close(1000)
  await open[0].waitClosed()
  await upgradeEventually(server, '/conn-limit', { what: 'upgrade after a session left' })
})

e2e('--max-connections-per-ip: one session past the per-IP limit gets 429 with Retry-After', async (t) => {
  const server = await startWeft(t, { env: { WEFT_MAX_CONNECTIONS_PER_IP: '2' } })
  const open = await openSessions(t, server, 'ip-limit', 2)
  assertRefusal(await rawUpgrade(server, '/ip-limit'), 429, { retryAfter: true, what: 'upgrade past --max-connections-per-ip' })
  assertRefusal(await rawUpgrade(server, '/ip-limit-b'), 429, { retryAfter: true, what: 'other doc past --max-connections-per-ip' })
  // plain HTTP is not a session and is not limited
  const ready = await fetch(`${server.httpUrl}/readyz`, { signal: AbortSignal.timeout(5000) })
  await ready.arrayBuffer()
  assert.equal(ready.status, 200)
  open[1].ws.close(1000)
  await open[1].waitClosed()
  await upgradeEventually(server, '/ip-limit', { what: 'upgrade after a session of this IP left' })
})

e2e('--max-upgrades-per-ip-per-second: a burst past 2N gets 429 with Retry-After, and later passes again', async (t) => {
  const N = 5
  const server = await startWeft(t, { args: ['--max-upgrades-per-ip-per-second', String(N)] })
  const attempts = 4 * N
  const started = now()
  const results = await Promise.all(Array.from({ length: attempts }, () => rawUpgrade(server, '/upgrade-rate')))
  const elapsedS = (now() - started) / 1000
  const accepted = results.filter(r => r.status === 101).length
  const refused = results.filter(r => r.status !== 101)
  report(`upgrade burst of ${attempts} at N=${N}: ${accepted} accepted in`, elapsedS * 1000)
  // the bucket holds a burst of 2N; during the burst it refills at N/s
  assert.ok(accepted >= 2 * N, `at least the burst of ${2 * N} is accepted, got ${accepted}`)
  assert.ok(accepted <= 2 * N + Math.ceil(elapsedS * N) + 1,
    `at most the burst plus the refill is accepted: ${accepted} of ${attempts} in ${elapsedS.toFixed(2)} s`)
  assert.ok(refused.length > 0)
  let retryAfter = 0
  for (const r of refused) {
    assertRefusal(r, 429, { retryAfter: true, what: 'upgrade past the rate' })
    retryAfter = Math.max(retryAfter, Number(r.headers['retry-after']))
  }
  assert.ok(retryAfter <= 60, `Retry-After is a sensible wait, got ${retryAfter}`)
  // honouring Retry-After is enough to get in again
  await sleep(retryAfter * 1000)
  const again = await rawUpgrade(server, '/upgrade-rate')
  assert.equal(again.status, 101, `accepted after waiting Retry-After (${retryAfter} s): ${again.status} ${again.body || ''}`)
})

e2e('--max-documents: an upgrade that would load one more document gets 503; loaded ones stay joinable', async (t) => {
  const server = await startWeft(t, { args: ['--max-documents', '2', '--doc-unload-grace', '200ms'] })
  const a = createClient(t, server, 'maxdoc-a', { name: 'A' })
  const b = createClient(t, server, 'maxdoc-b', { name: 'B' })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'doc a')

  assertRefusal(await rawUpgrade(server, '/maxdoc-c'), 503, { retryAfter: true, what: 'a third document' })
  assertRefusal(await rawUpgrade(server, '/maxdoc-d'), 503, { retryAfter: true, what: 'a fourth document' })
  // a loaded document takes more sessions
  const a2 = createClient(t, server, 'maxdoc-a', { name: 'A2' })
  const b2 = createClient(t, server, 'maxdoc-b', { name: 'B2' })
  await waitSynced([a2, b2])
  await waitConverged([a, a2])
  assert.equal(a2.doc.getText('text').toString(), 'doc a')

  // once nobody has "maxdoc-b" open and it was unloaded, "maxdoc-c" fits
  b.destroy()
  b2.destroy()
  await upgradeEventually(server, '/maxdoc-c', { attempts: 100, interval: 100, what: 'a third document after one was unloaded' })
  // "maxdoc-a" was never unloaded and is still served
  a.doc.getText('text').insert(0, '> ')
  await waitFor(() => a2.doc.getText('text').toString() === '> doc a', { on: a2, what: 'A2 to see the edit' })
})

/**
 * A session that stops reading right after its greeting: the server's
 * frames pile up in the socket buffers and then in its send queue.
 */
async function stalledReader (t, server, doc) {
  const slow = await openRaw(t, server, doc, { name: 'stalled' })
  await slow.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting' })
  slow.ws.pause()
  return slow
}

/** Payload of one flooding update (the map value is replaced, so the doc does not grow). */
const blob = (i, bytes) => String(i % 10).repeat(bytes)

/**
 * The writer replaces the map value `key` `count` times with `bytes`-byte
 * strings, each time waiting until `observer` has it (so only the stalled
 * client, never the observer, falls behind). Returns the bytes sent.
 */
async function flood (writer, observer, { count, bytes, key = 'blob', deadlineMs = 120000 }) {
  const started = now()
  const wmap = writer.doc.getMap('map')
  const omap = observer.doc.getMap('map')
  for (let i = 0; i < count; i++) {
    wmap.set(key, blob(i, bytes))
    wmap.set('seq', i)
    await waitFor(() => omap.get('seq') === i, { on: observer, timeout: 15000, what: `the observer to receive flood update ${i}` })
    if (now() - started > deadlineMs) throw new Error(`flood took longer than ${deadlineMs} ms (at ${i} of ${count})`)
  }
  return count * bytes
}

e2e('slow reader: a client that never reads is cut off when its send queue fills; server memory stays bounded', { timeout: 240000 }, async (t) => {
  const QUEUE_FRAMES = 16
  const UPDATE_BYTES = 64 * 1024
  const FLOOD_BYTES = 48 * 1024 * 1024
  const server = await startWeft(t, {
    args: ['--send-queue-frames', String(QUEUE_FRAMES), '--max-updates-per-second', '0', '--max-message-bytes', String(4 * 1024 * 1024)]
  })
  const DOC = 'slow-reader'
  const writer = createClient(t, server, DOC, { name: 'writer' })
  const observer = createClient(t, server, DOC, { name: 'observer' })
  await waitSynced([writer, observer])
  // warm-up without the slow reader: allocator arenas, buffers, the store
  await flood(writer, observer, { count: 64, bytes: UPDATE_BYTES, key: 'warmup' })
  const before = procMemory(server.pid)

  const slow = await stalledReader(t, server, DOC)
  const count = Math.ceil(FLOOD_BYTES / UPDATE_BYTES)
  const started = now()
  const flooded = await flood(writer, observer, { count, bytes: UPDATE_BYTES })
  report(`flood of ${(flooded / 2 ** 20).toFixed(0)} MiB past a stalled reader`, now() - started)
  const after = procMemory(server.pid)
  const growthKiB = after.rssKiB - before.rssKiB
  const peakGrowthKiB = after.hwmKiB - before.rssKiB
  console.log(`[measure] slow reader: VmRSS ${before.rssKiB} KiB -> ${after.rssKiB} KiB (growth ${growthKiB} KiB), VmHWM ${before.hwmKiB} -> ${after.hwmKiB} KiB (peak over baseline ${peakGrowthKiB} KiB), flooded ${(flooded / 1024).toFixed(0)} KiB, queue bound ${QUEUE_FRAMES} x ${UPDATE_BYTES / 1024} KiB`)
  // A server that buffered for the stalled client would grow by ~the flood.
  // Allow the queue, socket buffers and allocator slack, far below the flood.
  const boundKiB = flooded / 1024 / 4
  assert.ok(growthKiB < boundKiB, `RSS grew by ${growthKiB} KiB while ${(flooded / 1024).toFixed(0)} KiB were flooded (bound ${boundKiB} KiB)`)
  assert.ok(peakGrowthKiB < boundKiB, `peak RSS grew by ${peakGrowthKiB} KiB while ${(flooded / 1024).toFixed(0)} KiB were flooded (bound ${boundKiB} KiB)`)

  // the stalled client was disconnected: reading again, it sees the frames
  // that were in the socket buffers, then 1013 or an abrupt end
  slow.ws.resume()
  const ending = await slow.waitClosed({ timeout: 30000 })
  assert.ok([1013, 1006].includes(ending.code), `the stalled reader was closed with 1013 (or dropped), got ${JSON.stringify(ending)}`)
  const received = slow.frames.filter(f => f.type === 'update').length
  assert.ok(received < count, `the stalled reader cannot have received all ${count} updates (got ${received})`)

  // writer and observer are untouched and still served both ways
  assert.deepEqual([writer.closeCodes, observer.closeCodes], [[], []])
  observer.doc.getText('text').insert(0, 'still served')
  await waitConverged([writer, observer], { types: { text: ['text'], map: [], array: [] } })
})

e2e('slow reader: a client that never reads is cut off once the bytes queued for it pass --send-queue-bytes', { timeout: 240000 }, async (t) => {
  // The frame bound (1,024 frames of 64 KiB: 64 MiB) is out of reach of this
  // flood; only the byte bound can cut the stalled reader off.
  const QUEUE_BYTES = 1024 * 1024
  const UPDATE_BYTES = 64 * 1024
  const FLOOD_BYTES = 24 * 1024 * 1024
  const server = await startWeft(t, {
    args: ['--send-queue-bytes', String(QUEUE_BYTES), '--max-updates-per-second', '0', '--max-message-bytes', String(4 * 1024 * 1024)]
  })
  const DOC = 'slow-reader-bytes'
  const writer = createClient(t, server, DOC, { name: 'writer' })
  const observer = createClient(t, server, DOC, { name: 'observer' })
  await waitSynced([writer, observer])
  await flood(writer, observer, { count: 32, bytes: UPDATE_BYTES, key: 'warmup' })
  const before = procMemory(server.pid)

  const slow = await stalledReader(t, server, DOC)
  const count = Math.ceil(FLOOD_BYTES / UPDATE_BYTES)
  const flooded = await flood(writer, observer, { count, bytes: UPDATE_BYTES })
  const after = procMemory(server.pid)
  const growthKiB = after.hwmKiB - before.rssKiB
  console.log(`[measure] slow reader, byte bound ${QUEUE_BYTES / 1024} KiB: peak RSS over baseline ${growthKiB} KiB, flooded ${(flooded / 1024).toFixed(0)} KiB`)
  assert.ok(growthKiB < flooded / 1024 / 4, `peak RSS grew by ${growthKiB} KiB while ${(flooded / 1024).toFixed(0)} KiB were flooded`)

  slow.ws.resume()
  const ending = await slow.waitClosed({ timeout: 30000 })
  assert.ok([1013, 1006].includes(ending.code), `the stalled reader was closed with 1013 (or dropped), got ${JSON.stringify(ending)}`)
  const received = slow.frames.filter(f => f.type === 'update').length
  assert.ok(received < count, `the stalled reader cannot have received all ${count} updates (got ${received})`)
  assert.deepEqual([writer.closeCodes, observer.closeCodes], [[], []])
  observer.doc.getText('text').insert(0, 'still served')
  await waitConverged([writer, observer], { types: { text: ['text'], map: [], array: [] } })
})

e2e('while draining (SIGTERM), an upgrade gets 503 with Retry-After; exit 0 within the grace', { timeout: 180000 }, async (t) => {
  const GRACE_MS = 8000
  const server = await startWeft(t, {
    args: ['--shutdown-grace', `${GRACE_MS}ms`, '--max-updates-per-second', '0', '--max-message-bytes', String(4 * 1024 * 1024)]
  })
  const DOC = 'draining'
  const writer = createClient(t, server, DOC, { name: 'writer' })
  const observer = createClient(t, server, DOC, { name: 'observer' })
  await waitSynced([writer, observer])
  // A stalled client whose socket buffers are full (far more than loopback
  // buffers hold, far less than its send queue) cannot take its close frame,
  // which holds the node in draining for a moment.
  const slow = await stalledReader(t, server, DOC)
  await flood(writer, observer, { count: 192, bytes: 64 * 1024 })

  const stopping = server.stop({ timeout: GRACE_MS + 5000 })
  // /readyz turns 503 when draining starts; poll it (bounded)
  let draining = null
  for (let i = 0; i < 400 && server.running; i++) {
    try {
      const res = await fetch(`${server.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 503) { draining = res; break }
    } catch { break }
    await sleep(5)
  }
  assert.ok(draining, 'observed /readyz 503 while draining')
  const res = await rawUpgrade(server, `/${DOC}`)
  assertRefusal(res, 503, { retryAfter: true, what: 'upgrade while draining' })
  assertRefusal(await rawUpgrade(server, '/another-doc'), 503, { retryAfter: true, what: 'upgrade of another doc while draining' })

  const { code, ms } = await stopping
  report('SIGTERM -> exit with a stalled reader', ms)
  assert.equal(code, 0)
  assert.ok(ms < GRACE_MS, `exited after ${ms.toFixed(0)} ms, within the ${GRACE_MS} ms grace`)
  await waitFor(() => writer.closeCodes.length > 0 && observer.closeCodes.length > 0, {
    on: [writer, observer], timeout: 5000, what: 'writer and observer to be closed'
  })
  assert.equal(writer.closeCodes[0], 1012)
  assert.equal(observer.closeCodes[0], 1012)
  slow.terminate()
})

e2e('SIGTERM: every session is closed with 1012 and the process exits 0 within --shutdown-grace', async (t) => {
  const GRACE_MS = 3000
  const server = await startWeft(t, { args: ['--shutdown-grace', `${GRACE_MS}ms`] })
  const clients = ['doc-1', 'doc-1', 'doc-2', 'doc-3'].map((doc, i) => createClient(t, server, `sigterm/${doc}`, { name: `c${i}` }))
  await waitSynced(clients)
  const raws = await openSessions(t, server, 'sigterm/doc-2', 2, 'raw')
  clients[0].doc.getText('text').insert(0, 'written just before SIGTERM')
  clients[2].doc.getArray('array').push(['x'])

  const { code, ms } = await server.stop({ timeout: GRACE_MS + 5000 })
  report(`SIGTERM -> exit with ${clients.length + raws.length} sessions`, ms)
  assert.equal(code, 0)
  assert.ok(ms < GRACE_MS, `exited after ${ms.toFixed(0)} ms, grace ${GRACE_MS} ms`)

  for (const r of raws) {
    const close = await within(r.waitClosed(), 5000, null)
    assert.equal(close?.code, 1012, `${r.name} close code`)
  }
  await waitFor(() => clients.every(c => c.closeCodes.length > 0), {
    on: clients, timeout: 5000, what: 'every client to see its close',
    detail: () => clients.map(c => `${c.name}: ${JSON.stringify(c.closeCodes)}`).join('\n')
  })
  for (const c of clients) assert.equal(c.closeCodes[0], 1012, `${c.name} close code`)
})

e2e('--max-updates-per-second: a flooding session is closed with 1008, reconnects, and every update arrives exactly once', async (t) => {
  const RATE = 20
  const server = await startWeft(t, { args: ['--max-updates-per-second', String(RATE)] })
  const DOC = 'update-flood'
  const flooder = createClient(t, server, DOC, { name: 'flooder' })
  const other = createClient(t, server, DOC, { name: 'other' })
  await waitSynced([flooder, other])

  // a paced writer stays under the rate and is never closed
  const calm = createClient(t, server, DOC, { name: 'calm' })
  await waitSynced(calm)

  // one burst far past the burst allowance of 2N, one update each
  const TOKENS = 300
  const arr = flooder.doc.getArray('array')
  for (let i = 0; i < TOKENS; i++) arr.push([`f-${i}`])
  for (let i = 0; i < 5; i++) {
    calm.doc.getArray('calm').push([`c-${i}`])
    await waitFor(() => other.doc.getArray('calm').length === i + 1, { on: other, what: `calm edit ${i}` })
  }

  await waitFor(() => flooder.closeCodes.length > 0, {
    on: flooder, timeout: 15000, what: 'the flooder to be closed',
    detail: () => `close codes: ${JSON.stringify(flooder.closeCodes)}`
  })
  const firstClose = flooder.closeCodes[0]

  // y-websocket reconnects and re-syncs: everything arrives, exactly once
  const started = now()
  await waitFor(() => other.doc.getArray('array').length >= TOKENS, {
    on: other, timeout: 30000, what: `the other client to have all ${TOKENS} tokens`,
    detail: () => `other has ${other.doc.getArray('array').length}; flooder close codes ${JSON.stringify(flooder.closeCodes)}, connected=${flooder.provider.wsconnected}`
  })
  report('flooded updates complete on a peer after the rate-limit close and reconnect', now() - started)
  await waitConverged([flooder, other, calm], { types: { text: [], map: [], array: ['array', 'calm'] } })
  const seen = new Map()
  for (const tok of other.doc.getArray('array').toJSON()) seen.set(tok, (seen.get(tok) || 0) + 1)
  const missing = []
  const dup = []
  for (let i = 0; i < TOKENS; i++) {
    const n = seen.get(`f-${i}`) || 0
    if (n === 0) missing.push(i)
    if (n > 1) dup.push(i)
  }
  assert.deepEqual(missing, [], 'no flooded update is missing')
  assert.deepEqual(dup, [], 'no flooded update is duplicated')
  assert.equal(seen.size, TOKENS)
  assert.deepEqual(other.doc.getArray('array').toJSON(), arr.toJSON(), 'same order as the flooder')
  assert.deepEqual(calm.closeCodes, [], 'the paced writer was not closed')
  assert.deepEqual(other.closeCodes, [], 'the reader was not closed')

  // a fresh client gets all of it from the server
  const fresh = createClient(t, server, DOC, { name: 'fresh' })
  await waitSynced(fresh)
  assert.equal(fresh.doc.getArray('array').length, TOKENS)

  // the close code the client saw (checked last, so that a wrong code does
  // not hide whether the data arrived)
  assert.equal(firstClose, 1008, `the flooding session was closed with 1008, got ${JSON.stringify(flooder.closeCodes)}`)
})
