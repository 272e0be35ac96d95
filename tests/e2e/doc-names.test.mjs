// Document names: the URL path after the first '/' is URL-decoded and may
// contain '/'. Different names are different documents.

import assert from 'node:assert/strict'
import { e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, report } from '../lib/harness.mjs'

e2e('a doc name with "/" and escaped characters is its own document', async (t) => {
  const server = await startWeft(t)
  // y-websocket appends the room name to the url verbatim: ws://host/team-a/notes%20v1
  const a = createClient(t, server, 'team-a/notes%20v1', { name: 'A' })
  const b = createClient(t, server, 'team-a/notes%20v1', { name: 'B' })
  const parent = createClient(t, server, 'team-a', { name: 'parent' })
  const parentPeer = createClient(t, server, 'team-a', { name: 'parent-peer' })
  await waitSynced([a, b, parent, parentPeer])

  a.doc.getText('text').insert(0, 'notes v1 from A')
  b.doc.getMap('map').set('from', 'B')
  const ms = await waitConverged([a, b])
  report('two clients on "team-a/notes v1" converged', ms)
  assert.equal(b.doc.getText('text').toString(), 'notes v1 from A')
  assert.equal(a.doc.getMap('map').get('from'), 'B')

  // "team-a" is a different document: edits do not cross in either direction
  parent.doc.getText('text').insert(0, 'team-a only')
  await waitConverged([parent, parentPeer], { what: 'the two "team-a" clients to converge' })
  // a client that syncs now has the server's full state of each document
  const a2 = createClient(t, server, 'team-a/notes%20v1', { name: 'A2' })
  const p2 = createClient(t, server, 'team-a', { name: 'P2' })
  await waitSynced([a2, p2])
  assert.equal(a2.doc.getText('text').toString(), 'notes v1 from A')
  assert.equal(a2.doc.getMap('map').get('from'), 'B')
  assert.equal(p2.doc.getText('text').toString(), 'team-a only')
  assert.equal(p2.doc.getMap('map').size, 0)
  assert.equal(parent.doc.getText('text').toString(), 'team-a only')
  assert.equal(a.doc.getText('text').toString(), 'notes v1 from A')

  // The same name spelled with a literal space (the WebSocket client encodes
  // it as %20) reaches the same decoded document "team-a/notes v1".
  const spaced = createClient(t, server, 'team-a/notes v1', { name: 'spaced' })
  await waitSynced(spaced)
  assert.equal(spaced.doc.getText('text').toString(), 'notes v1 from A')
  spaced.doc.getText('text').insert(0, '> ')
  await waitFor(() => a.doc.getText('text').toString() === '> notes v1 from A', {
    on: a, what: 'A to see the edit of the literal-space client',
    detail: () => `A has ${JSON.stringify(a.doc.getText('text').toString())}`
  })
})

e2e('doc names with unicode and reserved characters round-trip', async (t) => {
  const server = await startWeft(t)
  const names = [
    encodeURIComponent('ünïcödé ✓'),
    'a/b/c/d',
    encodeURIComponent('question?hash#percent%'),
    'team-a%2Fnotes' // an escaped slash is still a valid name
  ]
  for (const name of names) {
    const x = createClient(t, server, name, { name: `x:${name}` })
    const y = createClient(t, server, name, { name: `y:${name}` })
    await waitSynced([x, y])
    x.doc.getText('text').insert(0, `content of ${name}`)
    await waitConverged([x, y], { what: `clients on ${name} to converge` })
  }
  // each name has exactly its own content
  for (const name of names) {
    const z = createClient(t, server, name, { name: `z:${name}` })
    await waitSynced(z)
    assert.equal(z.doc.getText('text').toString(), `content of ${name}`, `content of doc ${name}`)
  }
})

e2e('query parameters are not part of the doc name', async (t) => {
  const server = await startWeft(t)
  // y-websocket appends `params` as a query string: ws://host/with-params?token=abc&v=1
  const a = createClient(t, server, 'with-params', { name: 'A', params: { token: 'abc', v: '1' } })
  const b = createClient(t, server, 'with-params', { name: 'B' })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'same document')
  await waitConverged([a, b], { what: 'a client with query params and one without to converge' })
  assert.equal(b.doc.getText('text').toString(), 'same document')
})
