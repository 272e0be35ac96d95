// The editor page a node serves at GET /, in a real headless Chromium
// (Debian's chromium driven by playwright-core): two pages on two nodes of
// a cluster edit one document, a token is refused and accepted, and the
// page's connection and sync state follow a node's crash and restart.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import {
  e2e, startWeft, createClient, waitFor, waitSynced, now, report, signJwt, jwtClaims
} from '../lib/harness.mjs'
import {
  browserSkip, launchBrowser, openEditor, editorText, waitPill, typeAtEnd
} from '../lib/browser.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
if (!BROKER && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it')
}
const noBrowser = browserSkip()

/** Resolves when the page's editor holds `needle`. */
async function waitText (page, needle, what, timeout = 15000) {
  try {
    await page.waitForFunction((needle) => window.weft.view.state.doc.toString().includes(needle), needle, { timeout, polling: 'raf' })
  } catch (err) {
    throw new Error(`${what}: the editor never showed ${JSON.stringify(needle)} within ${timeout} ms (it holds ${JSON.stringify(await editorText(page))}); ${err.message}`)
  }
}

function assertNoPageErrors (...pages) {
  for (const page of pages) assert.deepEqual(page.weftErrors, [], 'the page logged errors')
}

e2e('GET / serves the editor page: HTML with a strict CSP, assets that revalidate by ETag', async (t) => {
  const server = await startWeft(t)
  const page = await fetch(`${server.httpUrl}/?doc=notes`)
  assert.equal(page.status, 200)
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8')
  assert.match(page.headers.get('content-security-policy'), /default-src 'self'/)
  assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
  const html = await page.text()
  assert.match(html, /<script type="module" src="\/assets\/editor\.js">/)

  const script = await fetch(`${server.httpUrl}/assets/editor.js`)
  assert.equal(script.status, 200)
  assert.match(script.headers.get('content-type'), /javascript/)
  const etag = script.headers.get('etag')
  assert.match(etag, /^"[0-9a-f]{64}"$/)
  assert.ok((await script.arrayBuffer()).byteLength > 10000, 'the bundle holds the editor')
  const again = await fetch(`${server.httpUrl}/assets/editor.js`, { headers: { 'if-none-match': etag } })
  assert.equal(again.status, 304)

  const post = await fetch(`${server.httpUrl}/`, { method: 'POST' })
  assert.equal(post.status, 405)
  assert.equal((await post.json()).error.code, 405)

  const missing = await fetch(`${server.httpUrl}/assets/nope.js`)
  assert.equal(missing.status, 404)
  assert.equal((await missing.json()).error.code, 404)
})

e2e('two pages on two nodes type into one document and each shows the other\'s text, names and cursor', {
  skip: noBrowser || (BROKER ? false : 'set WEFT_TEST_KAFKA=host:port (make test does)'),
  timeout: 90000
}, async (t) => {
  const topic = `e2e-editor-${crypto.randomUUID()}`
  const nodes = []
  for (let i = 0; i < 2; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      args: ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '2',
        '--node-id', `node-${i}`, '--kafka-fetch-wait-ms', '10']
    }))
  }
  const doc = 'editor/shared'
  const browser = await launchBrowser(t)
  const ada = await openEditor(browser, `${nodes[0].httpUrl}/?doc=${encodeURIComponent(doc)}&name=Ada`)
  const grace = await openEditor(browser, `${nodes[1].httpUrl}/?doc=${encodeURIComponent(doc)}&name=Grace`)
  for (const page of [ada, grace]) {
    await waitPill(page, 'connection', 'connected')
    await waitPill(page, 'sync', 'saved')
  }

  await typeAtEnd(ada, '# Notes\nAda: the bus is Kafka. ')
  const typed = now()
  await waitText(grace, 'Ada: the bus is Kafka.', 'node 1 page')
  report('editor page: keystroke on node 0 to text shown on node 1', now() - typed)
  await typeAtEnd(grace, '\nGrace: and every node converges.')
  await waitText(ada, 'Grace: and every node converges.', 'node 0 page')

  // Both editors hold the same text, and it is the one a y-websocket client
  // of another node reads from the document.
  const reader = createClient(t, nodes[1], doc, { name: 'reader' })
  await waitSynced([reader])
  const text = () => reader.doc.getText('codemirror').toString()
  await waitFor(() => text().includes('Grace: and every node converges.'), { on: reader.doc, what: 'the y-websocket reader has both lines' })
  assert.equal(await editorText(ada), text())
  assert.equal(await editorText(grace), text())

  // Each page names who is present, and draws the other's cursor with its name.
  await ada.waitForSelector('#presence li:has-text("Grace")', { timeout: 10000 })
  await grace.waitForSelector('#presence li:has-text("Ada")', { timeout: 10000 })
  await ada.waitForSelector('.cm-ySelectionInfo:has-text("Grace")', { state: 'attached', timeout: 10000 })
  await grace.waitForSelector('.cm-ySelectionInfo:has-text("Ada")', { state: 'attached', timeout: 10000 })
  await waitPill(ada, 'sync', 'saved')
  await waitPill(grace, 'sync', 'saved')

  if (process.env.WEFT_SCREENSHOT) {
    await ada.click('.cm-line >> nth=0')
    await ada.keyboard.press('End')
    await ada.screenshot({ path: process.env.WEFT_SCREENSHOT })
  }
  assertNoPageErrors(ada, grace)
})

e2e('a page without a token is refused and says so; with ?token= it edits', { skip: noBrowser }, async (t) => {
  const secret = crypto.randomBytes(32).toString('hex')
  const server = await startWeft(t, { args: ['--auth-jwt-secret', secret] })
  const browser = await launchBrowser(t)

  const anonymous = await openEditor(browser, `${server.httpUrl}/?doc=team/plan`)
  await waitPill(anonymous, 'connection', 'refused')
  assert.match(await anonymous.textContent('#detail'), /refused this page's token/)
  assert.notEqual(await anonymous.getAttribute('#sync', 'data-state'), 'saved')

  const token = signJwt(jwtClaims({ docs: { 'team/*': 'rw' } }), { secret })
  const member = await openEditor(browser, `${server.httpUrl}/?doc=team/plan&token=${token}`)
  await waitPill(member, 'connection', 'connected')
  await waitPill(member, 'sync', 'saved')
  await typeAtEnd(member, 'only members see this')
  await waitPill(member, 'sync', 'saved')

  const reader = createClient(t, server, 'team/plan', { name: 'reader', params: { token } })
  await waitSynced([reader])
  await waitFor(() => reader.doc.getText('codemirror').toString() === 'only members see this', { on: reader.doc, what: 'the member\'s text reached the document' })
  assert.equal(await editorText(anonymous), '', 'the refused page never received the document')
  assertNoPageErrors(member)
})

e2e('the page says when it is offline, keeps what is typed, and saves it after the node restarts', { skip: noBrowser, timeout: 90000 }, async (t) => {
  const server = await startWeft(t)
  const browser = await launchBrowser(t)
  const page = await openEditor(browser, `${server.httpUrl}/?doc=crash`)
  await waitPill(page, 'connection', 'connected')
  await typeAtEnd(page, 'before the crash. ')
  await waitPill(page, 'sync', 'saved')

  await server.kill()
  await waitPill(page, 'connection', 'offline')
  await typeAtEnd(page, 'typed while offline.')
  await waitPill(page, 'sync', 'unsaved')
  assert.match(await page.textContent('#sync'), /not saved yet/)

  await server.restart()
  await waitPill(page, 'connection', 'connected', 30000)
  await waitPill(page, 'sync', 'saved', 30000)

  const reader = createClient(t, server, 'crash', { name: 'reader' })
  await waitSynced([reader])
  await waitFor(() => reader.doc.getText('codemirror').toString() === 'before the crash. typed while offline.', {
    on: reader.doc, what: 'the offline text reached the restarted node'
  })
})
