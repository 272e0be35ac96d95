// A real headless Chromium for the editor page's tests: Debian's `chromium`
// driven by `playwright-core` (never a browser Playwright downloads).
// `make test` installs the package; WEFT_CHROMIUM names another binary.

import fs from 'node:fs'
import { chromium } from 'playwright-core'

export const CHROMIUM = process.env.WEFT_CHROMIUM || '/usr/bin/chromium'

/** Why the browser tests cannot run here, or false if they can. */
export function browserSkip () {
  if (fs.existsSync(CHROMIUM)) return false
  const why = `no Chromium at ${CHROMIUM} (make test installs Debian's chromium; WEFT_CHROMIUM names another)`
  if (process.env.CI) throw new Error(why)
  return why
}

/**
 * Launch Chromium for test `t`, closed after it. Playwright gives every
 * launch a fresh, temporary user-data-dir. The flags keep Chromium off the
 * network (this machine has none) and out of the way of root.
 */
export async function launchBrowser (t) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync'
    ],
    timeout: 30000
  })
  t.after(() => browser.close())
  return browser
}

/**
 * Open the editor page `url` in a fresh browser context (its own storage,
 * so its own name and client id). Console errors and page errors are
 * collected in `page.weftErrors`.
 */
export async function openEditor (browser, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } })
  const page = await context.newPage()
  page.weftErrors = []
  page.on('pageerror', (err) => page.weftErrors.push(`pageerror: ${err.message}`))
  page.on('console', (msg) => { if (msg.type() === 'error') page.weftErrors.push(`console: ${msg.text()}`) })
  const response = await page.goto(url, { waitUntil: 'load', timeout: 15000 })
  if (!response || response.status() !== 200) {
    throw new Error(`GET ${url} answered ${response?.status()}`)
  }
  return page
}

/** The text the page's editor holds (CodeMirror's document). */
export function editorText (page) {
  return page.evaluate(() => window.weft.view.state.doc.toString())
}

/** Wait until the page's pill `id` (connection or sync) is in `state`. */
export async function waitPill (page, id, state, timeout = 15000) {
  try {
    await page.waitForSelector(`#${id}[data-state="${state}"]`, { timeout })
  } catch (err) {
    const now = await page.evaluate((id) => {
      const el = document.getElementById(id)
      return `${el?.dataset.state}: ${el?.textContent}`
    }, id)
    throw new Error(`#${id} never reached "${state}" within ${timeout} ms (it shows ${now}); ${err.message}`)
  }
}

/** Type `text` at the end of the page's editor, as a user would. */
export async function typeAtEnd (page, text) {
  await page.click('#editor .cm-content')
  await page.keyboard.press('Control+End')
  await page.keyboard.type(text)
}
