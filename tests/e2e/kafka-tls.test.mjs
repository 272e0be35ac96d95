// Weft over an Apache Kafka broker that wants SASL_SSL: one broker for this
// file (tests/kafka/kafka.sh up-sasl-ssl: SCRAM users written by the
// storage format, a test CA and broker certificate made with openssl), two
// nodes and a persistence worker with the --kafka-security-protocol flags,
// y-websocket clients on both nodes converging and the worker storing the
// document in PostgreSQL (WEFT_TEST_POSTGRES_URL). A wrong password and a
// CA that did not sign the broker's certificate stop `weft serve` and
// `weft persist` at start-up, naming the flag. The same broker's SSL
// listener requires a client certificate: a node with one serves, one
// without fails at start-up naming --kafka-ssl-certificate.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after } from 'node:test'

import { KAFKA_SH, WEFT_BIN, createClient, e2e, freePort, sleep, startWeft, waitConverged } from '../lib/harness.mjs'

const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
// The plain broker of `make test` says Kafka's jars and Java are here.
const KAFKA_READY = Boolean(process.env.WEFT_TEST_KAFKA)
if ((!KAFKA_READY || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const skip = KAFKA_READY && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)'

const USER = 'weft'
const PASSWORD = crypto.randomBytes(12).toString('hex')

/** The file's broker, started once on first use and stopped after the file. */
let broker = null
let brokerDir = null
after(() => {
  if (!brokerDir) return
  spawnSync(KAFKA_SH, ['down', brokerDir], { timeout: 60000 })
  fs.rmSync(brokerDir, { recursive: true, force: true })
})

function secureBroker () {
  if (broker) return broker
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-kafka-tls-'))
  brokerDir = dir
  broker = new Promise((resolve, reject) => {
    const child = spawn(KAFKA_SH, ['up-sasl-ssl', dir, USER, PASSWORD], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => { out += chunk })
    child.stderr.on('data', (chunk) => { err += chunk })
    const timer = setTimeout(() => child.kill('SIGKILL'), 240000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`kafka.sh up-sasl-ssl failed (${code}):\n${err}`))
      const passwordFile = path.join(dir, 'sasl-password')
      fs.writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 })
      const sslBootstrap = fs.readFileSync(path.join(dir, 'ssl_bootstrap'), 'utf8').trim()
      resolve({ dir, bootstrap: out.trim(), sslBootstrap, client: path.join(dir, 'tls', 'client'), ca: path.join(dir, 'tls', 'ca.pem'), otherCa: path.join(dir, 'tls', 'other-ca.pem'), passwordFile })
    })
  })
  return broker
}

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

/** The flags of a client of the SASL_SSL listener (password given apart). */
function secureArgs (b, topic, node, { ca = b.ca } = {}) {
  return [
    '--kafka-brokers', b.bootstrap, '--kafka-topic', topic, '--kafka-partitions', '2', '--node-id', node,
    '--kafka-security-protocol', 'sasl_ssl', '--kafka-sasl-mechanism', 'SCRAM-SHA-256',
    '--kafka-sasl-username', USER, '--kafka-ssl-ca', ca
  ]
}

e2e('kafka sasl_ssl: two nodes and a worker over SCRAM and TLS; edits converge and persist', { skip, timeout: 240000 }, async (t) => {
  const b = await secureBroker()
  const topic = `tls-${crypto.randomBytes(4).toString('hex')}`
  const store = freshDatabase(t)
  // Nodes read the password from a file, the worker from the variable.
  const nodes = []
  for (const index of [0, 1]) {
    nodes.push(await startWeft(t, {
      name: `node-${index}`,
      store,
      args: [...secureArgs(b, topic, `node-${index}`), '--kafka-sasl-password-file', b.passwordFile]
    }))
  }
  const worker = await startWeft(t, {
    name: 'worker',
    command: 'persist',
    store,
    env: { WEFT_KAFKA_SASL_PASSWORD: PASSWORD },
    args: [...secureArgs(b, topic, 'worker'), '--group', `group-${topic}`, '--snapshot-debounce', '200ms', '--snapshot-max-delay', '1s']
  })

  const doc = 'secure-doc'
  const a = createClient(t, nodes[0], doc, { name: 'on node-0' })
  const c = createClient(t, nodes[1], doc, { name: 'on node-1' })
  await waitConverged([a, c], { what: 'the clients to sync' })
  a.doc.getText('text').insert(0, 'over SASL_SSL from node-0;')
  c.doc.getText('text').insert(0, 'over SASL_SSL from node-1;')
  await waitConverged([a, c], { what: 'both edits on both nodes' })
  const text = a.doc.getText('text').toString()
  assert.ok(text.includes('from node-0;') && text.includes('from node-1;'), text)

  const deadline = Date.now() + 60000
  let rows = 0
  while (Date.now() < deadline) {
    rows = Number(psql(store, `SELECT count(*) FROM weft_topic_snapshots WHERE topic = '${topic}'`))
    if (rows === 1) break
    await sleep(200)
  }
  assert.equal(rows, 1, `the worker stored the document's snapshot:\n${worker.logs().slice(-2000)}`)
  assert.ok(!worker.logs().includes(PASSWORD) && !nodes[0].logs().includes(PASSWORD), 'the password is never logged')
})

/** Runs `weft COMMAND ARGS` and resolves with its exit code and output (bounded). */
function runWeft (command, args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(WEFT_BIN, [command, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk) => { output += chunk })
    child.stderr.on('data', (chunk) => { output += chunk })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`weft ${command} did not exit within 30 s; it should refuse to start:\n${output}`))
    }, 30000)
    child.on('error', reject)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, output }) })
  })
}

e2e('kafka sasl_ssl: a wrong password or a wrong CA fails at start-up naming the flag', { skip, timeout: 240000 }, async (t) => {
  const b = await secureBroker()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-kafka-tls-start-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const cases = [
    { what: 'a wrong password', extra: ['--kafka-sasl-password', 'not-the-password'], ca: b.ca, names: '--kafka-sasl-password' },
    { what: 'a CA that did not sign the broker', extra: ['--kafka-sasl-password', PASSWORD], ca: b.otherCa, names: '--kafka-ssl-ca' }
  ]
  for (const c of cases) {
    for (const command of ['serve', 'persist']) {
      const listen = ['--listen', `127.0.0.1:${await freePort()}`]
      const args = [...listen, '--store', `sqlite://${dir}/${command}.db`, ...secureArgs(b, 'tls-refused', `refused-${command}`, { ca: c.ca }), ...c.extra]
      const { code, output } = await runWeft(command, args)
      assert.notEqual(code, 0, `weft ${command} with ${c.what} must not start:\n${output}`)
      assert.ok(output.includes(c.names), `weft ${command} with ${c.what}: the message names ${c.names}:\n${output}`)
      assert.ok(!output.includes(PASSWORD), 'the password is never printed')
    }
  }
})

e2e('kafka ssl: a client certificate (mutual TLS) is presented; without one start-up fails naming the flag', { skip, timeout: 240000 }, async (t) => {
  const b = await secureBroker()
  const topic = `mtls-${crypto.randomBytes(4).toString('hex')}`
  const base = ['--kafka-brokers', b.sslBootstrap, '--kafka-topic', topic, '--kafka-partitions', '2', '--kafka-security-protocol', 'ssl', '--kafka-ssl-ca', b.ca]
  const node = await startWeft(t, {
    name: 'node-mtls',
    args: [...base, '--node-id', 'node-mtls', '--kafka-ssl-certificate', `${b.client}.pem`, '--kafka-ssl-key', `${b.client}.key`]
  })
  const a = createClient(t, node, 'mtls-doc', { name: 'a' })
  const c = createClient(t, node, 'mtls-doc', { name: 'c' })
  await waitConverged([a, c], { what: 'the clients to sync' })
  a.doc.getText('text').insert(0, 'over mutual TLS')
  await waitConverged([a, c], { what: 'the edit committed through the SSL listener' })
  assert.equal(c.doc.getText('text').toString(), 'over mutual TLS')

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-kafka-mtls-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const refused = await runWeft('serve', ['--listen', `127.0.0.1:${await freePort()}`, '--store', `sqlite://${dir}/w.db`, ...base, '--node-id', 'no-cert'])
  assert.notEqual(refused.code, 0, refused.output)
  assert.ok(refused.output.includes('--kafka-ssl-certificate'), refused.output)
})
