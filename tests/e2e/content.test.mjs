// Content in editor formats and agents streaming edits, with real editors:
// a Tiptap editor (StarterKit + Collaboration, bound by y-prosemirror's
// layout through @tiptap/y-tiptap) in jsdom, typing over a y-websocket
// connection while a service PUTs Markdown and ProseMirror JSON; reads in
// each format; JSON Patch; Idempotency-Key and If-Match; an NDJSON stream
// seen by a y-websocket client line by line, with the agent in awareness.

import assert from 'node:assert/strict'
import http from 'node:http'
import { JSDOM } from 'jsdom'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, signJwt, jwtClaims, sleep, HOST
} from '../lib/harness.mjs'

// Tiptap needs a DOM: jsdom's, installed before Tiptap is loaded.
const dom = new JSDOM('<!doctype html><html><body></body></html>', { pretendToBeVisual: true })
for (const key of ['window', 'document', 'navigator', 'Node', 'HTMLElement', 'Element', 'getComputedStyle', 'MutationObserver', 'DOMParser', 'requestAnimationFrame', 'cancelAnimationFrame']) {
  Object.defineProperty(globalThis, key, { value: dom.window[key], configurable: true, writable: true })
}
const { Editor } = await import('@tiptap/core')
const { default: StarterKit } = await import('@tiptap/starter-kit')
const { default: Collaboration } = await import('@tiptap/extension-collaboration')

const SECRET = 'content-e2e-secret-0123456789abcdef'
const token = (sub, docs = { 'content/**': 'rw' }) => signJwt(jwtClaims({ sub, docs }), { secret: SECRET })
const writer = token('service')
const enc = encodeURIComponent

function api (server, method, route, { auth = writer, headers = {}, body } = {}) {
  return fetch(`${server.httpUrl}/api${route}`, {
    method,
    body,
    headers: { ...(auth ? { authorization: `Bearer ${auth}` } : {}), ...headers },
    signal: AbortSignal.timeout(15000)
  })
}

/** A Tiptap editor on `client`'s document, bound to the fragment `default`. */
function tiptap (t, client) {
  const editor = new Editor({
    element: document.createElement('div'),
    extensions: [
      StarterKit.configure({ undoRedo: false }),
      Collaboration.configure({ document: client.doc, field: 'default' })
    ]
  })
  t.after(() => editor.destroy())
  return editor
}

/**
 * ProseMirror JSON compared: null attributes and empty paragraphs dropped
 * (Tiptap adds a trailing one), a link's attributes reduced to its href
 * (Tiptap fills in target and rel).
 */
function normal (node) {
  const out = { type: node.type }
  const attrs = Object.fromEntries(Object.entries(node.attrs || {}).filter(([, v]) => v !== null))
  if (Object.keys(attrs).length) out.attrs = attrs
  if (node.text !== undefined) out.text = node.text
  if (node.marks?.length) {
    out.marks = node.marks.map(m => m.type === 'link' ? { type: 'link', attrs: { href: m.attrs.href } } : { type: m.type })
      .sort((a, b) => a.type.localeCompare(b.type))
  }
  let content = (node.content || []).map(normal)
  if (node.type === 'doc') content = content.filter(c => !(c.type === 'paragraph' && !c.content))
  if (content.length) out.content = content
  return out
}

/** GET the content with its ETag, change it with `edit`, PUT it with If-Match; again on 412. */
async function readModifyWrite (server, name, format, edit) {
  for (let attempt = 1; attempt <= 100; attempt++) {
    const read = await api(server, 'GET', `/documents/${enc(name)}/content?format=${format}`)
    assert.equal(read.status, 200)
    const tag = read.headers.get('etag')
    assert.ok(tag, 'a GET of content has an ETag')
    const body = edit(await read.text())
    const type = format === 'prosemirror' ? 'application/json' : 'text/markdown'
    const res = await api(server, 'PUT', `/documents/${enc(name)}/content?format=${format}`, {
      body, headers: { 'if-match': tag, 'content-type': type }
    })
    if (res.status === 412) continue
    assert.equal(res.status, 200, await res.clone().text())
    return { attempts: attempt, answer: await res.json() }
  }
  throw new Error(`no PUT of ${format} went through in 100 attempts`)
}

const SERVICE_MD = '## From the service\n\nA paragraph with **bold** and a [link](https://example.com/).\n\n- one\n- two\n'

e2e('content: a Tiptap editor typing while a service PUTs Markdown and ProseMirror ends with both, its own text whole', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'content/tiptap'
  const first = await api(server, 'PUT', `/documents/${enc(name)}/content?format=markdown`, { body: 'Typed:\n' })
  assert.equal(first.status, 200)
  const client = createClient(t, server, name, { params: { token: token('editor') } })
  await waitSynced([client])
  const editor = tiptap(t, client)
  const firstText = () => editor.state.doc.firstChild.textContent
  await waitFor(() => firstText() === 'Typed:', { on: client, what: 'the editor to show the first PUT' })

  // The editor types at the end of its first paragraph, a key every 15 ms.
  const typed = ' the quick brown fox jumps over the lazy dog'
  let keys = 0
  const typing = (async () => {
    for (const key of typed) {
      const end = editor.state.doc.firstChild.nodeSize - 1
      editor.view.dispatch(editor.state.tr.insertText(key, end))
      keys += 1
      await sleep(15)
    }
  })()

  await waitFor(() => keys >= 8, { on: client, what: 'the editor to type' })
  const markdown = await readModifyWrite(server, name, 'markdown', (current) => `${current.trimEnd()}\n\n${SERVICE_MD}`)
  await waitFor(() => keys >= 20, { on: client, what: 'the editor to type on' })
  const prosemirror = await readModifyWrite(server, name, 'prosemirror', (current) => {
    const doc = JSON.parse(current)
    for (const node of doc.content) {
      for (const child of node.content || []) {
        if (child.type === 'text') child.text = child.text.replace('A paragraph with', 'A sentence with')
      }
    }
    doc.content.push({ type: 'blockquote', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'Quoted by the service' }] }] })
    return JSON.stringify(doc)
  })
  await typing
  console.log(`[content] Markdown PUT after ${markdown.attempts} attempt(s) (${markdown.answer.updateBytes} bytes); ProseMirror PUT after ${prosemirror.attempts} (${prosemirror.answer.updateBytes} bytes)`)
  assert.ok(prosemirror.answer.updateBytes < 200, `the ProseMirror PUT changed one word and added a quote: ${prosemirror.answer.updateBytes} bytes`)

  const expected = {
    type: 'doc',
    content: [
      { type: 'paragraph', content: [{ type: 'text', text: `Typed:${typed}` }] },
      { type: 'heading', attrs: { level: 2 }, content: [{ type: 'text', text: 'From the service' }] },
      {
        type: 'paragraph',
        content: [
          { type: 'text', text: 'A sentence with ' },
          { type: 'text', text: 'bold', marks: [{ type: 'bold' }] },
          { type: 'text', text: ' and a ' },
          { type: 'text', text: 'link', marks: [{ type: 'link', attrs: { href: 'https://example.com/' } }] },
          { type: 'text', text: '.' }
        ]
      },
      {
        type: 'bulletList',
        content: ['one', 'two'].map(text => ({ type: 'listItem', content: [{ type: 'paragraph', content: [{ type: 'text', text }] }] }))
      },
      { type: 'blockquote', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'Quoted by the service' }] }] }
    ]
  }
  const matches = () => {
    try {
      assert.deepEqual(normal(editor.getJSON()), expected)
      return true
    } catch {
      return false
    }
  }
  await waitFor(matches, {
    on: client,
    what: 'the editor to hold both writes and its own text',
    detail: () => JSON.stringify(normal(editor.getJSON()))
  })
  const served = await api(server, 'GET', `/documents/${enc(name)}/content?format=prosemirror`)
  assert.deepEqual(normal(await served.json()), expected, 'the server holds what the editor shows')
  const md = await (await api(server, 'GET', `/documents/${enc(name)}/content?format=markdown`)).text()
  assert.equal(md, `Typed:${typed}\n\n## From the service\n\nA sentence with **bold** and a [link](https://example.com/).\n\n- one\n- two\n\n> Quoted by the service\n`)
})

e2e('content: reads in each format, JSON Patch, Idempotency-Key applies once, If-Match refuses a stale write, grants hold', { timeout: 30000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'content/formats'
  const route = `/documents/${enc(name)}/content`
  const put = () => api(server, 'PUT', `${route}?format=markdown`, { body: '# Title\n\nBody *text*.\n', headers: { 'idempotency-key': 'put-1' } })
  const once = await put()
  assert.equal(once.status, 200)
  assert.equal((await once.json()).changed, true)
  const again = await put()
  assert.equal(again.status, 200)
  assert.equal(again.headers.get('idempotent-replayed'), 'true')
  assert.equal((await again.json()).changed, true, 'the first answer, replayed')

  const md = await api(server, 'GET', `${route}?format=markdown`)
  assert.match(md.headers.get('content-type'), /^text\/markdown/)
  assert.equal(await md.text(), '# Title\n\nBody *text*.\n')
  const pm = await api(server, 'GET', `${route}?format=prosemirror`)
  assert.equal(pm.headers.get('content-type'), 'application/json')
  assert.equal((await pm.json()).content[1].content[1].marks[0].type, 'italic')
  const text = await api(server, 'GET', `${route}?format=text`)
  assert.equal(await text.text(), 'Title\nBody text.')

  // A stale If-Match is refused and changes nothing.
  const stale = await api(server, 'PUT', `${route}?format=markdown`, { body: 'gone\n', headers: { 'if-match': '"0000000000000000"' } })
  assert.equal(stale.status, 412)
  assert.equal(await (await api(server, 'GET', `${route}?format=text`)).text(), 'Title\nBody text.')

  // JSON Patch on a map and an array; a retried PATCH applies once.
  const patch = (root, ops, headers = {}) => api(server, 'PATCH', `${route}?root=${root}`, {
    body: JSON.stringify(ops), headers: { 'content-type': 'application/json-patch+json', ...headers }
  })
  assert.equal((await patch('meta', [{ op: 'add', path: '/title', value: 'T' }, { op: 'add', path: '/tags', value: ['a'] }])).status, 200)
  const append = [{ op: 'add', path: '/-', value: { done: false } }]
  assert.equal((await patch('items', append, { 'idempotency-key': 'append-1' })).status, 200)
  const retried = await patch('items', append, { 'idempotency-key': 'append-1' })
  assert.equal(retried.status, 200)
  assert.equal(retried.headers.get('idempotent-replayed'), 'true')
  const reused = await patch('items', [{ op: 'add', path: '/-', value: 2 }], { 'idempotency-key': 'append-1' })
  assert.equal(reused.status, 422, 'a key reused for another request')
  const failed = await patch('meta', [{ op: 'test', path: '/title', value: 'other' }])
  assert.equal(failed.status, 409)
  const json = await (await api(server, 'GET', `/documents/${enc(name)}?map=meta&array=items`)).json()
  assert.deepEqual(json.map.meta, { title: 'T', tags: ['a'] })
  assert.deepEqual(json.array.items, [{ done: false }], 'the retried append applied once')
  const wrong = await patch('default', append)
  assert.equal(wrong.status, 409, 'a JSON Patch onto an XML root')
  const mismatched = await api(server, 'PUT', `${route}?format=prosemirror`, { body: '# x', headers: { 'content-type': 'text/markdown' } })
  assert.equal(mismatched.status, 415, 'a body whose type says another format')
  const inferred = await api(server, 'PUT', route, { body: JSON.stringify({ type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'From JSON' }] }] }), headers: { 'content-type': 'application/json' } })
  assert.equal(inferred.status, 200, 'the format taken from the Content-Type')
  assert.equal(await (await api(server, 'GET', `${route}?format=markdown`)).text(), 'From JSON\n')

  // Grants: read-only may read, not write.
  const reader = token('reader', { 'content/**': 'r' })
  assert.equal((await api(server, 'GET', `${route}?format=text`, { auth: reader })).status, 200)
  assert.equal((await api(server, 'PUT', `${route}?format=text`, { auth: reader, body: 'x' })).status, 403)
  assert.equal((await api(server, 'GET', `${route}?format=html`)).status, 400)
})

/** A streaming POST: write lines one at a time, then end; resolves the answer. */
function streamRequest (server, name, query, auth) {
  const req = http.request({
    host: HOST,
    port: server.port,
    path: `/api/documents/${enc(name)}/stream?${query}`,
    method: 'POST',
    headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/x-ndjson' }
  })
  const answer = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      const chunks = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) }))
    })
    req.on('error', reject)
  })
  req.flushHeaders()
  return { req, answer }
}

e2e('stream: an agent\'s NDJSON lines reach a y-websocket client one by one, the agent in awareness until the stream ends', { timeout: 30000 }, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const name = 'content/stream'
  const client = createClient(t, server, name, { params: { token: token('reader-client') } })
  await waitSynced([client])
  const notes = () => client.doc.getText('notes').toString()
  const intro = await api(server, 'PUT', `/documents/${enc(name)}/content?format=text&root=notes`, { body: 'Intro. ' })
  assert.equal(intro.status, 200)
  await waitFor(() => notes() === 'Intro. ', { on: client, what: 'the text written over the API' })
  const agents = () => [...client.awareness.getStates().values()].filter(s => s.user?.agent === true)

  const { req, answer } = streamRequest(server, name, 'root=notes&index=7', token('agent-7'))
  req.write('{"insert":"Hello"}\n')
  await waitFor(() => notes() === 'Intro. Hello', { on: client, what: 'the first line to arrive' })
  await waitFor(() => agents().length === 1, { on: client, what: 'the agent in awareness' })
  assert.deepEqual(agents()[0], { user: { name: 'agent-7', agent: true } })
  // The reader types at the start; the stream's cursor moves with its text.
  client.doc.getText('notes').insert(0, '> ')
  req.write('{"insert":", wor')
  await sleep(50) // half a line: nothing is applied until its newline
  assert.equal(notes(), '> Intro. Hello')
  req.write('ld"}\n{"insert":"!!"}\n')
  await waitFor(() => notes() === '> Intro. Hello, world!!', { on: client, what: 'the next lines, after the reader\'s edit' })
  req.end('{"delete":0}\n')
  const done = await answer
  assert.equal(done.status, 200, JSON.stringify(done.json))
  assert.equal(done.json.lines, 4)
  assert.equal(done.json.updates, 3)
  await waitFor(() => agents().length === 0, { on: client, what: 'the agent to leave awareness' })

  // A bad line ends the stream; the lines before it stay.
  const bad = streamRequest(server, name, 'root=notes&index=0', token('agent-8'))
  bad.req.end('{"insert":"A "}\n{"remove":1}\n{"insert":"never"}\n')
  const refused = await bad.answer
  assert.equal(refused.status, 400)
  assert.match(refused.json.error.details, /^line 2: .*the 1 lines before it stay applied/)
  await waitFor(() => notes() === 'A > Intro. Hello, world!!', { on: client, what: 'the line before the bad one' })
  await waitFor(() => agents().length === 0, { on: client, what: 'the refused agent to leave awareness' })

  // An agent that disconnects mid-stream leaves awareness too.
  const dropped = streamRequest(server, name, 'root=notes&index=0', token('agent-9'))
  dropped.answer.catch(() => {}) // the socket is destroyed below
  dropped.req.write('{"insert":"B "}\n')
  await waitFor(() => agents().some(s => s.user.name === 'agent-9'), { on: client, what: 'the third agent in awareness' })
  dropped.req.destroy()
  await waitFor(() => agents().length === 0, { on: client, what: 'the disconnected agent to leave awareness' })
  assert.equal(notes(), 'B A > Intro. Hello, world!!', 'its line stays applied')
})
