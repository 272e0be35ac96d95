// Hostile input against the binary: an oversized message and malformed
// frames close only the offending session with the close code that says
// why; the document stays as it was and the other sessions keep working.

import assert from 'node:assert/strict'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged,
  openRaw, syncFrame, fingerprint, stateVectorString, docContent, Y
} from '../lib/harness.mjs'

const MAX_MESSAGE_BYTES = 64 * 1024

/** Bytes that do not decode as a Yjs update (same as the gateway's tests). */
const NOT_AN_UPDATE = Uint8Array.from([0x05, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])

/** A well-formed update inserting `text` at the start of a fresh doc's "text". */
function updateWithText (text) {
  const doc = new Y.Doc()
  doc.getText('text').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

function unknownTypeFrame () {
  return Uint8Array.from([100, 3, 1, 2, 3]) // tag 100 (varuint), then a payload
}

const CASES = [
  { name: 'garbage bytes', code: 1002, send: (s) => s.send(Uint8Array.from([0xde, 0xad, 0xbe, 0xef])) },
  { name: 'a truncated sync message', code: 1002, send: (s) => s.send(syncFrame(2, updateWithText('cut off')).slice(0, 6)) },
  // eleven continuation bytes: a varint longer than any 64-bit number
  { name: 'an overlong varint', code: 1002, send: (s) => s.send(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])) },
  // sync Update declaring 255 payload bytes, carrying 1
  { name: 'a length prefix larger than the frame', code: 1002, send: (s) => s.send(Uint8Array.from([0x00, 0x02, 0xff, 0x01, 0x41])) },
  { name: 'a text frame', code: 1003, send: (s) => s.send('hello?', { binary: false }) },
  { name: 'an unknown message type', code: 1003, send: (s) => s.send(unknownTypeFrame()) },
  { name: 'a sync Update that is not a Yjs update', code: 1007, send: (s) => s.send(syncFrame(2, NOT_AN_UPDATE)) },
  { name: 'a SyncStep2 that is not a Yjs update', code: 1007, send: (s) => s.send(syncFrame(1, NOT_AN_UPDATE)) },
  {
    name: `a well-formed message over --max-message-bytes (${MAX_MESSAGE_BYTES})`,
    code: 1009,
    send: (s) => s.send(syncFrame(2, updateWithText('x'.repeat(MAX_MESSAGE_BYTES + 1024))))
  }
]

for (const c of CASES) {
  e2e(`${c.name} closes only that session with ${c.code}; the document is unchanged`, async (t) => {
    const server = await startWeft(t, { args: ['--max-message-bytes', String(MAX_MESSAGE_BYTES)] })
    const DOC = `input/${c.code}-${c.name.replace(/[^a-z0-9]+/gi, '-')}`
    const writer = createClient(t, server, DOC, { name: 'writer' })
    const observer = createClient(t, server, DOC, { name: 'observer' })
    await waitSynced([writer, observer])
    writer.doc.getText('text').insert(0, 'before')
    writer.doc.getMap('map').set('k', 'v')
    await waitConverged([writer, observer])
    // the server has it: a probe client syncs the same state
    const probe = createClient(t, server, DOC, { name: 'probe' })
    await waitSynced(probe)
    await waitConverged([writer, probe])
    probe.destroy()
    const before = fingerprint(writer.doc)
    const beforeSv = stateVectorString(writer.doc)

    const offender = await openRaw(t, server, DOC, { name: 'offender' })
    await offender.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting' })
    c.send(offender)
    const close = await offender.waitClosed()
    assert.equal(close.code, c.code, `${c.name}: close code (reason ${JSON.stringify(close.reason)})`)

    // a fresh client sees the document as it was
    const fresh = createClient(t, server, DOC, { name: 'fresh' })
    await waitSynced(fresh)
    assert.equal(stateVectorString(fresh.doc), beforeSv, 'state vector after the bad frame')
    assert.equal(fingerprint(fresh.doc), before, 'content after the bad frame')
    assert.deepEqual(docContent(fresh.doc), docContent(writer.doc))

    // the others were not disturbed and are still served both ways
    assert.deepEqual([writer.closeCodes, observer.closeCodes], [[], []], 'writer and observer stayed connected')
    writer.doc.getText('text').insert(6, ' after')
    await waitConverged([writer, observer, fresh], { what: 'an edit after the bad frame to reach everybody' })
    fresh.doc.getArray('array').push(['from fresh'])
    await waitConverged([writer, observer, fresh])
    assert.equal(observer.doc.getText('text').toString(), 'before after')
    assert.deepEqual(writer.doc.getArray('array').toJSON(), ['from fresh'])
  })
}

e2e('a message just under --max-message-bytes is accepted', async (t) => {
  const server = await startWeft(t, { args: ['--max-message-bytes', String(MAX_MESSAGE_BYTES)] })
  const DOC = 'input/just-under'
  const observer = createClient(t, server, DOC, { name: 'observer' })
  await waitSynced(observer)
  const sender = await openRaw(t, server, DOC, { name: 'sender' })
  await sender.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting' })
  const text = 'y'.repeat(MAX_MESSAGE_BYTES - 1024)
  const frame = syncFrame(2, updateWithText(text))
  assert.ok(frame.length < MAX_MESSAGE_BYTES)
  sender.send(frame)
  await waitFor(() => observer.doc.getText('text').length === text.length, {
    on: observer, what: 'the observer to receive the large update'
  })
  assert.equal(sender.close, null, 'the sender is still connected')
})

e2e('after a bad frame the same client can reconnect and sync', async (t) => {
  const server = await startWeft(t)
  const DOC = 'input/reconnect'
  const a = createClient(t, server, DOC, { name: 'A' })
  await waitSynced(a)
  a.doc.getText('text').insert(0, 'kept')
  for (const bad of [Uint8Array.from([0xff]), syncFrame(2, NOT_AN_UPDATE), unknownTypeFrame()]) {
    const s = await openRaw(t, server, DOC, { name: 'bad' })
    await s.waitFrame(f => f.type === 'sync-step1', { what: 'the greeting' })
    s.send(bad)
    const close = await s.waitClosed()
    assert.ok([1002, 1003, 1007].includes(close.code), `closed with a protocol code, got ${close.code}`)
  }
  const b = createClient(t, server, DOC, { name: 'B' })
  await waitSynced(b)
  await waitConverged([a, b])
  assert.equal(b.doc.getText('text').toString(), 'kept')
  assert.deepEqual(a.closeCodes, [])
})
