// Several documents, several clients each, random concurrent edits on
// Y.Text, Y.Map and Y.Array. All clients of a document must converge, and a
// client that joins afterwards must see the same state. Documents must not
// leak into each other.
//
// Replay a failing run with WEFT_E2E_SEED=<seed printed below>.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitSynced, waitConverged, sleep, now, report,
  prng, testSeed, docContent, stateVectorString, Y
} from '../lib/harness.mjs'

const DOCS = Number(process.env.WEFT_E2E_DOCS || 3)
const CLIENTS = Number(process.env.WEFT_E2E_CLIENTS || 4)
const OPS = Number(process.env.WEFT_E2E_OPS || 150)

/** One random edit. Tokens pushed to the 'log' array are never deleted. */
function randomEdit (rnd, client, opIndex) {
  const { doc } = client
  const text = doc.getText('text')
  const map = doc.getMap('map')
  const array = doc.getArray('array')
  const r = rnd.next()
  if (r < 0.35) {
    if (text.length > 0 && rnd.next() < 0.3) {
      const at = rnd.int(text.length)
      text.delete(at, Math.min(1 + rnd.int(4), text.length - at))
    } else {
      text.insert(rnd.int(text.length + 1), rnd.string(1 + rnd.int(6)))
    }
  } else if (r < 0.6) {
    const key = `k${rnd.int(12)}`
    const v = rnd.next()
    if (v < 0.15) map.delete(key)
    else if (v < 0.4) map.set(key, rnd.int(1000))
    else if (v < 0.6) map.set(key, { by: client.name, op: opIndex, list: [rnd.int(10), rnd.string(3)] })
    else if (v < 0.8) map.set(key, rnd.string(5))
    else {
      const nested = new Y.Map()
      map.set(key, nested)
      nested.set('by', client.name)
      nested.set('n', rnd.int(100))
    }
  } else if (r < 0.85) {
    if (array.length > 0 && rnd.next() < 0.3) {
      const at = rnd.int(array.length)
      array.delete(at, Math.min(1 + rnd.int(3), array.length - at))
    } else {
      const items = Array.from({ length: 1 + rnd.int(3) }, () => rnd.next() < 0.5 ? rnd.int(1000) : rnd.string(4))
      array.insert(rnd.int(array.length + 1), items)
    }
  } else if (r < 0.95) {
    doc.getArray('log').push([`${client.name}#${opIndex}`])
  } else {
    // several changes in one transaction
    doc.transact(() => {
      text.insert(0, '<')
      text.insert(text.length, '>')
      map.set('last', client.name)
      array.push([opIndex])
    })
  }
}

const TYPES = { text: ['text'], map: ['map'], array: ['array', 'log'] }

e2e(`${DOCS} docs x ${CLIENTS} clients with random concurrent edits converge`, { timeout: 180000 }, async (t) => {
  const seed = testSeed()
  console.log(`[random-convergence] seed=${seed} docs=${DOCS} clients=${CLIENTS} ops/client=${OPS}`)
  const rnd = prng(seed)
  const server = await startWeft(t)

  const docs = []
  for (let d = 0; d < DOCS; d++) {
    const docName = `random-${seed}-${d}`
    const clients = []
    for (let c = 0; c < CLIENTS; c++) {
      clients.push(createClient(t, server, docName, { name: `d${d}c${c}` }))
    }
    docs.push({ docName, clients, expectedLog: [] })
  }
  const all = docs.flatMap(d => d.clients)
  await waitSynced(all, { timeout: 15000 })

  // Every client runs its own edit loop concurrently; small random pauses let
  // updates cross on the wire.
  const started = now()
  await Promise.all(docs.flatMap(d => d.clients.map(async (client, ci) => {
    const own = prng(seed ^ ((docs.indexOf(d) + 1) * 7919) ^ ((ci + 1) * 104729))
    for (let i = 0; i < OPS; i++) {
      const before = client.doc.getArray('log').length
      randomEdit(own, client, i)
      if (client.doc.getArray('log').length > before) d.expectedLog.push(`${client.name}#${i}`)
      if (own.next() < 0.3) await sleep(own.int(5))
      else if (own.next() < 0.5) await new Promise(resolve => setImmediate(resolve))
    }
  })))
  report(`random edits issued (${DOCS * CLIENTS * OPS} ops)`, now() - started)

  for (const d of docs) {
    const ms = await waitConverged(d.clients, { types: TYPES, timeout: 20000, what: `convergence of ${d.docName}` })
    report(`${d.docName}: ${CLIENTS} clients converged after last edit`, ms)
  }
  report(`all ${DOCS} docs converged (from first edit)`, now() - started)

  for (const d of docs) {
    const ref = d.clients[0].doc
    // every client contributed, so every client id appears in the state vector
    const sv = Y.decodeStateVector(Y.encodeStateVector(ref))
    for (const c of d.clients) {
      assert.ok(sv.has(c.doc.clientID), `${d.docName}: state vector lacks ${c.name}`)
    }
    // tokens in 'log' are never deleted: each present exactly once
    const log = ref.getArray('log').toJSON()
    assert.equal(log.length, d.expectedLog.length, `${d.docName}: log length`)
    assert.deepEqual([...log].sort(), [...d.expectedLog].sort(), `${d.docName}: log tokens`)
    // no edits from other documents leaked in
    for (const other of docs) {
      if (other === d) continue
      for (const c of other.clients) {
        assert.ok(!sv.has(c.doc.clientID), `${d.docName} contains updates of ${c.name} from ${other.docName}`)
      }
    }
  }

  // late joiners
  const lateStarted = now()
  const late = docs.map((d, i) => createClient(t, server, d.docName, { name: `late${i}` }))
  await waitSynced(late, { timeout: 15000 })
  report(`${DOCS} late joiners synced`, now() - lateStarted)
  for (let i = 0; i < docs.length; i++) {
    const d = docs[i]
    // synced means the server's full state arrived; it must equal the clients' state
    assert.equal(stateVectorString(late[i].doc), stateVectorString(d.clients[0].doc), `${d.docName}: late joiner state vector`)
    assert.deepEqual(docContent(late[i].doc, TYPES), docContent(d.clients[0].doc, TYPES), `${d.docName}: late joiner content`)
  }
})
