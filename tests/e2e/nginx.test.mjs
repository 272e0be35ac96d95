// nginx in front of a Weft cluster: the example configuration
// deploy/nginx/weft.conf, run as it is written except for its three lines
// marked `# WEFT:` (the two nodes' ports and nginx's own, all on 127.0.0.1),
// with Debian's nginx (`make nginx`; WEFT_NGINX names another binary) in
// front of two nodes over the real Kafka-API broker (WEFT_TEST_KAFKA).
//
// Which node served an upgrade is read from the nodes' own metrics
// (`weft_upgrades_total{status="101"}`), one upgrade at a time.

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, waitConverged, rawUpgrade, assertRefusal,
  signJwt, jwtClaims, freePort, within, sleep, now, report, metric, HOST, REPO_ROOT, Y, WebSocket
} from '../lib/harness.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const NGINX = findNginx()
if (!BROKER && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it')
}
if (!NGINX && process.env.CI) {
  throw new Error('no nginx binary: `make e2e` installs Debian\'s (make nginx), or set WEFT_NGINX')
}
const skip = !BROKER
  ? 'set WEFT_TEST_KAFKA=host:port (make test does)'
  : (!NGINX ? 'no nginx binary (make nginx installs it; WEFT_NGINX names another)' : false)

/** The example configuration under test. */
const EXAMPLE = path.join(REPO_ROOT, 'deploy', 'nginx', 'weft.conf')
const SECRET = crypto.randomBytes(32).toString('hex')
/** Document names tried, at most, to find one that hashes to a given node. */
const MAX_CANDIDATES = 32

function findNginx () {
  if (process.env.WEFT_NGINX) return process.env.WEFT_NGINX
  const dirs = [...(process.env.PATH || '').split(':'), '/usr/sbin']
  return dirs.map(dir => path.join(dir, 'nginx')).find(file => fs.existsSync(file)) || null
}

/** A token of `user` for every document. */
const tokenOf = (user, docs = { '**': 'rw' }) => signJwt(jwtClaims({ sub: user, docs }), { secret: SECRET })

/**
 * deploy/nginx/weft.conf with its `# WEFT:` lines pointed at this test: the
 * n-th `server ...; # WEFT: node` line gets the n-th node's port, the
 * `listen ...; # WEFT: listen` line the proxy's. Nothing else changes, and
 * a file whose markers do not match the cluster fails here.
 */
function exampleFor (nodePorts, listenPort) {
  let nodeLines = 0
  let listenLines = 0
  const text = fs.readFileSync(EXAMPLE, 'utf8')
    .replace(/^(\s*server\s+)\S+(\s.*# WEFT: node)$/gm, (_line, head, tail) => {
      nodeLines += 1
      return `${head}${HOST}:${nodePorts[nodeLines - 1]}${tail}`
    })
    .replace(/^(\s*listen\s+)[^;]+(;\s*# WEFT: listen)$/gm, (_line, head, tail) => {
      listenLines += 1
      return `${head}${HOST}:${listenPort}${tail}`
    })
  assert.equal(nodeLines, nodePorts.length, `${EXAMPLE}: one \`server ...; # WEFT: node\` line per test node`)
  assert.equal(listenLines, 1, `${EXAMPLE}: one \`listen ...; # WEFT: listen\` line`)
  const marked = text.split('\n').filter(line => /^\s*[^#\s].*# WEFT:/.test(line))
  assert.equal(marked.length, nodePorts.length + 1, `${EXAMPLE}: no other lines marked \`# WEFT:\``)
  return text
}

/**
 * nginx.conf around the example: a single foreground process (so that one
 * SIGKILL ends it), everything it writes in `dir`, errors to stderr.
 */
function mainConfig (dir) {
  const temp = (name) => path.join(dir, name)
  return [
    'daemon off;',
    'master_process off;',
    `pid ${temp('nginx.pid')};`,
    'error_log stderr notice;',
    'events { worker_connections 512; }',
    'http {',
    `    access_log ${temp('access.log')};`,
    `    client_body_temp_path ${temp('client_body')};`,
    `    proxy_temp_path ${temp('proxy')};`,
    `    fastcgi_temp_path ${temp('fastcgi')};`,
    `    uwsgi_temp_path ${temp('uwsgi')};`,
    `    scgi_temp_path ${temp('scgi')};`,
    `    include ${temp('weft.conf')};`,
    '}',
    ''
  ].join('\n')
}

const liveProxies = new Set()
process.on('exit', () => {
  for (const child of liveProxies) {
    try { child.kill('SIGKILL') } catch { /* already gone */ }
  }
})

/**
 * Start nginx with the example in front of `nodes`; stopped after test `t`.
 * Returns `{ port, wsUrl, httpUrl, logs() }`.
 */
async function startProxy (t, nodes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-nginx-'))
  let child = null
  let exited = Promise.resolve()
  t.after(async () => {
    if (child !== null && liveProxies.has(child)) {
      child.kill('SIGTERM')
      if (await within(exited, 5000) === null) {
        child.kill('SIGKILL')
        await exited
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const port = await freePort()
  fs.writeFileSync(path.join(dir, 'weft.conf'), exampleFor(nodes.map(n => n.port), port))
  fs.writeFileSync(path.join(dir, 'nginx.conf'), mainConfig(dir))
  const argv = ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr']
  const check = spawnSync(NGINX, ['-t', ...argv], { encoding: 'utf8', timeout: 10000 })
  assert.equal(check.status, 0, `nginx -t refused the configuration:\n${check.stderr}`)

  const output = []
  child = spawn(NGINX, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  liveProxies.add(child)
  child.stdout.on('data', d => output.push(d.toString('utf8')))
  child.stderr.on('data', d => output.push(d.toString('utf8')))
  exited = new Promise(resolve => child.once('exit', (code, signal) => {
    liveProxies.delete(child)
    resolve({ code, signal })
  }))
  const proxy = {
    port,
    wsUrl: `ws://${HOST}:${port}`,
    httpUrl: `http://${HOST}:${port}`,
    logs () {
      let access = ''
      try { access = fs.readFileSync(path.join(dir, 'access.log'), 'utf8') } catch { /* none yet */ }
      return `---- nginx output ----\n${output.join('')}\n---- nginx access log ----\n${access}`
    }
  }
  const started = now()
  await eventually(async () => {
    if (liveProxies.has(child) === false) throw new Error(`nginx exited at start-up\n${proxy.logs()}`)
    try {
      const res = await fetch(`${proxy.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      return res.status === 200
    } catch {
      return false
    }
  }, { timeout: 10000, interval: 25, what: 'nginx to pass /healthz through to a node' })
  report('nginx: start to /healthz passed through', now() - started)
  return proxy
}

/**
 * Poll state that emits no event (metrics, a proxy), every `interval` ms,
 * at most `timeout` ms.
 */
async function eventually (predicate, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const started = now()
  for (let attempt = 0; attempt <= timeout / interval && now() - started <= timeout; attempt++) {
    if (await predicate()) return now() - started
    await sleep(interval)
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

const ACCEPTED = 'weft_upgrades_total{status="101"}'

/** Every node's count of accepted upgrades. */
const acceptedCounts = (nodes) => Promise.all(nodes.map(n => metric(n, ACCEPTED)))

/**
 * The index of the one node whose accepted upgrades rose by one since
 * `before` (one upgrade was made meanwhile).
 */
async function nodeThatAccepted (nodes, before, what) {
  let served = -1
  await eventually(async () => {
    const risen = (await acceptedCounts(nodes)).map((count, i) => count - before[i])
    assert.ok(risen.every(d => d === 0 || d === 1) && risen.filter(d => d === 1).length <= 1,
      `one upgrade (${what}), accepted upgrades rose by ${risen.join(', ')}`)
    served = risen.indexOf(1)
    return served >= 0
  }, { timeout: 5000, what: `a node to count the upgrade (${what})` })
  return served
}

/**
 * Upgrade `target` through the proxy (then close the socket) and return the
 * index of the node that accepted it.
 */
async function servedBy (proxy, nodes, target, { headers = {} } = {}) {
  const before = await acceptedCounts(nodes)
  const res = await rawUpgrade(proxy, target, { headers })
  assert.equal(res.status, 101, `upgrade of ${target} through nginx: HTTP ${res.status} ${res.body ?? ''}`)
  return nodeThatAccepted(nodes, before, target)
}

/**
 * Documents named `prefix<i>` (bounded search) until one lands on each
 * node; returns their names by node index.
 */
async function documentPerNode (proxy, nodes, prefix) {
  const found = new Array(nodes.length).fill(null)
  const token = tokenOf('finder')
  for (let i = 0; i < MAX_CANDIDATES && found.includes(null); i++) {
    const doc = `${prefix}${i}`
    const node = await servedBy(proxy, nodes, `/${doc}?token=${token}`)
    if (found[node] === null) found[node] = doc
  }
  assert.ok(!found.includes(null), `within ${MAX_CANDIDATES} names, a document for every node: ${JSON.stringify(found)}`)
  return found
}

/** Two nodes of a cluster on a fresh topic, both checking tokens. */
async function startCluster (t) {
  const topic = `e2e-nginx-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 2; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      args: [
        '--kafka-brokers', BROKER,
        '--kafka-topic', topic,
        '--kafka-partitions', '4',
        '--node-id', `node-${i}`,
        '--kafka-fetch-wait-ms', '10',
        '--auth-jwt-secret', SECRET,
        // Behind a proxy every client has the proxy's address: the
        // per-address upgrade rate must allow them all (docs/KUBERNETES.md).
        '--max-upgrades-per-ip-per-second', '1000'
      ]
    }))
  }
  return nodes
}

/** Run `body(t, nodes, proxy)`; on failure print nginx's output and logs. */
function withProxy (body) {
  return async (t) => {
    const nodes = await startCluster(t)
    const proxy = await startProxy(t, nodes)
    try {
      await body(t, nodes, proxy)
    } catch (err) {
      process.stderr.write(`\n${proxy.logs()}\n`)
      throw err
    }
  }
}

e2e('nginx: a document lands on one node whatever the token; another on the other node; y-websocket and Hocuspocus clients converge through it', { skip, timeout: 90000 }, withProxy(async (t, nodes, proxy) => {
  const docs = await documentPerNode(proxy, nodes, 'sticky/doc-')
  console.log(`[nginx] documents by node: ${JSON.stringify(docs)}`)

  // The same document, other users (other tokens in the query) and a token
  // in the Authorization header instead: always the same node.
  for (const [node, doc] of docs.entries()) {
    for (const user of ['alice', 'bob', 'carol']) {
      assert.equal(await servedBy(proxy, nodes, `/${doc}?token=${tokenOf(user)}`), node, `${doc} for ${user}`)
    }
    assert.equal(await servedBy(proxy, nodes, `/${doc}`, { headers: { Authorization: `Bearer ${tokenOf('dave')}` } }), node, `${doc} with a bearer token`)
  }

  // Two unmodified y-websocket clients per document, through nginx, one at
  // a time: each lands on its document's node.
  const clients = []
  for (const [node, doc] of docs.entries()) {
    for (const user of ['alice', 'bob']) {
      const before = await acceptedCounts(nodes)
      const client = createClient(t, proxy.wsUrl, doc, { name: `${user}@${doc}`, params: { token: tokenOf(user) } })
      await waitSynced(client)
      assert.equal(await nodeThatAccepted(nodes, before, client.name), node, `${client.name} on node-${node}`)
      clients.push(client)
    }
  }
  for (const [i, client] of clients.entries()) {
    client.doc.getText('text').insert(0, `${client.name} `)
    client.doc.getArray('array').push([i])
  }
  for (const doc of docs) {
    const pair = clients.filter(c => c.docName === doc)
    const ms = await waitConverged(pair, { timeout: 15000, what: `${doc}: two clients through nginx` })
    report(`nginx: ${doc}, two clients through the proxy converged after their edits`, ms)
    assert.equal(pair[0].doc.getArray('array').length, 2)
  }
  // Each node holds the two sessions of its own document, and no other.
  await eventually(async () => {
    const counts = await Promise.all(nodes.map(n => metric(n, 'weft_connections')))
    return counts.every(count => count === 2)
  }, { timeout: 5000, what: 'two sessions on each node (weft_connections)' })

  // A Hocuspocus provider through nginx, on the first node's document, meets
  // the y-websocket clients there.
  const socket = new HocuspocusProviderWebsocket({ url: proxy.wsUrl, WebSocketPolyfill: WebSocket })
  t.after(() => socket.destroy())
  const hocusDoc = new Y.Doc()
  let synced = false
  const providerEvents = new EventEmitter()
  const provider = new HocuspocusProvider({
    websocketProvider: socket,
    name: docs[0],
    document: hocusDoc,
    token: tokenOf('erin'),
    onSynced: () => { synced = true; providerEvents.emit('change') }
  })
  provider.attach()
  t.after(() => provider.destroy())
  const yws = clients.find(c => c.docName === docs[0])
  await waitFor(() => synced && hocusDoc.getText('text').toString() === yws.doc.getText('text').toString(), {
    on: [hocusDoc, yws, providerEvents], timeout: 10000, what: 'the Hocuspocus provider to sync through nginx'
  })
  hocusDoc.getText('text').insert(0, 'from hocuspocus ')
  await waitFor(() => yws.doc.getText('text').toString().startsWith('from hocuspocus '), {
    on: yws, timeout: 10000, what: 'the Hocuspocus edit to reach a y-websocket client'
  })
  yws.doc.getMap('map').set('from', 'y-websocket')
  await waitFor(() => hocusDoc.getMap('map').get('from') === 'y-websocket', {
    on: hocusDoc, timeout: 10000, what: 'a y-websocket edit to reach the Hocuspocus provider'
  })
}))

e2e('nginx: refusals pass through as Weft wrote them; a dead node\'s documents move to the other; no node left gives a JSON 502', { skip, timeout: 90000 }, withProxy(async (t, nodes, proxy) => {
  // Weft's refusals, status and body unchanged by the proxy.
  const direct = await rawUpgrade(nodes[0], '/refused/doc')
  const proxied = await rawUpgrade(proxy, '/refused/doc')
  assertRefusal(direct, 401, { what: 'upgrade without a token, direct' })
  assertRefusal(proxied, 401, { what: 'upgrade without a token, through nginx' })
  assert.deepEqual(proxied.json, direct.json, 'the same body through nginx')
  const denied = await rawUpgrade(proxy, `/refused/doc?token=${tokenOf('mallory', { 'other/*': 'rw' })}`)
  assertRefusal(denied, 403, { what: 'upgrade with no grant for the document, through nginx' })

  // The proxy's own answers: JSON too.
  const health = await fetch(`${proxy.httpUrl}/healthz`, { signal: AbortSignal.timeout(5000) })
  assert.equal(health.status, 200)
  assert.deepEqual(await health.json(), { status: 'ok' })
  const metrics = await fetch(`${proxy.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  assertRefusal({ status: metrics.status, headers: Object.fromEntries(metrics.headers), body: '', json: await metrics.json() }, 404, { what: '/metrics through nginx' })
  // Bodies past the nodes' own limit (--max-message-bytes, 16 MiB) stop at
  // the proxy; REST writes up to it go through: a 1 MiB document's content.
  assertRefusal(await declaredBody(proxy, '/some/doc', 17 * 1024 * 1024), 413, { what: 'a 17 MiB body through nginx' })
  const big = Array.from({ length: 1024 }, (_, i) => `Paragraph ${i} ${'x'.repeat(1024)}`).join('\n\n') + '\n'
  assert.ok(Buffer.byteLength(big) > 1024 * 1024)
  const route = `${proxy.httpUrl}/api/documents/${encodeURIComponent('big/doc')}/content?format=markdown`
  const auth = { authorization: `Bearer ${tokenOf('writer')}` }
  const put = await fetch(route, { method: 'PUT', body: big, headers: { ...auth, 'content-type': 'text/markdown' }, signal: AbortSignal.timeout(30000) })
  assert.equal(put.status, 200, `a 1 MiB PUT of content through nginx: ${await put.clone().text()}`)
  assert.equal((await put.json()).changed, true)
  const read = await fetch(route, { headers: auth, signal: AbortSignal.timeout(30000) })
  assert.equal(read.status, 200)
  assert.equal(await read.text(), big, 'the 1 MiB document reads back through nginx')
  // An agent's stream is not buffered by the proxy: its first line is
  // applied while the body is still open.
  const streamed = http.request({
    host: HOST,
    port: proxy.port,
    path: `/api/documents/${encodeURIComponent('big/stream')}/stream?root=notes`,
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/x-ndjson' }
  })
  const streamAnswer = new Promise((resolve, reject) => {
    streamed.on('response', (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) })
    streamed.on('error', reject)
  })
  streamed.flushHeaders()
  streamed.write('{"insert":"first line"}\n')
  const notes = `${proxy.httpUrl}/api/documents/${encodeURIComponent('big/stream')}/content?format=text&root=notes`
  let seen = ''
  for (let attempt = 0; attempt < 100 && seen !== 'first line'; attempt++) {
    const res = await fetch(notes, { headers: auth, signal: AbortSignal.timeout(5000) })
    seen = res.status === 200 ? await res.text() : ''
    if (seen !== 'first line') await sleep(50)
  }
  assert.equal(seen, 'first line', 'a stream line applied through nginx before the stream ends')
  streamed.end('{"insert":", second"}\n')
  assert.equal(await streamAnswer, 200)

  // Two clients of a document of node 0; node 0 dies; they reconnect through
  // nginx, land on node 1, and go on editing.
  const [doc] = await documentPerNode(proxy, nodes, 'failover/doc-')
  const pair = ['alice', 'bob'].map(user => createClient(t, proxy.wsUrl, doc, { name: `${user}@${doc}`, params: { token: tokenOf(user) } }))
  await waitSynced(pair)
  pair[0].doc.getText('text').insert(0, 'before ')
  await waitConverged(pair, { what: 'edits before the failure' })
  await nodes[0].kill()
  const started = now()
  await waitFor(() => pair.every(c => c.closeCodes.length > 0), { on: pair, timeout: 10000, what: 'both clients to lose node 0' })
  await waitSynced(pair, { timeout: 15000, what: 'both clients to reconnect through nginx' })
  report('nginx: node 0 killed -> its clients synced again through the proxy', now() - started)
  pair[1].doc.getText('text').insert(0, 'after ')
  await waitConverged(pair, { what: 'edits after the failure, on node 1' })
  assert.equal(pair[0].doc.getText('text').toString(), 'after before ')
  assert.equal(await servedBy(proxy, nodes.slice(1), `/${doc}?token=${tokenOf('carol')}`), 0, `${doc} now on node 1`)

  // No node left: nginx's own JSON 502.
  for (const client of pair) client.destroy()
  await nodes[1].kill()
  const res = await rawUpgrade(proxy, `/${doc}?token=${tokenOf('carol')}`)
  assertRefusal(res, 502, { retryAfter: true, what: 'upgrade with every node down' })
  console.log(`[nginx] with no node: ${res.status} ${res.body}`)
}))

/**
 * A POST that declares a `bytes`-long body in its headers and sends none:
 * the proxy refuses it on the headers. Resolves like `rawUpgrade`.
 */
function declaredBody (proxy, target, bytes) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: HOST,
      port: proxy.port,
      path: target,
      method: 'POST',
      agent: false,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes) }
    })
    const timer = setTimeout(() => {
      req.destroy()
      reject(new Error(`no answer to a POST of ${bytes} bytes within 5000 ms`))
    }, 5000)
    req.on('response', (res) => {
      const chunks = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => {
        clearTimeout(timer)
        const body = Buffer.concat(chunks).toString('utf8')
        let json = null
        try { json = JSON.parse(body) } catch { /* asserted by the caller */ }
        resolve({ status: res.statusCode, headers: res.headers, body, json })
      })
    })
    req.on('error', (err) => { clearTimeout(timer); reject(err) })
    req.flushHeaders()
  })
}

e2e('nginx: a cluster of owners behind the example, clients of one document through nginx and on each of three nodes converge at the owner', { skip, timeout: 120000 }, async (t) => {
  const topic = `e2e-nginx-owners-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    nodes.push(await startWeft(t, {
      name: `owner-${i}`,
      port,
      args: [
        '--kafka-brokers', BROKER,
        '--kafka-topic', topic,
        '--kafka-partitions', '6',
        '--node-id', `owner-${i}`,
        '--kafka-fetch-wait-ms', '10',
        '--auth-jwt-secret', SECRET,
        '--max-upgrades-per-ip-per-second', '1000',
        '--cluster-mode', 'ownership',
        '--cluster-secret', SECRET
      ]
    }))
  }
  // The example routes over two nodes; the third is reached directly.
  const proxy = await startProxy(t, nodes.slice(0, 2))
  const adminToken = signJwt(jwtClaims({ sub: 'admin', admin: true }), { secret: SECRET })
  await eventually(async () => {
    const views = await Promise.all(nodes.map(async (n) => {
      const res = await fetch(`${n.httpUrl}/api/cluster`, { headers: { Authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(2000) })
      return res.status === 200 ? res.json() : null
    }))
    return views.every(v => v && v.nodes.length === 3 && v.nodes.every(n => n.partitions.length > 0))
  }, { timeout: 30000, interval: 100, what: 'three owners with partitions each' })
  const doc = 'owners/nginx'
  const clients = [
    createClient(t, proxy.wsUrl, doc, { name: 'alice@nginx', params: { token: tokenOf('alice') } }),
    createClient(t, proxy.wsUrl, doc, { name: 'bob@nginx', params: { token: tokenOf('bob') } }),
    ...nodes.map((n, i) => createClient(t, n, doc, { name: `user${i}@${n.name}`, params: { token: tokenOf(`user${i}`) } }))
  ]
  await waitSynced(clients)
  for (const [i, client] of clients.entries()) client.doc.getArray('array').push([client.name, i])
  const ms = await waitConverged(clients, { timeout: 20000, what: `${doc}: clients through nginx and on every node` })
  report('nginx: owners, five clients of one document (two through nginx, one per node) converged', ms)
  assert.equal(clients[0].doc.getArray('array').length, clients.length * 2)
  const loaded = await Promise.all(nodes.map(n => metric(n, 'weft_documents_loaded')))
  assert.equal(loaded.filter(count => count === 1).length, 1, `only the owner holds the document: ${loaded}`)
})
