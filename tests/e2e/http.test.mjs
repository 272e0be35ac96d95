// Plain HTTP endpoints next to the WebSocket endpoint.

import assert from 'node:assert/strict'
import { e2e, startWeft, rawUpgrade, assertRefusal } from '../lib/harness.mjs'

e2e('plain HTTP: /healthz, /readyz and a JSON 404', async (t) => {
  const server = await startWeft(t)
  const get = (p) => fetch(`${server.httpUrl}${p}`, { signal: AbortSignal.timeout(5000) })

  const health = await get('/healthz')
  await health.arrayBuffer()
  assert.equal(health.status, 200, '/healthz')

  const ready = await get('/readyz')
  await ready.arrayBuffer()
  assert.equal(ready.status, 200, '/readyz')

  for (const p of ['/nope', '/healthz/nope', '/api/unknown?x=1']) {
    const res = await get(p)
    const body = await res.text()
    assert.equal(res.status, 404, `${p} status (body: ${body})`)
    assert.match(res.headers.get('content-type') || '', /application\/json/, `${p} content-type`)
    let json
    assert.doesNotThrow(() => { json = JSON.parse(body) }, `${p} body is JSON: ${body}`)
    assert.equal(typeof json.error, 'object', `${p} has an "error" object: ${body}`)
    assert.equal(json.error.code, 404, `${p} error.code: ${body}`)
    assert.equal(typeof json.error.message, 'string', `${p} error.message: ${body}`)
    assert.ok(json.error.message.length > 0, `${p} error.message is not empty`)
    assert.ok('details' in json.error, `${p} error.details present: ${body}`)
  }
})

/** Assert the JSON refusal body of a plain-HTTP answer. */
async function assertJsonError (res, status, what) {
  const body = await res.text()
  assert.equal(res.status, status, `${what} status (body: ${body})`)
  assert.match(res.headers.get('content-type') || '', /application\/json/, `${what} content-type`)
  const json = JSON.parse(body)
  assert.equal(json.error.code, status, `${what} error.code`)
  assert.ok(json.error.message.length > 0, `${what} error.message`)
  assert.equal(typeof json.error.details, 'string', `${what} error.details`)
}

e2e('plain HTTP: 405 for a wrong method on a service route, 413 for a body larger than any route takes', async (t) => {
  const server = await startWeft(t)
  for (const [method, p] of [['POST', '/healthz'], ['DELETE', '/readyz'], ['PUT', '/healthz']]) {
    const res = await fetch(`${server.httpUrl}${p}`, { method, signal: AbortSignal.timeout(5000) })
    await assertJsonError(res, 405, `${method} ${p}`)
  }
  const big = Buffer.alloc(256 * 1024, 0x61)
  for (const p of ['/healthz', '/api/anything']) {
    const res = await fetch(`${server.httpUrl}${p}`, { method: 'POST', body: big, signal: AbortSignal.timeout(5000) })
    await assertJsonError(res, 413, `POST ${p} with 256 KiB`)
  }
  // An upgrade declaring a body is refused the same way, before the 101.
  const refused = await rawUpgrade(server, '/some-doc', { headers: { 'Content-Length': String(big.length) } })
  assertRefusal(refused, 413)
  // Small bodies are fine: the route decides (here 405).
  const small = await fetch(`${server.httpUrl}/healthz`, { method: 'POST', body: 'x', signal: AbortSignal.timeout(5000) })
  await assertJsonError(small, 405, 'POST /healthz with 1 byte')
})
