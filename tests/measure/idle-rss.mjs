#!/usr/bin/env node
// Memory cost of an idle, synced WebSocket session in Weft.
//
// Starts the server on a free loopback port with a fresh store, opens one
// session per document and writes a small amount of content (the baseline),
// then opens N more raw `ws` connections spread over the documents. Each
// connection speaks the y-websocket sync protocol directly (y-protocols +
// lib0, no provider): it sends SyncStep1, answers the server's SyncStep1 with
// its SyncStep2 and waits for the server's SyncStep2. The server's VmRSS
// (from /proc/<pid>/status) is read before and after, and the difference per
// connection is printed.
//
// Usage: node measure/idle-rss.mjs [--connections N] [--docs D] [--settle-ms MS]
//        env twins: WEFT_RSS_CONNECTIONS, WEFT_RSS_DOCS, WEFT_RSS_SETTLE_MS
//        WEFT_BIN selects the binary (default <repo>/target/debug/weft).
//
// Only 127.0.0.1 is contacted; the whole run is bounded by --time-limit-s.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { WeftServer, WEFT_BIN, freePort, sleep, now } from '../lib/harness.mjs'

function option (flag, envName, fallback) {
  const i = process.argv.indexOf(flag)
  if (i >= 0 && process.argv[i + 1] !== undefined) return Number(process.argv[i + 1])
  if (process.env[envName]) return Number(process.env[envName])
  return fallback
}

const CONNECTIONS = option('--connections', 'WEFT_RSS_CONNECTIONS', 1000)
const DOCS = option('--docs', 'WEFT_RSS_DOCS', 10)
const SETTLE_MS = option('--settle-ms', 'WEFT_RSS_SETTLE_MS', 2000)
const PARALLEL = option('--parallel', 'WEFT_RSS_PARALLEL', 50)
const TIME_LIMIT_S = option('--time-limit-s', 'WEFT_RSS_TIME_LIMIT_S', 180)
const SEED_CHARS = option('--seed-chars', 'WEFT_RSS_SEED_CHARS', 1000)

const MSG_SYNC = 0

function frame (write) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  write(enc)
  return encoding.toUint8Array(enc)
}

function readRss (pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => Number((status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm')) || [])[1])
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM'), threads: Number((status.match(/^Threads:\s+(\d+)/m) || [])[1]) }
}

/**
 * Open one raw session on `docName` and resolve once it is synced: the
 * server's SyncStep2 (answer to our SyncStep1) has been applied. The local
 * Y.Doc is dropped afterwards; the socket stays open and idle.
 */
function openSyncedSession (baseUrl, docName, { timeout = 15000, seedText = null } = {}) {
  return new Promise((resolve, reject) => {
    const doc = new Y.Doc()
    const ws = new WebSocket(`${baseUrl}/${encodeURIComponent(docName)}`)
    ws.binaryType = 'arraybuffer'
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`session on ${docName} not synced within ${timeout} ms`)) }, timeout)
    ws.on('error', (err) => { clearTimeout(timer); reject(err) })
    ws.on('open', () => {
      ws.send(frame(enc => syncProtocol.writeSyncStep1(enc, doc)))
      if (seedText !== null) {
        const update = (() => {
          const seedDoc = new Y.Doc()
          seedDoc.getText('text').insert(0, seedText)
          return Y.encodeStateAsUpdate(seedDoc)
        })()
        ws.send(frame(enc => syncProtocol.writeUpdate(enc, update)))
      }
    })
    ws.on('message', (data) => {
      const decoder = decoding.createDecoder(new Uint8Array(data))
      if (decoding.readVarUint(decoder) !== MSG_SYNC) return // awareness etc.
      const reply = encoding.createEncoder()
      encoding.writeVarUint(reply, MSG_SYNC)
      const type = syncProtocol.readSyncMessage(decoder, reply, doc, null)
      if (type === syncProtocol.messageYjsSyncStep1 && encoding.length(reply) > 1) {
        ws.send(encoding.toUint8Array(reply)) // our SyncStep2
      } else if (type === syncProtocol.messageYjsSyncStep2) {
        clearTimeout(timer)
        doc.destroy()
        ws.removeAllListeners('message')
        ws.on('error', () => {})
        resolve(ws)
      }
    })
  })
}

async function main () {
  const deadline = now() + TIME_LIMIT_S * 1000
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-rss-'))
  const port = await freePort()
  const server = new WeftServer({
    port,
    storeDir: path.join(tmp, 'store'),
    name: 'weft',
    // every measurement connection comes from 127.0.0.1: lift the per-address limits
    args: ['--max-connections-per-ip', '1000000', '--max-upgrades-per-ip-per-second', '1000000'],
    env: { RUST_LOG: process.env.RUST_LOG || 'weft=warn' } })
  const sockets = []
  let ok = false
  try {
    await server.start()
    const pid = server.pid
    await sleep(SETTLE_MS)
    const atReady = readRss(pid)

    // Baseline: every document loaded and holding some content, one session each.
    const docNames = Array.from({ length: DOCS }, (_, i) => `rss/doc-${i}`)
    const seedText = 'x'.repeat(SEED_CHARS)
    for (const name of docNames) {
      sockets.push(await openSyncedSession(server.wsUrl, name, { seedText }))
    }
    await sleep(SETTLE_MS)
    const base = readRss(pid)

    // N idle synced sessions, opened PARALLEL at a time.
    const started = now()
    let next = 0
    const worker = async () => {
      while (next < CONNECTIONS) {
        if (now() > deadline) throw new Error(`time limit of ${TIME_LIMIT_S} s reached after ${sockets.length - DOCS} connections`)
        const i = next++
        sockets.push(await openSyncedSession(server.wsUrl, docNames[i % DOCS]))
      }
    }
    await Promise.all(Array.from({ length: Math.min(PARALLEL, CONNECTIONS) }, worker))
    const openMs = now() - started
    await sleep(SETTLE_MS)
    const after = readRss(pid)
    const stillOpen = sockets.filter(ws => ws.readyState === WebSocket.OPEN).length

    const deltaKiB = after.rssKiB - base.rssKiB
    const perConn = deltaKiB / CONNECTIONS
    const result = {
      binary: WEFT_BIN,
      connections: CONNECTIONS,
      docs: DOCS,
      seedCharsPerDoc: SEED_CHARS,
      openedInMs: Math.round(openMs),
      stillOpen,
      rssAtReadyKiB: atReady.rssKiB,
      rssBaselineKiB: base.rssKiB,
      rssAfterKiB: after.rssKiB,
      hwmAfterKiB: after.hwmKiB,
      threads: after.threads,
      perIdleSyncedConnectionKiB: Number(perConn.toFixed(2))
    }
    console.log('Weft idle session memory')
    console.log(`  binary:            ${WEFT_BIN}`)
    console.log(`  sessions:          ${CONNECTIONS} idle, synced (SyncStep1 -> SyncStep2 both ways), over ${DOCS} docs of ${SEED_CHARS} chars each, + ${DOCS} baseline sessions`)
    console.log(`  opened in:         ${openMs.toFixed(0)} ms (${PARALLEL} in parallel); still open at measurement: ${stillOpen}/${sockets.length}`)
    console.log(`  settle before read: ${SETTLE_MS} ms; server threads: ${after.threads}; RUST_LOG=${server.env.RUST_LOG}`)
    console.log(`  VmRSS at ready:    ${atReady.rssKiB} KiB`)
    console.log(`  VmRSS baseline:    ${base.rssKiB} KiB (docs loaded, ${DOCS} sessions)`)
    console.log(`  VmRSS after:       ${after.rssKiB} KiB (VmHWM ${after.hwmKiB} KiB)`)
    console.log(`  => ${perConn.toFixed(2)} KiB RSS per idle synced connection`)
    console.log(JSON.stringify(result))
    if (stillOpen !== sockets.length) throw new Error(`${sockets.length - stillOpen} connections were closed before the measurement`)
    ok = true
  } finally {
    for (const ws of sockets) ws.terminate()
    if (server.running) {
      try {
        const { code, ms } = await server.stop({ timeout: 30000 })
        console.log(`  server stopped with SIGTERM: exit ${code} after ${ms.toFixed(0)} ms`)
      } catch (err) {
        ok = false
        console.error(`  server stop failed: ${err.message}`)
      }
    }
    if (!ok) server.dumpLogs('measurement failed')
    await server.cleanup({ removeStore: false })
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  process.exitCode = ok ? 0 : 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
