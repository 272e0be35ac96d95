// wss:// and https:// served by Weft itself (--tls-cert, --tls-key): the
// unmodified y-websocket and Hocuspocus clients, each in a process that
// trusts the test CA through NODE_EXTRA_CA_CERTS, edit one document and
// see each other's edits; a client without the CA is refused by its own
// TLS check. The certificate reload with a session open is tested in
// crates/server/tests/tls.rs.

import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'

import { HOST, REPO_ROOT, WeftServer, e2e, freePort, sleep, now } from '../lib/harness.mjs'

const PEER = path.join(REPO_ROOT, 'tests', 'lib', 'wss-peer.mjs')
const MAKE_CA = path.join(REPO_ROOT, 'tests', 'lib', 'make-test-ca.sh')

/** A node serving TLS with a certificate from a fresh test CA. */
class TlsWeft extends WeftServer {
  get wsUrl () { return `wss://${HOST}:${this.port}` }
  get httpUrl () { return `https://${HOST}:${this.port}` }

  /** GET path over https, trusting only the test CA; resolves { status, body }. */
  get (pathname, { trustTestCa = true } = {}) {
    const ca = trustTestCa ? this.ca : undefined
    return new Promise((resolve, reject) => {
      const req = https.get(`${this.httpUrl}${pathname}`, { ca, timeout: 2000 }, (res) => {
        let body = ''
        res.on('data', (chunk) => { body += chunk })
        res.on('end', () => resolve({ status: res.statusCode, body }))
      })
      req.on('timeout', () => req.destroy(new Error('timed out')))
      req.on('error', reject)
    })
  }

  async waitReady ({ timeout = 15000, interval = 25 } = {}) {
    const started = now()
    let last = 'no answer yet'
    while (now() - started < timeout) {
      if (this.exitStatus !== null) throw new Error(`${this.name} exited before it was ready:\n${this.logs().slice(-4000)}`)
      try {
        const { status } = await this.get('/readyz')
        if (status === 200) return now() - started
        last = `HTTP ${status}`
      } catch (err) {
        last = err.code || err.message
      }
      await sleep(interval)
    }
    throw new Error(`${this.name} not ready within ${timeout} ms (last /readyz: ${last})`)
  }
}

async function startTlsWeft (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-tls-'))
  execFileSync(MAKE_CA, [dir])
  const server = new TlsWeft({
    port: await freePort(),
    storeDir: path.join(dir, 'store'),
    args: ['--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server.key')],
    name: 'weft-tls'
  })
  server.ca = fs.readFileSync(path.join(dir, 'ca.pem'))
  server.caFile = path.join(dir, 'ca.pem')
  server.dir = dir
  t.after(async () => {
    await server.cleanup({ removeStore: false })
    fs.rmSync(dir, { recursive: true, force: true })
  })
  await server.start()
  return server
}

/**
 * Starts a wss-peer.mjs process (ended after the test); resolves with the
 * text it printed once it saw what it waits for, or rejects when it exits
 * first.
 */
function runPeer (t, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PEER, ...args], {
      cwd: path.join(REPO_ROOT, 'tests'),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    t.after(() => child.kill('SIGKILL'))
    let output = ''
    child.stdout.on('data', (chunk) => {
      output += chunk
      const line = output.split('\n').find((candidate) => candidate.startsWith('{'))
      if (line) resolve(JSON.parse(line).text)
    })
    child.stderr.on('data', (chunk) => { output += chunk })
    child.on('error', reject)
    child.on('exit', (code) => reject(new Error(`${args[0]} over wss exited with ${code} before it saw the other client's edit:\n${output}`)))
  })
}

e2e('tls: y-websocket and Hocuspocus clients over wss:// edit one document', async (t) => {
  const server = await startTlsWeft(t)
  const health = await server.get('/healthz')
  assert.equal(health.status, 200, 'https /healthz')

  const env = { NODE_EXTRA_CA_CERTS: server.caFile }
  const room = `tls-${Date.now()}`
  const texts = await Promise.all([
    runPeer(t, ['ywebsocket', server.wsUrl, room, 'from y-websocket;', 'from hocuspocus;'], env),
    runPeer(t, ['hocuspocus', server.wsUrl, room, 'from hocuspocus;', 'from y-websocket;'], env)
  ])
  for (const text of texts) {
    assert.ok(text.includes('from y-websocket;') && text.includes('from hocuspocus;'), text)
  }
})

e2e('tls: a client that does not trust the CA does not connect; plain http gets no answer', async (t) => {
  const server = await startTlsWeft(t)
  await assert.rejects(server.get('/healthz', { trustTestCa: false }), /self.signed|unable to verify|certificate/i)
  const plain = await fetch(`http://${HOST}:${server.port}/healthz`, { signal: AbortSignal.timeout(3000) }).then(
    (res) => res.status,
    (err) => err.cause?.code || err.name
  )
  assert.notEqual(plain, 200, 'plain HTTP is not served on the TLS port')
})
