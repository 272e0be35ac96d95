// Broadcast batching: a document with many sessions sends a stream of edits
// to each reader as merged updates, one frame per window, and every reader
// still ends with exactly the writer's text.

import assert from 'node:assert/strict'
import { e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, report, now, metric } from '../lib/harness.mjs'

const EDITS = 60
const READERS = 3

e2e('a busy document batches its broadcasts: fewer frames, same text everywhere', async (t) => {
  // Four sessions reach the threshold of three; a long window makes the
  // batching visible whatever the machine's speed.
  const server = await startWeft(t, { args: ['--broadcast-batch-window', '300ms', '--broadcast-batch-min-sessions', '3'] })
  const writer = createClient(t, server, 'batching/room', { name: 'writer' })
  const readers = Array.from({ length: READERS }, (_, i) => createClient(t, server, 'batching/room', { name: `reader-${i}` }))
  await waitSynced([writer, ...readers])

  const before = await metric(server, 'weft_messages_sent_total')
  const started = now()
  const text = writer.doc.getText('text')
  for (let i = 0; i < EDITS; i++) {
    text.insert(text.length, String.fromCharCode(97 + (i % 26))) // one update each
  }
  const expected = text.toString()
  for (const reader of readers) {
    await waitFor(() => reader.doc.getText('text').toString() === expected, {
      on: reader, what: 'the reader to hold every edit', detail: () => `has ${JSON.stringify(reader.doc.getText('text').toString())}`
    })
  }
  report(`${EDITS} edits reached ${READERS} batched readers`, now() - started)
  await waitConverged([writer, ...readers])
  const sent = (await metric(server, 'weft_messages_sent_total')) - before
  // One update frame per edit per reader would be EDITS * READERS (180);
  // batched, each reader gets the first edit at once, then one merged frame
  // per 300 ms window. The writer is sent nothing: no echo of its own edits.
  // (Presence frames of the clients' first announcements may fall in the
  // burst too: at most a dozen.)
  assert.ok(sent < EDITS, `frames sent during the burst: ${sent} (unbatched would be ${EDITS * READERS})`)
  assert.ok(sent >= READERS, `every reader got at least one frame: ${sent}`)
})
