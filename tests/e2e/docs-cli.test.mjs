// `weft docs export | import | migrate` with unmodified y-websocket
// clients, a real Apache Kafka broker (WEFT_TEST_KAFKA) and a real
// PostgreSQL (WEFT_TEST_POSTGRES_URL, an admin URL: each test creates a
// database of its own).

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { e2e, startWeft, createClient, waitFor, waitSynced, sleep, Y, WEFT_BIN } from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const skip = BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

function psql (url, sql) {
  const result = spawnSync('psql', [url, '-qtAc', sql], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, `psql ${sql}: ${result.stderr}`)
  return result.stdout.trim()
}

function freshDatabase (t) {
  const name = `weft_e2e_${crypto.randomBytes(6).toString('hex')}`
  psql(POSTGRES, `CREATE DATABASE ${name}`)
  t.after(() => psql(POSTGRES, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(POSTGRES)
  url.pathname = `/${name}`
  return url.toString()
}

function scratch (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-docs-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Runs `weft docs ...`; stdout to `stdoutFile` if given. */
function weftDocs (args, { stdoutFile } = {}) {
  const out = stdoutFile ? fs.openSync(stdoutFile, 'w') : 'pipe'
  try {
    const result = spawnSync(WEFT_BIN, ['docs', ...args], {
      stdio: ['ignore', out, 'pipe'], encoding: 'utf8', timeout: 30000, env: { ...process.env, WEFT_LOG: 'warn' }
    })
    assert.equal(result.status, 0, `weft docs ${args[0]}: ${result.stderr}`)
    return result.stderr
  } finally {
    if (stdoutFile) fs.closeSync(out)
  }
}

function clusterArgs (topic, node) {
  return ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '4', '--node-id', node, '--kafka-fetch-wait-ms', '10']
}

const CONTENT = { 'docs/a': 'alpha text', 'docs/b': 'beta', 'docs/c ü': 'gamma with ü' }

/** One client per document types its content, and waits for the echo of a synced state. */
async function writeAll (t, server) {
  const writers = Object.keys(CONTENT).map(doc => createClient(t, server, doc, { name: doc }))
  await waitSynced(writers, { timeout: 20000 })
  for (const w of writers) w.doc.getText('text').insert(0, CONTENT[w.docName])
  return writers
}

/** Fresh clients on `server` see every document's content (`content`: name -> text). */
async function assertServes (t, server, content = CONTENT) {
  const readers = Object.keys(content).map(doc => createClient(t, server, doc, { name: `reader ${doc}` }))
  await waitSynced(readers, { timeout: 20000 })
  for (const r of readers) {
    await waitFor(() => r.doc.getText('text').toString() === content[r.docName], { on: [r], timeout: 15000, what: `${r.docName} content` })
  }
  for (const r of readers) r.destroy()
}

e2e('docs: a cluster exported (PostgreSQL snapshots of a topic) and imported into a fresh SQLite store serves the same documents on an embedded node', { skip, timeout: 60000 }, async (t) => {
  const store = freshDatabase(t)
  const topic = `docs-${crypto.randomUUID()}`
  const node = await startWeft(t, { name: 'node', store, args: clusterArgs(topic, 'node') })
  const worker = await startWeft(t, {
    name: 'worker', command: 'persist', store,
    args: [...clusterArgs(topic, 'worker'), '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s']
  })
  const writers = await writeAll(t, node)
  // Each writer's own update was acknowledged once a second client sees it.
  await assertServes(t, node)
  for (const w of writers) w.destroy()
  await waitForSnapshots(store, topic, 3)
  await worker.stop()
  await node.stop()

  const dir = scratch(t)
  const file = path.join(dir, 'cluster.weft-docs')
  const exported = weftDocs(['export', '--store', store, '--topic', topic], { stdoutFile: file })
  assert.match(exported, /exported 3 documents/)
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n')
  assert.equal(JSON.parse(lines[0]).format, 'weft-docs')
  assert.equal(JSON.parse(lines.at(-1)).documents, 3)

  const sqlite = `sqlite://${path.join(dir, 'imported', 'weft.db')}`
  fs.mkdirSync(path.join(dir, 'imported'))
  assert.match(weftDocs(['import', '--store', sqlite, '--input', file]), /imported 3 documents/)
  const embedded = await startWeft(t, { name: 'embedded', store: sqlite })
  await assertServes(t, embedded)
})

/** The text of `doc` in the weft-docs stream `file`. */
function exportedText (file, doc) {
  const line = fs.readFileSync(file, 'utf8').trim().split('\n').map(each => JSON.parse(each)).find(each => each.doc === doc)
  assert.ok(line, `${doc} is in ${path.basename(file)}`)
  const ydoc = new Y.Doc()
  Y.applyUpdate(ydoc, Buffer.from(line.state, 'base64'))
  return ydoc.getText('text').toString()
}

/** Waits until the worker stored `count` snapshots of `topic` (polled: the database emits no event). */
async function waitForSnapshots (store, topic, count) {
  let stored = 0
  for (let attempt = 0; attempt < 150 && stored < count; attempt++) {
    stored = Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`))
    if (stored < count) await sleep(100)
  }
  assert.equal(stored, count, `the worker stored ${count} snapshots`)
}

e2e('docs: a cluster export with --kafka-brokers includes the updates the worker never folded (worker SIGKILLed), and the imported embedded node serves them', { skip, timeout: 90000 }, async (t) => {
  const store = freshDatabase(t)
  const topic = `docs-tail-${crypto.randomUUID()}`
  const node = await startWeft(t, { name: 'node', store, args: clusterArgs(topic, 'node') })
  const worker = await startWeft(t, {
    name: 'worker', command: 'persist', store,
    args: [...clusterArgs(topic, 'worker'), '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s']
  })
  const writers = await writeAll(t, node)
  await assertServes(t, node)
  await waitForSnapshots(store, topic, 3)
  await worker.kill()

  // The tail: edits the worker never reads. One document gains text, one
  // is new (only in the topic, never snapshotted).
  const expected = { ...CONTENT, 'docs/a': 'alpha text, then the tail', 'docs/new': 'only in the topic' }
  const a = writers.find(w => w.docName === 'docs/a')
  a.doc.getText('text').insert(a.doc.getText('text').length, ', then the tail')
  const fresh = createClient(t, node, 'docs/new', { name: 'fresh writer' })
  await waitSynced([fresh], { timeout: 20000 })
  fresh.doc.getText('text').insert(0, expected['docs/new'])
  // Acknowledged by the topic once fresh readers on the node see them.
  await assertServes(t, node, expected)
  for (const w of [...writers, fresh]) w.destroy()
  assert.equal(Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`)), 3, 'no snapshot of the tail')
  await node.stop()

  const dir = scratch(t)
  const snapshotsOnly = path.join(dir, 'snapshots.weft-docs')
  const warned = weftDocs(['export', '--store', store, '--topic', topic], { stdoutFile: snapshotsOnly })
  assert.match(warned, /warning: .*pass --kafka-brokers/)
  assert.match(warned, /exported 3 documents/)
  // The store really lacks the tail: what the export is to make up for.
  assert.equal(exportedText(snapshotsOnly, 'docs/a'), CONTENT['docs/a'])

  const file = path.join(dir, 'cluster.weft-docs')
  const started = performance.now()
  const exported = weftDocs(['export', '--store', store, '--kafka-brokers', BROKER, '--kafka-topic', topic], { stdoutFile: file })
  console.log(`[measure] docs: cluster export with the topic's tail in ${(performance.now() - started).toFixed(0)} ms: ${exported.trim().split('\n').at(-1)}`)
  assert.doesNotMatch(exported, /warning/)
  assert.match(exported, /exported 4 documents/)
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map(line => JSON.parse(line))
  for (const doc of Object.keys(expected)) assert.equal(exportedText(file, doc), expected[doc], `${doc} in the export`)
  const newLine = lines.find(line => line.doc === 'docs/new')
  assert.equal(newLine.log, topic)
  assert.ok(Number.isInteger(newLine.position?.offset), 'a topic-only document carries the offset folded last')

  const sqlite = `sqlite://${path.join(dir, 'imported', 'weft.db')}`
  fs.mkdirSync(path.join(dir, 'imported'))
  assert.match(weftDocs(['import', '--store', sqlite, '--input', file]), /imported 4 documents/)
  const embedded = await startWeft(t, { name: 'embedded', store: sqlite })
  await assertServes(t, embedded, expected)
})

e2e('docs: an embedded node migrated into a cluster: a cluster node serves its documents', { skip, timeout: 60000 }, async (t) => {
  const embedded = await startWeft(t, { name: 'embedded' })
  const writers = await writeAll(t, embedded)
  await assertServes(t, embedded)
  for (const w of writers) w.destroy()
  await embedded.stop()

  const dir = scratch(t)
  const topic = `docs-migrate-${crypto.randomUUID()}`
  const migrated = weftDocs([
    'migrate', '--from', embedded.storeUrl, '--kafka-brokers', BROKER, '--kafka-topic', topic,
    '--kafka-partitions', '4', '--progress-file', path.join(dir, 'migrate.progress')
  ])
  assert.match(migrated, /migrated 3 documents/)
  assert.ok(!fs.existsSync(path.join(dir, 'migrate.progress')), 'a complete migration leaves no progress file')

  const store = freshDatabase(t)
  const node = await startWeft(t, { name: 'cluster-node', store, args: clusterArgs(topic, 'cluster-node') })
  await assertServes(t, node)
})

/**
 * A weft-docs stream written by this test from the documented format (not
 * by weft): `count` documents `bulk/NNNNN` holding `text N`.
 */
function writeStream (file, count) {
  const lines = []
  for (let i = 0; i < count; i++) {
    const doc = new Y.Doc()
    doc.getText('text').insert(0, `text ${i}`)
    lines.push(JSON.stringify({
      doc: `bulk/${String(i).padStart(5, '0')}`,
      state: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64'),
      state_vector: Buffer.from(Y.encodeStateVector(doc)).toString('base64'),
      log: 'embedded',
      position: null
    }) + '\n')
  }
  const body = lines.join('')
  const header = { format: 'weft-docs', version: 1, export_id: crypto.randomBytes(16).toString('hex'), log: 'embedded', documents: count, created_at_ms: Date.now() }
  const trailer = { trailer: true, documents: count, bytes: Buffer.byteLength(body), sha256: crypto.createHash('sha256').update(body).digest('hex') }
  fs.writeFileSync(file, JSON.stringify(header) + '\n' + body + JSON.stringify(trailer) + '\n')
}

e2e('docs: an import SIGKILLed midway resumes from its progress file, and the embedded node serves every document', { timeout: 60000 }, async (t) => {
  const dir = scratch(t)
  // Large enough that the import is still running when its first
  // progress is recorded (a few seconds of appends).
  const COUNT = 20000
  const file = path.join(dir, 'bulk.weft-docs')
  writeStream(file, COUNT)
  fs.mkdirSync(path.join(dir, 'store'))
  const sqlite = `sqlite://${path.join(dir, 'store', 'weft.db')}`
  const progressFile = `${file}.import-progress`

  const child = spawn(WEFT_BIN, ['docs', 'import', '--store', sqlite, '--input', file], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WEFT_LOG: 'warn' } })
  let exited = false
  const exit = new Promise(resolve => child.on('exit', (code, signal) => { exited = true; resolve({ code, signal }) }))
  // The importer writes its progress file every 64 documents and signals
  // nothing else: polled every 10 ms, at most 30 s.
  for (let attempt = 0; attempt < 3000 && !exited && !fs.existsSync(progressFile); attempt++) await sleep(10)
  assert.ok(!exited, 'the import was still running when its first progress was recorded')
  child.kill('SIGKILL')
  assert.equal((await exit).signal, 'SIGKILL')
  const done = JSON.parse(fs.readFileSync(progressFile, 'utf8')).documents
  assert.ok(done >= 64 && done < COUNT, `progress recorded ${done} documents`)

  const started = performance.now()
  const summary = weftDocs(['import', '--store', sqlite, '--input', file])
  console.log(`[measure] docs: import SIGKILLed after ${done} of ${COUNT} documents; the resumed run imported ${COUNT - done} in ${(performance.now() - started).toFixed(0)} ms`)
  assert.match(summary, new RegExp(`imported ${COUNT - done} documents.*resumed after ${done}`))
  assert.ok(!fs.existsSync(progressFile), 'a complete import removes its progress file')

  const embedded = await startWeft(t, { name: 'embedded', store: sqlite })
  const expected = {}
  for (const i of [0, done - 1, done, COUNT - 1]) expected[`bulk/${String(i).padStart(5, '0')}`] = `text ${i}`
  await assertServes(t, embedded, expected)
})
