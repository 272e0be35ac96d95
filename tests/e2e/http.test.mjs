// Plain HTTP endpoints next to the WebSocket endpoint.

import assert from 'node:assert/strict'
import { e2e, startWeft } from '../lib/harness.mjs'

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
