// History retention on one embedded node: with a short --history-retention,
// a document nobody has open (unloaded) gets its history older than the
// retention folded into a checkpoint by the node's compaction pass. The
// metrics move (a pass, a compacted document, fewer history bytes), the
// document and a named version read as before, and an instant before the
// retention is refused.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitSynced, signJwt, jwtClaims, sleep, metric
} from '../lib/harness.mjs'

const SECRET = 'compaction-e2e-secret-0123456789abcdef'
const alice = signJwt(jwtClaims({ sub: 'alice', docs: { 'hist/**': 'rw' } }), { secret: SECRET })
const RETENTION_MS = 3000

const enc = encodeURIComponent

function api (server, method, route, body) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: {
      authorization: `Bearer ${alice}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' })
    },
    signal: AbortSignal.timeout(15000)
  })
}

async function json (res, status) {
  const text = await res.text()
  assert.equal(res.status, status, text)
  return JSON.parse(text)
}

/** The `text` root over the API (`query` appended), or null on a 404. */
async function textAt (server, name, query = '') {
  const res = await api(server, 'GET', `/documents/${enc(name)}?text=text${query}`)
  if (res.status === 404 && !query) return null
  const body = await json(res, 200)
  return body.text.text
}

/** Polls `check` until it holds (metrics and HTTP reads have no events). */
async function until (check, what, timeout = 15000) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(50)
  }
}

e2e('history compaction: an unloaded document\'s history older than the retention folds into a checkpoint', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, {
    args: [
      '--auth-jwt-secret', SECRET,
      '--history-retention', `${RETENTION_MS}ms`,
      '--version-interval', '1s',
      '--history-compact-interval', '500ms',
      '--doc-unload-grace', '200ms'
    ]
  })
  const name = 'hist/compacted'
  const ws = createClient(t, server, name, { name: 'alice', params: { token: alice } })
  await waitSynced(ws)
  const text = ws.doc.getText('text')
  text.insert(0, 'hello')
  await until(async () => (await textAt(server, name)) === 'hello', 'the API to read the first edit')
  const named = await json(await api(server, 'POST', `/documents/${enc(name)}/versions`, { name: 'keep' }), 201)
  for (const word of [' brave', ' new', ' world']) text.insert(text.length, word)
  await until(async () => (await textAt(server, name)) === 'hello brave new world', 'the API to read every edit')
  const editedAt = Date.now()
  ws.destroy()
  // Unloaded: no session, past the unload grace (its snapshot written).
  await until(async () => (await metric(server, 'weft_documents_loaded')) === 0, 'the document to unload')

  // The passes before the retention passed measured the history whole.
  let peakBytes = 0
  await until(async () => {
    peakBytes = Math.max(peakBytes, await metric(server, 'weft_history_bytes'))
    return peakBytes > 0 && (await metric(server, 'weft_history_stored_versions')) >= 1
  }, 'a pass to measure the history')
  // Once the last edit is older than the retention, a pass folds it all.
  await sleep(Math.max(0, editedAt + RETENTION_MS - Date.now()))
  const runsBefore = await metric(server, 'weft_history_compaction_runs_total{result="ok"}')
  await until(async () => (await metric(server, 'weft_history_compaction_runs_total{result="ok"}')) >= runsBefore + 2,
    'two more passes, the last after the retention passed')
  assert.ok(await metric(server, 'weft_history_compacted_documents_total') >= 1)
  assert.ok(await metric(server, 'weft_history_bytes') < peakBytes, 'the history bytes shrank')
  assert.ok(await metric(server, 'weft_history_compaction_lag_seconds') <= 2, 'a pass succeeded just now')
  assert.equal(await metric(server, 'weft_documents_loaded'), 0, 'compacted without loading it')

  // The document reads as it was; the named version too; an instant
  // before the retention is refused.
  assert.equal(await textAt(server, name), 'hello brave new world')
  assert.equal(await textAt(server, name, `&version=${named.id}`), 'hello')
  assert.equal(await textAt(server, name, `&at=${enc(new Date().toISOString())}`), 'hello brave new world')
  const before = await api(server, 'GET', `/documents/${enc(name)}?text=text&at=${enc(new Date(editedAt - 1000).toISOString())}`)
  assert.equal(before.status, 400)
  assert.match((await before.json()).error.details, /retention/)
  const versions = await json(await api(server, 'GET', `/documents/${enc(name)}/versions`), 200)
  assert.ok(versions.versions.some(v => v.id === named.id && v.name === 'keep'), 'the named version is kept')
})
