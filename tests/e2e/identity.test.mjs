// Identity providers and permission services against the binary: a JWKS
// served over https by a local server with a test CA made here (openssl),
// key rotation mid-test, issuer and audience checks, custom claim names;
// a permission service that answers, slowly, wrongly or not at all (503 +
// Retry-After, never open); start-up failures that name the setting; and
// the cost per upgrade of each authentication mode.

import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import * as hocuspocus from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitSynced, waitConverged, rawUpgrade, assertRefusal,
  signJwt, WebSocket, WEFT_BIN, freePort, now, report, writeTempFile, Y
} from '../lib/harness.mjs'

const ISSUER = 'https://idp.test/realms/weft'
const AUDIENCE = 'weft'
const nowSecs = () => Math.floor(Date.now() / 1000)
const q = (token) => `?token=${encodeURIComponent(token)}`

/** A test CA and a server certificate for 127.0.0.1 it signed, in a temp dir. */
function testCa (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-e2e-ca-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = (name) => path.join(dir, name)
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' })
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'),
    '-days', '1', '-subj', '/CN=Weft test CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('server.key'), '-out', file('server.csr'),
    '-subj', '/CN=127.0.0.1')
  fs.writeFileSync(file('ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-out', file('server.pem'), '-days', '1', '-extfile', file('ext.cnf'))
  return { caFile: file('ca.pem'), key: fs.readFileSync(file('server.key')), cert: fs.readFileSync(file('server.pem')) }
}

/** An RS256 signing key with its public JWK under `kid`. */
function signingKey (kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
  return {
    kid,
    privateKey,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }),
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }
  }
}

/**
 * A JWKS endpoint over https: serves `keys` (changeable), counts fetches and
 * lets a test await the next ones.
 */
async function jwksServer (t, tls) {
  const state = { keys: [], fetches: 0, waiters: [] }
  const server = https.createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    state.fetches += 1
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ keys: state.keys.map(k => k.jwk) }))
    for (const w of state.waiters.filter(w => state.fetches >= w.count)) w.resolve()
    state.waiters = state.waiters.filter(w => state.fetches < w.count)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  state.url = `https://127.0.0.1:${server.address().port}/jwks`
  /** Resolves once `n` more fetches have been answered. */
  state.fetched = (n) => new Promise((resolve) => state.waiters.push({ count: state.fetches + n, resolve }))
  return state
}

function idpToken (key, { iss = ISSUER, aud = AUDIENCE, claims = {} } = {}) {
  const body = { sub: 'alice', exp: nowSecs() + 600, weft_docs: { 'idp/**': 'rw' }, ...claims }
  if (iss !== null) body.iss = iss
  if (aud !== null) body.aud = aud
  return signJwt(body, { alg: 'RS256', privateKey: key.privateKey, header: { kid: key.kid } })
}

function idpFlags (jwks, caFile, refresh = '1s') {
  return ['--auth-jwks-url', jwks.url, '--auth-jwks-ca', caFile, '--auth-jwks-refresh', refresh,
    '--auth-issuer', ISSUER, '--auth-audience', AUDIENCE, '--auth-audience', 'another-app',
    '--auth-docs-claim', 'weft_docs', '--auth-admin-claim', 'weft_admin']
}

/** A Hocuspocus provider on its own socket; resolves with its auth outcome. */
function hocusAuth (t, server, name, token) {
  const socket = new hocuspocus.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: WebSocket })
  t.after(() => socket.destroy())
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no auth outcome for ${name} within 10 s`)), 10000)
    const provider = new hocuspocus.HocuspocusProvider({
      websocketProvider: socket,
      name,
      document: new Y.Doc(),
      token,
      onAuthenticated: ({ scope }) => { clearTimeout(timer); resolve({ ok: true, scope }) },
      onAuthenticationFailed: ({ reason }) => { clearTimeout(timer); resolve({ ok: false, reason }) }
    })
    provider.attach()
    t.after(() => provider.destroy())
  })
}

e2e('JWKS over https (test CA): issuer, audience, custom claims, y-websocket and Hocuspocus, key rotation', async (t) => {
  const tls = testCa(t)
  const jwks = await jwksServer(t, tls)
  const one = signingKey('key-1')
  const two = signingKey('key-2')
  jwks.keys = [one]
  const server = await startWeft(t, { args: idpFlags(jwks, tls.caFile) })

  // A good token: two y-websocket clients edit together.
  const good = idpToken(one)
  const a = createClient(t, server, 'idp/notes', { params: { token: good } })
  const b = createClient(t, server, 'idp/notes', { params: { token: good } })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'signed by the provider')
  await waitConverged([a, b])

  // Issuer and audience are checked; `aud` may be any configured one.
  assert.equal((await rawUpgrade(server, `/idp/x${q(idpToken(one, { aud: 'another-app' }))}`)).status, 101)
  assert.equal((await rawUpgrade(server, `/idp/x${q(idpToken(one, { aud: ['x', AUDIENCE] }))}`)).status, 101)
  assertRefusal(await rawUpgrade(server, `/idp/x${q(idpToken(one, { iss: 'https://evil.test' }))}`), 401)
  assertRefusal(await rawUpgrade(server, `/idp/x${q(idpToken(one, { iss: null }))}`), 401)
  assertRefusal(await rawUpgrade(server, `/idp/x${q(idpToken(one, { aud: 'someone-else' }))}`), 401)
  assertRefusal(await rawUpgrade(server, `/idp/x${q(idpToken(one, { aud: null }))}`), 401)

  // Grants live under --auth-docs-claim: the default name grants nothing.
  const defaultNames = idpToken(one, { claims: { weft_docs: undefined, docs: { 'idp/**': 'rw' } } })
  assertRefusal(await rawUpgrade(server, `/idp/x${q(defaultNames)}`), 403)
  const admin = idpToken(one, { claims: { weft_docs: {}, weft_admin: true } })
  assert.equal((await rawUpgrade(server, `/anything${q(admin)}`)).status, 101, 'the admin claim grants everything')
  const readOnly = idpToken(one, { claims: { weft_docs: { 'idp/**': 'r' } } })
  assert.equal((await rawUpgrade(server, `/idp/x${q(readOnly)}`)).status, 101)

  // Hocuspocus: the same checks per document.
  assert.deepEqual(await hocusAuth(t, server, 'idp/hocus', good), { ok: true, scope: 'read-write' })
  const denied = await hocusAuth(t, server, 'idp/hocus', idpToken(one, { iss: 'https://evil.test' }))
  assert.equal(denied.ok, false)

  // Rotation: the provider adds key-2; a token naming it is accepted at once
  // (an unknown kid fetches the set again).
  jwks.keys = [one, two]
  assert.equal((await rawUpgrade(server, `/idp/x${q(idpToken(two))}`)).status, 101, 'the new kid is accepted')
  // The provider drops key-1: once a refresh has been answered (and the
  // one after it started, so the first was applied), key-1's tokens fail.
  jwks.keys = [two]
  await jwks.fetched(2)
  assertRefusal(await rawUpgrade(server, `/idp/x${q(good)}`), 401)
  assert.equal((await rawUpgrade(server, `/idp/x${q(idpToken(two))}`)).status, 101)
  // Open sessions are not cut by the rotation (their tokens were checked
  // at the upgrade).
  b.doc.getText('text').insert(0, 'still editing: ')
  await waitConverged([a, b])

  const ready = await fetch(`${server.httpUrl}/readyz`)
  assert.equal(ready.status, 200)
})

/** Runs `weft serve ARGS` expecting it to refuse to start; resolves with its output. */
function refusesToStart (args) {
  return new Promise((resolve, reject) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-e2e-idp-'))
    const child = spawn(WEFT_BIN, ['serve', '--listen', '127.0.0.1:0', '--store', `sqlite://${dir}/weft.db`, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (c) => { output += c })
    child.stderr.on('data', (c) => { output += c })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`weft did not exit within 30 s:\n${output}`)) }, 30000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      fs.rmSync(dir, { recursive: true, force: true })
      if (code === 0) reject(new Error(`weft exited 0:\n${output}`))
      else resolve(output)
    })
  })
}

test('start-up refuses an unreachable provider, plain http off loopback, an untrusted CA and a bad CA file, naming the setting', async (t) => {
  const closed = await freePort()
  assert.match(await refusesToStart(['--auth-jwks-url', `https://127.0.0.1:${closed}/jwks`]), /--auth-jwks-url/)
  assert.match(await refusesToStart(['--auth-jwks-url', 'http://192.0.2.1/jwks']), /--auth-jwks-url.*loopback/s)
  assert.match(await refusesToStart(['--auth-webhook-url', 'http://192.0.2.1/allow']), /--auth-webhook-url/)
  const tls = testCa(t)
  const jwks = await jwksServer(t, tls)
  jwks.keys = [signingKey('k')]
  // The system roots do not include the test CA.
  assert.match(await refusesToStart(['--auth-jwks-url', jwks.url]), /--auth-jwks-url/)
  const notPem = path.join(path.dirname(tls.caFile), 'not.pem')
  fs.writeFileSync(notPem, 'not a certificate')
  assert.match(await refusesToStart(['--auth-jwks-url', jwks.url, '--auth-jwks-ca', notPem]), /--auth-jwks-ca/)
  assert.match(await refusesToStart(['--auth-jwks-url', jwks.url, '--auth-jwt-secret', 'x'.repeat(32)]), /at most one/)
})

/**
 * A permission service on loopback whose answer depends on the document's
 * first path segment; records what it was asked.
 */
async function permissionService (t) {
  const state = { asked: [], hold: [] }
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => { body += c })
    req.on('end', () => {
      const ask = JSON.parse(body)
      state.asked.push(ask)
      const kind = ask.doc.split('/')[0]
      const answer = (status, json) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(json)) }
      if (ask.token !== 'good-token') return answer(200, { access: 'none' })
      switch (kind) {
        case 'rw': return answer(200, { access: 'rw', sub: 'alice', ttl_s: 60 })
        case 'nocache': return answer(200, { access: 'rw', sub: 'alice' })
        case 'r': return answer(200, { access: 'r', sub: 'alice', ttl_s: 60 })
        case 'none': return answer(200, { access: 'none', ttl_s: 60 })
        case 'wrong': return answer(200, { access: 'everything', sub: 'alice' })
        case 'error': return answer(500, { oops: true })
        case 'slow': state.hold.push(res); return undefined
        default: return answer(404, {})
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => { for (const res of state.hold) res.destroy(); server.close() })
  state.url = `http://127.0.0.1:${server.address().port}/decide`
  return state
}

e2e('a permission service decides; slow, failing or wrong answers are 503 + Retry-After, never open', async (t) => {
  const service = await permissionService(t)
  const server = await startWeft(t, { args: ['--auth-webhook-url', service.url, '--auth-webhook-timeout', '500ms'] })
  const token = 'good-token'

  const a = createClient(t, server, 'rw/doc', { params: { token } })
  await waitSynced([a])
  const b = createClient(t, server, 'rw/doc', { params: { token } })
  await waitSynced([a, b])
  a.doc.getText('text').insert(0, 'allowed by the service')
  await waitConverged([a, b])
  const first = service.asked.find(ask => ask.doc === 'rw/doc')
  assert.equal(first.token, token)
  assert.equal(first.remote, '127.0.0.1')
  assert.equal(typeof first.headers, 'object')
  assert.equal(first.headers.upgrade, 'websocket', 'the request headers are passed on')
  const askedForRw = service.asked.filter(ask => ask.doc === 'rw/doc').length
  assert.equal(askedForRw, 1, 'the second client was answered from the cache (ttl_s)')

  const before = service.asked.length
  assert.equal((await rawUpgrade(server, `/nocache/doc${q(token)}`)).status, 101)
  assert.equal((await rawUpgrade(server, `/nocache/doc${q(token)}`)).status, 101)
  assert.equal(service.asked.length, before + 2, 'without ttl_s every upgrade asks')

  assert.equal((await rawUpgrade(server, `/r/doc${q(token)}`)).status, 101)
  assertRefusal(await rawUpgrade(server, `/none/doc${q(token)}`), 403)
  assertRefusal(await rawUpgrade(server, `/rw/doc${q('bad-token')}`), 403)
  for (const kind of ['slow', 'wrong', 'error']) {
    const started = now()
    const refused = await rawUpgrade(server, `/${kind}/doc${q(token)}`)
    assertRefusal(refused, 503, { retryAfter: true, what: `${kind} service` })
    if (kind === 'slow') assert.ok(now() - started < 3000, 'the timeout bounds the wait')
  }

  // Hocuspocus: the service is asked per document, with the upgrade's headers.
  assert.deepEqual(await hocusAuth(t, server, 'rw/hocus', token), { ok: true, scope: 'read-write' })
  assert.equal((await hocusAuth(t, server, 'slow/hocus', token)).ok, false)

  // REST: the document routes ask too.
  const get = (name, bearer) => fetch(`${server.httpUrl}/api/documents/${encodeURIComponent(name)}`,
    { headers: { authorization: `Bearer ${bearer}`, accept: 'application/json' } })
  assert.equal((await get('rw/doc', token)).status, 200)
  assert.equal((await get('none/doc', token)).status, 403)
  const slow = await get('slow/doc', token)
  assert.equal(slow.status, 503)
  assert.ok(Number(slow.headers.get('retry-after')) >= 1)
})

e2e('cost per upgrade of each authentication mode', { timeout: 180000 }, async (t) => {
  const N = Number(process.env.WEFT_AUTH_BENCH_UPGRADES || 200)
  const secret = 'measure-secret-0123456789-0123456789'
  const tls = testCa(t)
  const jwks = await jwksServer(t, tls)
  const key = signingKey('bench')
  jwks.keys = [key]
  const service = await permissionService(t)
  const modes = [
    { label: 'open', args: [], token: 'x' },
    { label: 'static HS256 key', args: ['--auth-jwt-secret', secret], token: signJwt({ sub: 'a', exp: nowSecs() + 600, docs: { '**': 'rw' } }, { secret }) },
    { label: 'static RS256 key', args: ['--auth-jwt-public-key', writeTempFile(t, 'bench.pub.pem', key.publicKeyPem)], token: signJwt({ sub: 'a', exp: nowSecs() + 600, docs: { '**': 'rw' } }, { alg: 'RS256', privateKey: key.privateKey }) },
    { label: 'JWKS (RS256)', args: idpFlags(jwks, tls.caFile, '5m'), token: idpToken(key, { claims: { weft_docs: { '**': 'rw' } } }) },
    { label: 'webhook, cached', args: ['--auth-webhook-url', service.url], token: 'good-token', doc: 'rw/bench' },
    { label: 'webhook, not cached', args: ['--auth-webhook-url', service.url], token: 'good-token', doc: 'nocache/bench' }
  ]
  for (const mode of modes) {
    const server = await startWeft(t, { args: [...mode.args, '--max-upgrades-per-ip-per-second', '100000'] })
    const target = `/${mode.doc ?? 'bench/doc'}${q(mode.token)}`
    for (let i = 0; i < 20; i++) assert.equal((await rawUpgrade(server, target)).status, 101)
    const times = []
    for (let i = 0; i < N; i++) {
      const started = now()
      const res = await rawUpgrade(server, target)
      times.push(now() - started)
      assert.equal(res.status, 101)
    }
    times.sort((x, y) => x - y)
    report(`upgrade, ${mode.label}, p50 of ${N}`, times[Math.floor(N / 2)])
    report(`upgrade, ${mode.label}, mean of ${N}`, times.reduce((s, x) => s + x, 0) / N)
    await server.stop()
  }
})
