// Plain HTTP endpoints next to the WebSocket endpoint.

import assert from 'node:assert/strict'
import { e2e, startWeft, rawUpgrade, assertRefusal, createClient, waitSynced, waitFor, freePort } from '../lib/harness.mjs'

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

/** Parse Prometheus/OpenMetrics text: every sample line must be well formed. */
function parseMetrics (text) {
  const samples = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/)
    assert.ok(match, `a well-formed sample line: ${JSON.stringify(line)}`)
    assert.ok(!Number.isNaN(Number(match[3])), `a numeric value: ${line}`)
    samples.set(match[1] + (match[2] || ''), Number(match[3]))
  }
  assert.match(text, /^# EOF$/m, 'the exposition ends with # EOF')
  return samples
}

e2e('GET /metrics: connections, upgrades by status, messages, commit latency, documents, in Prometheus text', async (t) => {
  const server = await startWeft(t)
  const a = createClient(t, server, 'metrics/doc', { name: 'a' })
  const b = createClient(t, server, 'metrics/doc', { name: 'b' })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'counted')
  await waitFor(() => b.doc.getText('text').toString() === 'counted', { on: b, what: 'the edit to cross' })
  const refused = await rawUpgrade(server, '/%ff')
  assert.equal(refused.status, 400)

  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  assert.equal(res.status, 200)
  const metrics = parseMetrics(await res.text())
  assert.equal(metrics.get('weft_connections'), 2)
  assert.equal(metrics.get('weft_documents_loaded'), 1)
  assert.ok(metrics.get('weft_upgrades_total{status="101"}') >= 2, 'accepted upgrades counted')
  assert.equal(metrics.get('weft_upgrades_total{status="400"}'), 1, 'the refused upgrade counted by status')
  assert.ok(metrics.get('weft_messages_received_total') > 0)
  assert.ok(metrics.get('weft_received_bytes_total') > 0)
  assert.ok(metrics.get('weft_messages_sent_total') > 0)
  assert.ok(metrics.get('weft_update_commit_seconds_count') >= 1, 'the edit\'s commit latency observed')
  // The weft_bus_* metrics are the Kafka bus's own: an embedded node has no
  // Kafka, so it has none of them (cluster.test.mjs reads them on cluster nodes).
  assert.ok(!metrics.has('weft_bus_records_malformed_total'), 'no Kafka bus metrics on an embedded node')
  assert.deepEqual([...metrics.keys()].filter((name) => name.startsWith('weft_bus_')), [])
  assert.ok(metrics.get('weft_publish_seconds_count') >= 1, 'the durable publish timed')
  assert.ok(metrics.get('weft_publish_batch_updates_sum') >= 1, 'updates per batch observed')
  assert.ok(metrics.get('weft_document_load_seconds_count') >= 1, 'the document load timed')
  assert.equal(metrics.get('weft_send_queue_overflows_total'), 0)
  assert.equal(metrics.get('weft_rate_limit_closes_total'), 0)
})

e2e('--metrics-listen serves /metrics on a listener of its own, and nothing else there', async (t) => {
  const port = await freePort()
  const server = await startWeft(t, { args: ['--metrics-listen', `127.0.0.1:${port}`] })
  const client = createClient(t, server, 'metrics/own', { name: 'a' })
  await waitSynced([client])
  const own = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
  assert.equal(own.status, 200)
  const metrics = parseMetrics(await own.text())
  assert.equal(metrics.get('weft_connections'), 1, 'the node\'s own metrics')
  const other = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) })
  assert.equal(other.status, 404)
  assert.equal((await other.json()).error.code, 404)
})

e2e('a session closed for its update rate is counted', async (t) => {
  const server = await startWeft(t, { args: ['--max-updates-per-second', '5'] })
  const writer = createClient(t, server, 'metrics/rate', { name: 'writer' })
  await waitSynced([writer])
  const text = writer.doc.getText('text')
  // Far more than 5 updates in one burst: the node closes the session (1008).
  for (let i = 0; i < 200 && !writer.closeCodes.includes(1008); i++) text.insert(0, 'x')
  await waitFor(() => writer.closeCodes.includes(1008), { on: writer, what: 'the 1008 close' })
  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  const metrics = parseMetrics(await res.text())
  assert.ok(metrics.get('weft_rate_limit_closes_total') >= 1)
  assert.ok(metrics.get('weft_session_closes_total{code="1008"}') >= 1)
})
