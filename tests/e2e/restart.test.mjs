// State survives a graceful restart (SIGTERM) and the unloading of an idle
// document from memory.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, sleep, now, report,
  docContent, stateVectorString
} from '../lib/harness.mjs'

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }

async function writeSomeState (clients) {
  const [a, b] = clients
  a.doc.getText('text').insert(0, 'survives a restart')
  b.doc.getMap('map').set('answer', 42)
  b.doc.getMap('map').set('obj', { list: ['x', 'y'], flag: true })
  for (let i = 0; i < 50; i++) {
    (i % 2 ? a : b).doc.getArray('array').push([`item-${i}`])
  }
  await waitConverged(clients, { types: TYPES, what: 'writers to converge' })
  // B prefixes A's text only once it has it, so the order is determined
  b.doc.getText('text').insert(0, '>> ')
  await waitConverged(clients, { types: TYPES, what: 'writers to converge before the restart' })
  assert.equal(a.doc.getText('text').toString(), '>> survives a restart')
}

e2e('state survives a graceful restart (SIGTERM)', async (t) => {
  const server = await startWeft(t, { args: ['--shutdown-grace', '25s'] })
  const doc = 'restart-graceful'
  const a = createClient(t, server, doc, { name: 'A' })
  const b = createClient(t, server, doc, { name: 'B' })
  // a second document, to check more than one doc is written out
  const other = createClient(t, server, 'restart-graceful-other', { name: 'other' })
  await waitSynced([a, b, other])
  await writeSomeState([a, b])
  other.doc.getText('text').insert(0, 'second document')

  // The writers' edits are acknowledged only in the sense that the other
  // writer saw them. Make sure 'other' reached the server too: a probe sees it.
  const probe = createClient(t, server, 'restart-graceful-other', { name: 'probe' })
  await waitConverged([other, probe], { what: 'probe to see the second document' })
  probe.destroy()

  const expected = docContent(a.doc, TYPES)
  const expectedSv = stateVectorString(a.doc)
  const expectedOther = other.doc.getText('text').toString()

  const { code, ms } = await server.stop({ timeout: 30000 })
  report('graceful shutdown (SIGTERM -> exit) with 3 live sessions', ms)
  assert.equal(code, 0)
  assert.ok(ms < 10000, `SIGTERM with idle sessions took ${ms.toFixed(0)} ms (expected well under the 25 s grace)`)

  // Sessions were closed with 1012 (service restart). Give the clients a
  // moment to notice the close; the server has exited, so it is already sent.
  await waitFor(() => [a, b, other].every(c => c.closeCodes.length > 0), {
    on: [a, b, other], timeout: 5000, what: 'clients to see their connection closed',
    detail: () => [a, b, other].map(c => `${c.name}: close codes ${JSON.stringify(c.closeCodes)}`).join('\n')
  })
  for (const c of [a, b, other]) {
    assert.equal(c.closeCodes[0], 1012, `${c.name} was closed with code ${c.closeCodes[0]}, expected 1012`)
  }

  // The old clients must not re-send their state after the restart, or they
  // would mask data the server lost.
  for (const c of [a, b, other]) c.destroy()

  const startMs = await server.restart()
  report('restart until /readyz 200', startMs)

  const started = now()
  const fresh = createClient(t, server, doc, { name: 'fresh' })
  await waitSynced(fresh)
  report('fresh client synced after restart', now() - started)
  assert.deepEqual(docContent(fresh.doc, TYPES), expected, 'content after restart')
  assert.equal(stateVectorString(fresh.doc), expectedSv, 'state vector after restart')

  const freshOther = createClient(t, server, 'restart-graceful-other', { name: 'fresh-other' })
  await waitSynced(freshOther)
  assert.equal(freshOther.doc.getText('text').toString(), expectedOther)

  // and the restarted server keeps working
  const g = createClient(t, server, doc, { name: 'G' })
  await waitSynced(g)
  fresh.doc.getText('text').insert(0, 'after restart: ')
  await waitConverged([fresh, g], { types: TYPES })
  assert.ok(g.doc.getText('text').toString().startsWith('after restart: >> survives a restart'))

  const second = await server.stop()
  assert.equal(second.code, 0)
})

e2e('a document unloaded from memory is reloaded from the store', async (t) => {
  const unloadGraceMs = 200
  const server = await startWeft(t, { args: ['--doc-unload-grace', `${unloadGraceMs}ms`] })
  const doc = 'unload-reload'
  const a = createClient(t, server, doc, { name: 'A' })
  const b = createClient(t, server, doc, { name: 'B' })
  await waitSynced([a, b])
  await writeSomeState([a, b])
  const expected = docContent(a.doc, TYPES)
  const expectedSv = stateVectorString(a.doc)
  a.destroy()
  b.destroy()

  // No session is left; after the grace period the server may drop the
  // document from memory. Give it several grace periods to do so.
  await sleep(unloadGraceMs * 5)

  const c = createClient(t, server, doc, { name: 'C' })
  await waitSynced(c)
  assert.deepEqual(docContent(c.doc, TYPES), expected, 'content after reload')
  assert.equal(stateVectorString(c.doc), expectedSv, 'state vector after reload')

  // edit, leave, wait, come back again: a second unload/reload cycle
  c.doc.getArray('array').push(['second-cycle'])
  const d = createClient(t, server, doc, { name: 'D' })
  await waitConverged([c, d], { types: TYPES })
  const expected2 = docContent(c.doc, TYPES)
  c.destroy()
  d.destroy()
  await sleep(unloadGraceMs * 5)
  const e = createClient(t, server, doc, { name: 'E' })
  await waitSynced(e)
  assert.deepEqual(docContent(e.doc, TYPES), expected2, 'content after second reload')
})
