// The editor page's history panel in a real headless Chromium. On a cluster
// (two nodes over Kafka, versions in PostgreSQL), one page per node on one
// document: a version named on one page is listed on the other, previewed
// there read-only while the live editor keeps its newer text, and restored
// there; the first page's editor follows the restore live, without a
// reload, and the versions before it stay listed. On one embedded node:
// authors in the list, the page's token on the REST calls (a read-only
// token may list but not name), and a node without history says so.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import { e2e, startWeft, now, report, signJwt, jwtClaims } from '../lib/harness.mjs'
import { browserSkip, launchBrowser, openEditor, editorText, waitPill, typeAtEnd } from '../lib/browser.mjs'

const BROKER = process.env.WEFT_TEST_KAFKA
const POSTGRES = process.env.WEFT_TEST_POSTGRES_URL
if ((!BROKER || !POSTGRES) && process.env.CI) {
  throw new Error('WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL must be set: `make test` provides both')
}
const noBrowser = browserSkip()
const clusterSkip = noBrowser || (BROKER && POSTGRES ? false : 'set WEFT_TEST_KAFKA and WEFT_TEST_POSTGRES_URL (make test does)')

const SECRET = 'history-panel-e2e-secret-0123456789'
const token = (sub, docs) => signJwt(jwtClaims({ sub, docs }), { secret: SECRET })

/** How long the panel may take to show what another page did (it lists every 3 s). */
const LIST_TIMEOUT = 10000

function editorUrl (server, doc, name, tokenValue) {
  return `${server.httpUrl}/?doc=${encodeURIComponent(doc)}&name=${name}&token=${tokenValue}`
}

/** Resolves when the page's live editor holds exactly `expected`. */
async function waitEditor (page, expected, what, timeout = 15000) {
  try {
    await page.waitForFunction((expected) => window.weft.view.state.doc.toString() === expected, expected, { timeout, polling: 'raf' })
  } catch (err) {
    throw new Error(`${what}: the editor never held ${JSON.stringify(expected)} within ${timeout} ms (it holds ${JSON.stringify(await editorText(page))}); ${err.message}`)
  }
}

/** Opens the page's history panel and waits for its first listing. */
async function openPanel (page) {
  await page.click('#history-toggle')
  assert.equal(await page.getAttribute('#history-toggle', 'aria-expanded'), 'true')
  await page.waitForSelector('#versions li', { timeout: LIST_TIMEOUT })
}

/** The kinds and labels the panel lists, newest first. */
function listed (page) {
  return page.$$eval('#versions button.version', (buttons) => buttons.map((b) => `${b.dataset.kind}:${b.querySelector('.label').textContent}`))
}

/**
 * Asserts the pages logged no errors but the browser's own line for each
 * refusal the test asked for (`statuses`).
 */
function assertNoPageErrors (pages, statuses = []) {
  for (const page of pages) {
    const unexpected = page.weftErrors.filter((line) => !statuses.some((status) =>
      line.startsWith(`console: Failed to load resource: the server responded with a status of ${status} `)))
    assert.deepEqual(unexpected, [], 'the page logged errors')
  }
}

function psql (url, sql) {
  const result = spawnSync('psql', [url, '-qtAc', sql], { encoding: 'utf8', timeout: 20000 })
  assert.equal(result.status, 0, `psql ${sql}: ${result.stderr}`)
}

function freshDatabase (t) {
  const dbName = `weft_e2e_${crypto.randomBytes(6).toString('hex')}`
  psql(POSTGRES, `CREATE DATABASE ${dbName}`)
  t.after(() => psql(POSTGRES, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`))
  const url = new URL(POSTGRES)
  url.pathname = `/${dbName}`
  return url.toString()
}

e2e('history panel: a version named on one node\'s page is previewed and restored on the other\'s, live on both', {
  skip: clusterSkip, timeout: 90000
}, async (t) => {
  const topic = `e2e-history-panel-${crypto.randomUUID()}`
  const store = freshDatabase(t)
  const nodes = []
  for (let i = 0; i < 2; i++) {
    nodes.push(await startWeft(t, {
      name: `node-${i}`,
      store,
      args: ['--kafka-brokers', BROKER, '--kafka-topic', topic, '--kafka-partitions', '2', '--node-id', `node-${i}`,
        '--kafka-fetch-wait-ms', '10', '--auth-jwt-secret', SECRET]
    }))
  }
  const doc = 'panel/shared'
  const browser = await launchBrowser(t)
  const ada = await openEditor(browser, editorUrl(nodes[0], doc, 'Ada', token('ada', { 'panel/*': 'rw' })))
  const grace = await openEditor(browser, editorUrl(nodes[1], doc, 'Grace', token('grace', { 'panel/*': 'rw' })))
  for (const page of [ada, grace]) {
    await waitPill(page, 'connection', 'connected')
    await waitPill(page, 'sync', 'saved')
  }
  // A marker a reload would lose.
  await ada.evaluate(() => { window.notReloaded = true })

  const draft = 'First draft, by Ada.'
  await typeAtEnd(ada, draft)
  await waitPill(ada, 'sync', 'saved')
  await waitEditor(grace, draft, 'node 1 page')

  // Ada names the current state; Grace's panel lists it.
  await openPanel(ada)
  await openPanel(grace)
  await ada.fill('#version-name', 'first draft')
  await ada.click('#version-form button[type="submit"]')
  await ada.waitForSelector('#history-status:has-text("first draft")', { timeout: LIST_TIMEOUT })
  assert.equal(await ada.getAttribute('#history-status', 'data-kind'), 'info')
  await ada.waitForSelector('#versions button.version:has-text("first draft")', { timeout: LIST_TIMEOUT })
  const named = now()
  await grace.waitForSelector('#versions button.version:has-text("first draft")', { timeout: LIST_TIMEOUT })
  report('history panel: version named on node 0 to listed on node 1', now() - named)

  // Grace types more, then previews the named version: the old text,
  // read-only, and her editor keeps the new one.
  const rewritten = `${draft} Grace rewrote the ending.`
  await typeAtEnd(grace, ' Grace rewrote the ending.')
  await waitPill(grace, 'sync', 'saved')
  await waitEditor(ada, rewritten, 'node 0 page')
  await grace.click('#versions button.version:has-text("first draft")')
  await grace.waitForSelector('#preview[data-state="shown"]', { timeout: 10000 })
  assert.equal(await grace.evaluate(() => window.weft.history.previewText()), draft)
  assert.match(await grace.textContent('#preview-title'), /Preview of “first draft”/)
  assert.match(await grace.textContent('#preview-meta'), /read-only/)
  assert.equal(await grace.getAttribute('#preview-text .cm-content', 'contenteditable'), 'false')
  assert.equal(await grace.isHidden('#editor'), true, 'the preview shows in place of the editor')
  assert.equal(await editorText(grace), rewritten, 'previewing left the live document alone')
  assert.equal(await grace.getAttribute('#versions button.version:has-text("first draft")', 'aria-pressed'), 'true')

  // Grace restores it, confirming; Ada's editor follows live.
  const asked = []
  grace.once('dialog', (dialog) => {
    asked.push(`${dialog.type()}: ${dialog.message()}`)
    dialog.accept()
  })
  const restoring = now()
  await grace.click('#preview-restore')
  await waitEditor(ada, draft, 'node 0 page after the restore on node 1')
  report('history panel: restore clicked on node 1 to text shown on node 0', now() - restoring)
  assert.equal(asked.length, 1)
  assert.match(asked[0], /^confirm: Restore “first draft”/)
  await waitEditor(grace, draft, 'node 1 page after its restore')
  await grace.waitForSelector('#preview', { state: 'hidden', timeout: 10000 })
  assert.equal(await grace.isVisible('#editor'), true, 'the live editor is back')
  assert.match(await grace.textContent('#history-status'), /Restored “first draft”/)
  assert.equal(await ada.evaluate(() => window.notReloaded), true, 'Ada\'s page followed without a reload')

  // The history before the restore stays listed, on both pages.
  for (const page of [grace, ada]) {
    await page.waitForSelector('#versions button.version[data-kind="restore"]', { timeout: LIST_TIMEOUT })
    const kept = (await listed(page)).filter((entry) => !entry.startsWith('auto:'))
    assert.deepEqual(kept, ['restore:Restored', 'named:first draft'])
  }
  // Grace's editor, shown again after the preview, edits on top of it.
  await typeAtEnd(grace, ' Agreed.')
  await waitEditor(ada, `${draft} Agreed.`, 'node 0 page after the restore')
  assertNoPageErrors([ada, grace])
})

e2e('history panel on one node: authors listed, the page\'s token on REST (read-only may not name), history off said', {
  skip: noBrowser, timeout: 60000
}, async (t) => {
  const server = await startWeft(t, { args: ['--auth-jwt-secret', SECRET] })
  const doc = 'panel/solo'
  const browser = await launchBrowser(t)
  const carol = token('carol', { 'panel/*': 'rw' })
  const writer = await openEditor(browser, editorUrl(server, doc, 'Carol', carol))
  await waitPill(writer, 'sync', 'saved')
  await openPanel(writer)
  assert.match(await writer.textContent('#versions'), /No versions yet/)
  await typeAtEnd(writer, 'Carol was here.')
  await waitPill(writer, 'sync', 'saved')
  await writer.fill('#version-name', 'checkpoint')
  await writer.click('#version-form button[type="submit"]')
  const item = '#versions button.version:has-text("checkpoint")'
  await writer.waitForSelector(item, { timeout: LIST_TIMEOUT })
  assert.equal(await writer.textContent(`${item} .authors`), 'by carol')
  assert.equal(await writer.getAttribute(`${item} time`, 'datetime').then((at) => Number.isNaN(Date.parse(at))), false)

  // A read-only token lists and previews, and is refused naming, saying why.
  const reader = await openEditor(browser, editorUrl(server, doc, 'Dan', token('dan', { 'panel/*': 'r' })))
  await waitPill(reader, 'sync', 'readonly')
  assert.equal(await reader.textContent('#sync'), 'Read-only')
  await openPanel(reader)
  await reader.waitForSelector(item, { timeout: LIST_TIMEOUT })
  await reader.click(item)
  await reader.waitForSelector('#preview[data-state="shown"]', { timeout: 10000 })
  assert.equal(await reader.evaluate(() => window.weft.history.previewText()), 'Carol was here.')
  await reader.click('#preview-close')
  await reader.waitForSelector('#preview', { state: 'hidden' })
  await reader.fill('#version-name', 'mine')
  await reader.click('#version-form button[type="submit"]')
  await reader.waitForSelector('#history-status[data-kind="error"]', { timeout: 10000 })
  assert.match(await reader.textContent('#history-status'), /Not allowed: .*read-only/)
  const versions = await fetch(`${server.httpUrl}/api/documents/${encodeURIComponent(doc)}/versions`, {
    headers: { authorization: `Bearer ${carol}` }
  }).then((res) => res.json())
  assert.deepEqual(versions.versions.map((v) => v.name), ['checkpoint'], 'the refused request named nothing')

  // A node without history says so in the panel.
  const off = await startWeft(t, { name: 'no-history', args: ['--history-retention', '0'] })
  const page = await openEditor(browser, `${off.httpUrl}/?doc=${encodeURIComponent(doc)}`)
  await waitPill(page, 'sync', 'saved')
  await page.click('#history-toggle')
  await page.waitForSelector('#history-status[data-kind="error"]', { timeout: 10000 })
  assert.equal(await page.textContent('#history-status'), 'History is off on this node.')
  assertNoPageErrors([writer, reader, page], [403, 501])
})
