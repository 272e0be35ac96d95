// Awareness (presence): relayed to the other sessions of a document, sent to
// newcomers on join, and removed when the owning session goes away.
//
// The awareness protocol itself times remote states out after 30 s; every
// wait here is far shorter, so a removal observed here came from the server
// (or, for a clean destroy(), from the leaving client's own farewell).

import assert from 'node:assert/strict'
import { e2e, startWeft, createClient, waitFor, waitSynced, now, report } from '../lib/harness.mjs'

const DOC = 'awareness-doc'

function userOf (observer, subject) {
  return observer.awareness.getStates().get(subject.doc.clientID)?.user
}

function describeStates (clients) {
  return () => clients.map(c =>
    `${c.name} sees: ${JSON.stringify([...c.awareness.getStates().entries()])}`
  ).join('\n')
}

e2e('awareness: local state reaches the others and is removed on destroy()', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, DOC, { name: 'A' })
  const b = createClient(t, server, DOC, { name: 'B' })
  const c = createClient(t, server, DOC, { name: 'C' })
  await waitSynced([a, b, c])

  const alice = { name: 'Alice', color: '#ff0000' }
  let started = now()
  a.awareness.setLocalStateField('user', alice)
  await waitFor(() => [b, c].every(o => userOf(o, a)?.name === 'Alice'), {
    on: [b, c], what: 'B and C to see A\'s user', detail: describeStates([b, c])
  })
  report('awareness relayed to 2 peers', now() - started)
  assert.deepEqual(userOf(b, a), alice)
  assert.deepEqual(userOf(c, a), alice)

  // an update of the field is relayed as well
  a.awareness.setLocalStateField('user', { ...alice, color: '#00ff00' })
  await waitFor(() => [b, c].every(o => userOf(o, a)?.color === '#00ff00'), {
    on: [b, c], what: 'B and C to see A\'s updated color', detail: describeStates([b, c])
  })

  // B's state reaches A and C too (all directions)
  b.awareness.setLocalStateField('user', { name: 'Bob' })
  await waitFor(() => [a, c].every(o => userOf(o, b)?.name === 'Bob'), {
    on: [a, c], what: 'A and C to see B\'s user', detail: describeStates([a, c])
  })

  // a newcomer receives the current states on join
  started = now()
  const d = createClient(t, server, DOC, { name: 'D' })
  await waitFor(() => userOf(d, a)?.name === 'Alice' && userOf(d, b)?.name === 'Bob', {
    on: d, what: 'newcomer D to receive A\'s and B\'s awareness', detail: describeStates([d])
  })
  report('newcomer received existing awareness', now() - started)

  // A leaves cleanly
  started = now()
  a.destroy()
  await waitFor(() => [b, c, d].every(o => !o.awareness.getStates().has(a.doc.clientID)), {
    on: [b, c, d], timeout: 10000, what: 'A\'s state to be removed from B, C and D', detail: describeStates([b, c, d])
  })
  report('awareness removal after destroy()', now() - started)
  // the others are unaffected
  assert.equal(userOf(c, b)?.name, 'Bob')
  assert.equal(userOf(d, b)?.name, 'Bob')
})

e2e('awareness: the server removes the state of a session that drops without a goodbye', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, DOC, { name: 'A' })
  const b = createClient(t, server, DOC, { name: 'B' })
  await waitSynced([a, b])

  a.awareness.setLocalStateField('user', { name: 'Alice' })
  await waitFor(() => userOf(b, a)?.name === 'Alice', {
    on: b, what: 'B to see A\'s user', detail: describeStates([b])
  })

  // Drop A's TCP connection without a close frame and without the
  // client-side "state = null" farewell that destroy() sends. Only the
  // server knows A is gone.
  a.provider.shouldConnect = false
  const ws = a.provider.ws
  assert.ok(ws, 'A has a socket')
  const started = now()
  ws.terminate()
  await waitFor(() => !b.awareness.getStates().has(a.doc.clientID), {
    on: b, timeout: 10000, what: 'server to remove A\'s awareness state after A\'s connection dropped', detail: describeStates([b])
  })
  report('awareness removal after abrupt disconnect', now() - started)
  assert.ok(b.awareness.getStates().has(b.doc.clientID), 'B keeps its own state')

  // a newcomer must not be told about the departed session either
  const c = createClient(t, server, DOC, { name: 'C' })
  await waitSynced(c)
  b.awareness.setLocalStateField('user', { name: 'Bob' })
  await waitFor(() => userOf(c, b)?.name === 'Bob', { on: c, what: 'C to see B', detail: describeStates([c]) })
  assert.ok(!c.awareness.getStates().has(a.doc.clientID), 'newcomer C does not see departed A')
})
