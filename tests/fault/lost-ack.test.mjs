// A publish that fails for its node but reaches the log: the node's broker
// stops answering (SIGSTOP) while a client's update is in flight, the
// node's publish times out (the session closes with 1011 and the update is
// not applied there), the client leaves, and the broker comes back and
// appends the record it had already received. Every other node applies it;
// the publishing node must too, or its replica (and every client of it)
// lacks an edit the rest of the cluster has for as long as the document
// stays loaded.
//
// Whether the record reaches the log depends on how far the produce
// request got before the broker stopped, so an attempt whose record was
// lost for everyone is retried (at most ATTEMPTS times); the test checks
// the attempts whose record another node applied.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, sleep, KafkaCluster
} from '../lib/harness.mjs'

const ATTEMPTS = 6
const PUBLISH_TIMEOUT_MS = 800

e2e('lost acknowledgement: an update whose publish timed out for its node but reached the log is in that node\'s replica too', { timeout: 300000 }, async (t) => {
  const cluster = await KafkaCluster.start(t, { nodes: 1 })
  const topic = `lost-ack-${crypto.randomUUID()}`
  const [writerNode, readerNode] = await Promise.all(['node-w', 'node-r'].map(name => startWeft(t, {
    name,
    ready: { timeout: 60000 },
    args: [
      '--kafka-brokers', cluster.bootstrap,
      '--kafka-topic', topic,
      '--kafka-partitions', '4',
      '--node-id', name,
      '--kafka-publish-timeout', `${PUBLISH_TIMEOUT_MS}ms`
    ]
  })))
  let checked = 0
  for (let attempt = 0; attempt < ATTEMPTS && checked === 0; attempt++) {
    const doc = `lost-ack/${attempt}`
    const token = `in-flight-${attempt}`
    const reader = createClient(t, readerNode, doc, { name: `reader-${attempt}` })
    const writer = createClient(t, writerNode, doc, { name: `writer-${attempt}` })
    await waitSynced([reader, writer], { timeout: 30000 })
    writer.doc.getArray('array').push([`before-${attempt}`])
    await waitFor(() => reader.doc.getArray('array').length === 1, { on: reader, timeout: 20000, what: 'the first edit to cross' })

    await cluster.signal(1, 'SIGSTOP')
    writer.doc.getArray('array').push([token])
    // The frame is on its way to the node; the client leaves before its
    // session is closed, so it never re-sends the update.
    await sleep(100)
    writer.destroy()
    await sleep(PUBLISH_TIMEOUT_MS + 1500)
    await cluster.signal(1, 'SIGCONT')

    const landed = await waitFor(() => reader.doc.getArray('array').toJSON().includes(token), {
      on: reader, timeout: 15000, what: 'the in-flight edit at the other node'
    }).then(() => true, () => false)
    console.log(`[lost-ack] attempt ${attempt}: the record ${landed ? 'reached' : 'did not reach'} the log`)
    if (!landed) continue
    checked++
    const fresh = createClient(t, writerNode, doc, { name: `fresh-${attempt}` })
    await waitSynced(fresh, { timeout: 20000 })
    await waitFor(() => fresh.doc.getArray('array').toJSON().includes(token), {
      on: fresh,
      timeout: 15000,
      what: 'the writer node\'s replica to hold the edit every other node has',
      detail: () => `fresh client on the writer node: ${JSON.stringify(fresh.doc.getArray('array').toJSON())}; reader: ${JSON.stringify(reader.doc.getArray('array').toJSON())}`
    })
  }
  assert.ok(checked > 0, `in ${ATTEMPTS} attempts no in-flight record reached the log`)
})
