// Crash safety: SIGKILL (and, for comparison, SIGTERM) in the middle of
// editing, restart on the same port and store. y-websocket clients
// reconnect by themselves and re-send what the server never got; nothing
// the server accepted may be lost.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, sleep, now, report
} from '../lib/harness.mjs'

const CLIENTS = Number(process.env.WEFT_E2E_KILL_CLIENTS || 3)
const INSERTS = Number(process.env.WEFT_E2E_KILL_INSERTS || 200)
const PACE_MS = 10
const TYPES = { text: ['text'], map: [], array: ['tokens'] }

/** Every token of every writer present exactly once, in the array and in the text. */
function checkTokens (client, expected) {
  const tokens = client.doc.getArray('tokens').toJSON()
  const words = client.doc.getText('text').toString().split(' ').filter(Boolean)
  for (const [label, list] of [['array', tokens], ['text', words]]) {
    const counts = new Map()
    for (const tok of list) counts.set(tok, (counts.get(tok) || 0) + 1)
    const missing = expected.filter(tok => !counts.has(tok))
    const duplicated = [...counts].filter(([, n]) => n > 1).map(([tok, n]) => `${tok}x${n}`)
    const unexpected = [...counts.keys()].filter(tok => !expected.includes(tok))
    const sample = (arr) => arr.length <= 12 ? arr : [...arr.slice(0, 12), `… ${arr.length - 12} more`]
    assert.deepEqual(
      { missing: missing.length, duplicated: duplicated.length, unexpected: unexpected.length },
      { missing: 0, duplicated: 0, unexpected: 0 },
      `${client.name}: tokens in ${label} (${list.length} entries, ${expected.length} expected); ` +
      `missing: ${JSON.stringify(sample(missing))} duplicated: ${JSON.stringify(sample(duplicated))} unexpected: ${JSON.stringify(sample(unexpected))}`
    )
  }
}

/**
 * Writers keep inserting unique tokens while the server is stopped twice
 * (`how` = 'SIGKILL' or 'SIGTERM') and restarted on the same port and store.
 */
async function crashWhileWriting (t, how) {
  const server = await startWeft(t)
  const docName = `${how.toLowerCase()}-mid-edit`
  const writers = Array.from({ length: CLIENTS }, (_, i) =>
    createClient(t, server, docName, { name: `w${i}`, maxBackoffTime: 200 }))
  await waitSynced(writers)

  const expected = []
  let issued = 0
  const killAt = [Math.floor(INSERTS * CLIENTS * 0.3), Math.floor(INSERTS * CLIENTS * 0.65)]
  const crashes = []

  // The crash/restart cycle runs concurrently with the writers.
  const chaos = (async () => {
    for (const at of killAt) {
      await waitFor(() => issued >= at, { on: writers, timeout: 60000, what: `${at} inserts before ${how}` })
      const killedAt = now()
      if (how === 'SIGKILL') {
        await server.kill()
      } else {
        const { code } = await server.stop({ timeout: 30000 })
        assert.equal(code, 0)
      }
      // keep the server down for a moment so that clients edit offline
      await sleep(300)
      const readyMs = await server.restart()
      const reconnectStarted = now()
      await waitSynced(writers, { timeout: 15000, what: `writers to reconnect and resync after ${how}` })
      crashes.push({ at, readyMs, downMs: now() - killedAt, reconnectMs: now() - reconnectStarted })
    }
  })()

  const writing = Promise.all(writers.map(async (w) => {
    const arr = w.doc.getArray('tokens')
    const text = w.doc.getText('text')
    for (let i = 0; i < INSERTS; i++) {
      const token = `${w.name}-${i}`
      expected.push(token)
      if (i % 2 === 0) {
        arr.push([token])
        text.insert(text.length, token + ' ')
      } else {
        w.doc.transact(() => {
          arr.insert(0, [token])
          text.insert(0, token + ' ')
        })
      }
      issued++
      await sleep(PACE_MS)
    }
  }))

  await Promise.all([writing, chaos])
  for (const c of crashes) {
    report(`${how} after ${c.at} inserts: restart ready`, c.readyMs)
    report(`${how} after ${c.at} inserts: writers resynced after restart became ready`, c.reconnectMs)
    report(`${how} after ${c.at} inserts: stop until all writers resynced (incl. 300 ms down)`, c.downMs)
  }
  assert.equal(crashes.length, killAt.length)

  const ms = await waitConverged(writers, { types: TYPES, timeout: 20000, what: `writers to converge after ${how} restarts` })
  report(`${how}: ${CLIENTS} writers converged after their last insert`, ms)
  assert.equal(expected.length, CLIENTS * INSERTS)
  for (const w of writers) checkTokens(w, expected)

  // a late joiner, while the writers are still connected
  const late = createClient(t, server, docName, { name: 'late' })
  await waitSynced(late)
  await waitConverged([...writers, late], { types: TYPES, what: 'late joiner to match the writers' })
  checkTokens(late, expected)

  // Without any client left to re-send anything: crash once more and read
  // the document back from the store alone.
  for (const c of [...writers, late]) c.destroy()
  await server.kill()
  await server.restart()
  const fresh = createClient(t, server, docName, { name: 'fresh-after-final-crash' })
  await waitSynced(fresh)
  checkTokens(fresh, expected)
}

e2e(`SIGKILL mid-edit: ${CLIENTS} clients x ${INSERTS} inserts, nothing lost or duplicated`, { timeout: 180000 }, async (t) => {
  await crashWhileWriting(t, 'SIGKILL')
})

e2e(`SIGTERM mid-edit: ${CLIENTS} clients x ${INSERTS} inserts, nothing lost or duplicated`, { timeout: 180000 }, async (t) => {
  await crashWhileWriting(t, 'SIGTERM')
})

e2e('an update another client has seen survives SIGKILL with no client left to re-send it', async (t) => {
  const server = await startWeft(t)
  const docName = 'sigkill-acknowledged'
  const ROUNDS = 20
  for (let round = 0; round < ROUNDS; round++) {
    const a = createClient(t, server, docName, { name: `A${round}` })
    const b = createClient(t, server, docName, { name: `B${round}` })
    await waitSynced([a, b])
    const token = `round-${round}`
    a.doc.getArray('tokens').push([token])
    // the server broadcast it, so it accepted it: it must be durable now
    await waitFor(() => b.doc.getArray('tokens').toJSON().includes(token), {
      on: b, timeout: 5000, what: `B to receive ${token}`
    })
    await server.kill()
    a.destroy()
    b.destroy()
    await server.restart()
  }
  const fresh = createClient(t, server, docName, { name: 'fresh' })
  await waitSynced(fresh)
  const got = fresh.doc.getArray('tokens').toJSON()
  assert.deepEqual(got, Array.from({ length: ROUNDS }, (_, i) => `round-${i}`))
})
