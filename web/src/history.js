// The editor page's history panel: the document's versions (newest first,
// with their kind, time and authors), a read-only preview of one, naming
// the document as it is now, and restoring a version.
//
// The panel reads and writes through the REST API (./api.js) with the
// page's token. While it is open it lists the versions again every POLL_MS
// (one request at a time) and after each of its own actions, so a version
// named or restored on another page, or on another node, shows up here.
// A preview fetches the document at that version as a Yjs update, applies
// it to a scratch Y.Doc and shows its text in a read-only CodeMirror view
// in place of the editor; the live document is not touched. A restore is
// a new edit made by the node, so the live editor (still synced while
// hidden) shows the restored text through the socket like anyone's edit.

import * as Y from 'yjs'
import { EditorState } from '@codemirror/state'
import { EditorView, basicSetup } from 'codemirror'
import { HistoryApi } from './api.js'

/** Versions one listing asks for, and how many more "Show older" adds. */
const PAGE_SIZE = 50
/** Most versions the panel lists (the API's largest page). */
const MAX_LISTED = 500
/** How often an open panel lists the versions again. */
const POLL_MS = 3000

const KIND_LABELS = { auto: 'Automatic', named: 'Named', restore: 'Restore' }
const TIME_FORMAT = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' })

const $ = (id) => document.getElementById(id)

/** What a version is called in the list and the preview. */
function versionLabel (version) {
  if (version.name) return version.name
  if (version.kind === 'auto') return 'Automatic version'
  if (version.kind === 'restore') return 'Restored'
  return `Version ${version.id}`
}

function formatTime (at) {
  const date = new Date(at)
  return Number.isNaN(date.getTime()) ? String(at) : TIME_FORMAT.format(date)
}

function element (tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined) node.textContent = text
  return node
}

/**
 * Wires the panel of the page to document `docName` (its text root
 * `textRoot`), calling the API with `token`. `editor` is the element of
 * the live editor, hidden while a preview shows.
 */
export function setupHistory ({ docName, token, textRoot, editor }) {
  const api = new HistoryApi(docName, token)
  const toggle = $('history-toggle')
  const panel = $('history')
  const status = $('history-status')
  const list = $('versions')
  const more = $('versions-more')
  const form = $('version-form')
  const nameInput = $('version-name')
  const preview = $('preview')
  const previewTitle = $('preview-title')
  const previewMeta = $('preview-meta')
  const previewRestore = $('preview-restore')
  let previewView = null

  let open = false
  let limit = PAGE_SIZE
  let versions = []
  let listed = '' // the last listing as JSON, to re-render only on change
  let listedHasMore = false // the last listing left older versions out
  let listFailed = false // the status line shows why the last listing failed
  let selected = null // the version previewed
  let previewSeq = 0 // the latest preview asked for; older answers are dropped
  let pollTimer = null
  let refreshing = null

  function setStatus (text, kind = 'info') {
    status.textContent = text
    status.dataset.kind = kind
  }

  // --- the list --------------------------------------------------------------

  function render () {
    if (versions.length === 0) {
      list.replaceChildren(element('li', 'empty', 'No versions yet. Name this version to keep the document as it is now.'))
    } else {
      list.replaceChildren(...versions.map((version) => {
        const item = element('li')
        const button = element('button', 'version')
        button.type = 'button'
        button.dataset.id = version.id
        button.dataset.kind = version.kind
        button.setAttribute('aria-pressed', String(selected?.id === version.id))
        const time = element('time', 'time', formatTime(version.at))
        time.dateTime = version.at
        button.append(element('span', 'label', versionLabel(version)), element('span', 'kind', KIND_LABELS[version.kind] || version.kind), time)
        if (version.authors?.length) button.append(element('span', 'authors', `by ${version.authors.join(', ')}`))
        button.addEventListener('click', () => showPreview(version))
        item.append(button)
        return item
      }))
    }
    more.hidden = !(listedHasMore && limit < MAX_LISTED)
  }

  /** Lists the versions again; one request at a time. */
  function refresh () {
    if (!refreshing) {
      refreshing = (async () => {
        try {
          const page = await api.versions(limit)
          const json = JSON.stringify(page)
          if (listFailed) setStatus('')
          listFailed = false
          if (json !== listed) {
            listed = json
            versions = Array.isArray(page.versions) ? page.versions : []
            listedHasMore = page.next != null
            render()
          }
        } catch (err) {
          listFailed = true
          setStatus(err.message, 'error')
        } finally {
          refreshing = null
        }
      })()
    }
    return refreshing
  }

  function schedule () {
    clearTimeout(pollTimer)
    pollTimer = open ? setTimeout(async () => { await refresh(); schedule() }, POLL_MS) : null
  }

  function setOpen (next) {
    open = next
    panel.hidden = !open
    toggle.setAttribute('aria-expanded', String(open))
    document.body.classList.toggle('history-open', open)
    if (open) {
      refresh()
      schedule()
    } else {
      clearTimeout(pollTimer)
      closePreview()
    }
  }

  toggle.addEventListener('click', () => setOpen(!open))
  more.addEventListener('click', async () => {
    limit = Math.min(limit + PAGE_SIZE, MAX_LISTED)
    await refresh()
  })

  // --- naming the current state ----------------------------------------------

  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const name = nameInput.value.trim()
    if (!name) return
    const submit = form.querySelector('button[type="submit"]')
    submit.disabled = true
    try {
      const version = await api.nameVersion(name)
      nameInput.value = ''
      setStatus(`Named the document as it is now “${versionLabel(version)}”.`)
      await refresh()
    } catch (err) {
      setStatus(err.message, 'error')
    } finally {
      submit.disabled = false
    }
  })

  // --- preview ---------------------------------------------------------------

  function previewState (text, version) {
    return EditorState.create({
      doc: text,
      extensions: [
        basicSetup,
        EditorView.lineWrapping,
        EditorState.readOnly.of(true),
        EditorView.editable.of(false),
        EditorView.contentAttributes.of({ 'aria-label': `Text of “${versionLabel(version)}” (read-only preview)` }),
      ],
    })
  }

  function markSelected () {
    for (const button of list.querySelectorAll('button.version')) {
      button.setAttribute('aria-pressed', String(button.dataset.id === selected?.id))
    }
  }

  async function showPreview (version) {
    const seq = ++previewSeq
    selected = version
    markSelected()
    previewTitle.textContent = `Preview of “${versionLabel(version)}” (read-only)`
    previewMeta.textContent = 'Loading…'
    preview.dataset.version = version.id
    delete preview.dataset.state
    previewRestore.disabled = true
    preview.hidden = false
    editor.hidden = true
    let text
    try {
      const update = await api.documentAt(version.id)
      const scratch = new Y.Doc()
      try {
        Y.applyUpdate(scratch, update)
        text = scratch.getText(textRoot).toString()
      } finally {
        scratch.destroy()
      }
    } catch (err) {
      if (seq !== previewSeq) return
      previewMeta.textContent = err.message || 'The version could not be read.'
      preview.dataset.state = 'error'
      return
    }
    if (seq !== previewSeq) return
    const authors = version.authors?.length ? ` · by ${version.authors.join(', ')}` : ''
    previewMeta.textContent = `${formatTime(version.at)}${authors} · read-only: the live document is unchanged`
    if (previewView) {
      previewView.setState(previewState(text, version))
    } else {
      previewView = new EditorView({ parent: $('preview-text'), state: previewState(text, version) })
    }
    preview.dataset.state = 'shown'
    previewRestore.disabled = false
  }

  function closePreview () {
    previewSeq++
    selected = null
    markSelected()
    preview.hidden = true
    delete preview.dataset.state
    delete preview.dataset.version
    editor.hidden = false
  }

  $('preview-close').addEventListener('click', closePreview)
  preview.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') closePreview()
  })

  // --- restore ---------------------------------------------------------------

  previewRestore.addEventListener('click', async () => {
    const version = selected
    if (!version) return
    const label = versionLabel(version)
    const question = `Restore “${label}” (${formatTime(version.at)})?\n\nThe document changes to this version's text for everyone editing it. Earlier versions stay listed; to keep the current text as a version too, name it first.`
    if (!window.confirm(question)) return
    previewRestore.disabled = true
    try {
      await api.restore(version.id)
      closePreview()
      setStatus(`Restored “${label}”.`)
      await refresh()
    } catch (err) {
      previewRestore.disabled = false
      setStatus(err.message, 'error')
    }
  })

  return { refresh, isOpen: () => open, previewText: () => previewView?.state.doc.toString() ?? null }
}
