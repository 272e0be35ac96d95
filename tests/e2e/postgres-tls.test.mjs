// PostgreSQL over TLS: one server for this file (tests/lib/postgres-tls.sh:
// ssl=on with a test CA's certificate, pg_hba `hostssl` only). A node on
// `sslmode=verify-full&sslrootcert=CA` gets ready and keeps a document
// across a restart; a CA that did not sign the server's certificate fails
// start-up naming --store; a plain connection is refused by the server.

import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after } from 'node:test'

import { REPO_ROOT, WEFT_BIN, createClient, e2e, freePort, startWeft, waitFor, waitSynced } from '../lib/harness.mjs'

const SCRIPT = path.join(REPO_ROOT, 'tests', 'lib', 'postgres-tls.sh')
const HAS_SERVER = fs.existsSync('/usr/lib/postgresql') &&
  fs.readdirSync('/usr/lib/postgresql').some((version) => fs.existsSync(`/usr/lib/postgresql/${version}/bin/initdb`))
const skip = HAS_SERVER ? false : 'no PostgreSQL server binaries (make postgres-server installs them)'

let server = null
let serverDir = null
after(() => { if (serverDir) spawnSync(SCRIPT, ['down', serverDir], { timeout: 60000 }) })

/** The file's TLS-only server: { port, ca, otherCa }. */
function tlsPostgres () {
  if (server) return server
  serverDir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-pg-tls-'))
  const port = execFileSync(SCRIPT, ['up', serverDir], { encoding: 'utf8', timeout: 120000 }).trim()
  server = { port, ca: path.join(serverDir, 'tls', 'ca.pem'), otherCa: path.join(serverDir, 'tls', 'other-ca.pem') }
  return server
}

const storeUrl = (pg, query) => `postgres://postgres@127.0.0.1:${pg.port}/postgres?${query}`

function runWeft (args) {
  return new Promise((resolve, reject) => {
    const child = spawn(WEFT_BIN, ['serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk) => { output += chunk })
    child.stderr.on('data', (chunk) => { output += chunk })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`weft did not exit within 20 s; it should refuse to start:\n${output}`))
    }, 20000)
    child.on('error', reject)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, output }) })
  })
}

e2e('postgres tls: verify-full with the CA serves and stores a document', { skip }, async (t) => {
  const pg = tlsPostgres()
  const store = storeUrl(pg, `sslmode=verify-full&sslrootcert=${pg.ca}`)
  const node = await startWeft(t, { name: 'node-pg-tls', store })
  const doc = `pg-tls-${Date.now()}`
  const writer = createClient(t, node, doc, { name: 'writer' })
  await waitSynced([writer])
  writer.doc.getText('text').insert(0, 'stored over TLS')
  writer.provider.destroy()
  await node.stop()
  await node.restart()
  const reader = createClient(t, node, doc, { name: 'reader' })
  await waitFor(() => reader.doc.getText('text').toString() === 'stored over TLS', { on: reader, what: 'the stored text after a restart' })
})

e2e('postgres tls: a wrong CA fails at start-up naming --store; a plain connection is refused', { skip }, async () => {
  const pg = tlsPostgres()
  const wrong = await runWeft(['--listen', `127.0.0.1:${await freePort()}`, '--store', storeUrl(pg, `sslmode=verify-full&sslrootcert=${pg.otherCa}`)])
  assert.notEqual(wrong.code, 0, wrong.output)
  assert.match(wrong.output, /--store/, wrong.output)
  assert.match(wrong.output, /certificate/i, wrong.output)
  const plain = await runWeft(['--listen', `127.0.0.1:${await freePort()}`, '--store', storeUrl(pg, 'sslmode=disable')])
  assert.notEqual(plain.code, 0, plain.output)
  assert.match(plain.output, /no encryption/, 'the server accepts TLS only')
})
