// Two real y-websocket clients on one document converge through Weft.

import assert from 'node:assert/strict'
import { e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, now, report } from '../lib/harness.mjs'

e2e('two providers on one doc converge (text edits both ways)', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, 'sync-two-way', { name: 'A' })
  const b = createClient(t, server, 'sync-two-way', { name: 'B' })
  await waitSynced([a, b])

  const ta = a.doc.getText('text')
  const tb = b.doc.getText('text')

  // A -> B
  let started = now()
  ta.insert(0, 'hello')
  await waitFor(() => tb.toString() === 'hello', {
    on: b, what: 'B to see A\'s "hello"', detail: () => `B has ${JSON.stringify(tb.toString())}`
  })
  report('A -> B single edit', now() - started)

  // B -> A
  started = now()
  tb.insert(tb.length, ' world')
  await waitFor(() => ta.toString() === 'hello world', {
    on: a, what: 'A to see B\'s " world"', detail: () => `A has ${JSON.stringify(ta.toString())}`
  })
  report('B -> A single edit', now() - started)

  // concurrent edits at the same position, both ways at once
  started = now()
  ta.insert(0, '[a]')
  tb.insert(0, '[b]')
  ta.delete(ta.length - 5, 5) // "world" (or part of it plus nothing else: A does not know "[b]" yet)
  tb.insert(tb.length, '!')
  const ms = await waitConverged([a, b])
  report('concurrent edits converged', ms)
  const text = ta.toString()
  assert.equal(tb.toString(), text)
  assert.ok(text.includes('[a]') && text.includes('[b]'), `both prefixes present in ${JSON.stringify(text)}`)
  assert.ok(text.endsWith('hello !'), `A's delete and B's append both applied: ${JSON.stringify(text)}`)
  assert.ok(!text.includes('world'))

  // a burst of small edits from both sides (typing)
  started = now()
  for (let i = 0; i < 100; i++) {
    ta.insert(ta.length, 'a')
    tb.insert(0, 'b')
  }
  const burstMs = await waitConverged([a, b])
  report('200 single-character edits converged (from last edit)', burstMs)
  report('200 single-character edits converged (from first edit)', now() - started)
  const final = ta.toString()
  assert.equal([...final].filter(ch => ch === 'a').length, 100 + 1 /* "[a]" */)
  assert.equal([...final].filter(ch => ch === 'b').length, 100 + 1 /* "[b]" */)
  assert.equal(tb.toString(), final)
})

e2e('a client that joins later receives the existing state', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, 'sync-late-joiner', { name: 'A' })
  await waitSynced(a)
  a.doc.getText('text').insert(0, 'written before B existed')
  a.doc.getMap('map').set('k', { nested: [1, 2, 3] })
  a.doc.getArray('array').push(['x', 'y'])

  // wait until the server has A's edits: a third client sees them
  const probe = createClient(t, server, 'sync-late-joiner', { name: 'probe' })
  await waitConverged([a, probe], { what: 'probe to receive A\'s edits' })
  probe.destroy()

  const started = now()
  const b = createClient(t, server, 'sync-late-joiner', { name: 'B' })
  await waitSynced(b)
  const ms = await waitConverged([a, b])
  report('late joiner synced', now() - started)
  report('late joiner converged after sync', ms)
  assert.equal(b.doc.getText('text').toString(), 'written before B existed')
  assert.deepEqual(b.doc.getMap('map').toJSON(), { k: { nested: [1, 2, 3] } })
  assert.deepEqual(b.doc.getArray('array').toJSON(), ['x', 'y'])
})

e2e('propagation latency of single edits and awareness changes (measured)', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, 'sync-latency', { name: 'A' })
  const b = createClient(t, server, 'sync-latency', { name: 'B' })
  await waitSynced([a, b])
  const ROUNDS = 50
  const LIMIT_MS = 1000 // generous: this guards against batching/stalls, not jitter
  const summary = (xs) => {
    const s = [...xs].sort((x, y) => x - y)
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
    return { p50: q(0.5), p90: q(0.9), max: s[s.length - 1], first: xs[0] }
  }

  const edit = []
  for (let i = 0; i < ROUNDS; i++) {
    const started = now()
    a.doc.getArray('seq').push([i])
    await waitFor(() => b.doc.getArray('seq').length === i + 1, { on: b, timeout: 5000, what: `B to receive edit ${i}` })
    edit.push(now() - started)
  }
  const aw = []
  for (let i = 0; i < ROUNDS; i++) {
    const started = now()
    b.awareness.setLocalStateField('cursor', i)
    await waitFor(() => a.awareness.getStates().get(b.doc.clientID)?.cursor === i, { on: a, timeout: 5000, what: `A to receive awareness ${i}` })
    aw.push(now() - started)
  }
  for (const [label, xs] of [['edit A -> B', edit], ['awareness B -> A', aw]]) {
    const s = summary(xs)
    console.log(`[measure] ${label} over ${ROUNDS} sequential rounds: first ${s.first.toFixed(1)} ms, p50 ${s.p50.toFixed(1)} ms, p90 ${s.p90.toFixed(1)} ms, max ${s.max.toFixed(1)} ms`)
    assert.ok(s.max < LIMIT_MS, `${label}: slowest round took ${s.max.toFixed(0)} ms`)
  }
  assert.deepEqual(b.doc.getArray('seq').toJSON(), Array.from({ length: ROUNDS }, (_, i) => i))
})

e2e('large updates and a large document reach other clients and late joiners', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, 'sync-large', { name: 'A' })
  const b = createClient(t, server, 'sync-large', { name: 'B' })
  await waitSynced([a, b])

  // one 1 MiB text insert (a single update message of about that size)
  const big = 'lorem ipsum dolor sit amet '.repeat(40000).slice(0, 1024 * 1024)
  let started = now()
  a.doc.getText('text').insert(0, big)
  await waitFor(() => b.doc.getText('text').length === big.length, {
    on: b, timeout: 15000, what: 'B to receive a 1 MiB insert', detail: () => `B has ${b.doc.getText('text').length} chars`
  })
  report('1 MiB insert propagated', now() - started)
  assert.equal(b.doc.getText('text').toString(), big)

  // many small items: the document's encoding grows large in structure too
  b.doc.transact(() => {
    const arr = b.doc.getArray('array')
    for (let i = 0; i < 20000; i++) arr.push([{ i, s: `item-${i}` }])
  })
  await waitConverged([a, b], { timeout: 15000, what: 'A to receive 20000 array items' })

  started = now()
  const late = createClient(t, server, 'sync-large', { name: 'late' })
  await waitSynced(late, { timeout: 15000 })
  report('late joiner synced a ~1.5 MiB document', now() - started)
  assert.equal(late.doc.getText('text').toString(), big)
  assert.equal(late.doc.getArray('array').length, 20000)
  assert.deepEqual(late.doc.getArray('array').get(19999), { i: 19999, s: 'item-19999' })
})
