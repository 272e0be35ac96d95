// The editor page a Weft node serves at GET /.
//
// CodeMirror 6 bound to a Y.Text through y-codemirror.next (remote cursors
// and selections with names), connected to the node that served the page
// over the Hocuspocus protocol (the WebSocket upgrade at `/`). The page uses
// that protocol rather than y-websocket's because Weft acknowledges each
// update on it only once the update is durable (the bus acknowledged it), so
// "All changes saved" below means exactly that.
//
// Query parameters: ?doc=NAME picks the document (default "welcome"),
// ?token=JWT is sent in the auth message (and as the Bearer token of the
// history panel's REST calls), ?name=... sets the name others see.

import * as Y from 'yjs'
import { HocuspocusProvider, WebSocketStatus } from '@hocuspocus/provider'
import { EditorView, basicSetup } from 'codemirror'
import { yCollab } from 'y-codemirror.next'
import { setupHistory } from './history.js'

const params = new URLSearchParams(location.search)
const docName = params.get('doc') || 'welcome'
const token = params.get('token') || ''

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#e377c2', '#8c564b']
const NAMES = ['Ada', 'Grace', 'Alan', 'Barbara', 'Edsger', 'Frances', 'Ken', 'Radia', 'Leslie', 'Margaret']

const $ = (id) => document.getElementById(id)
const connectionPill = $('connection')
const syncPill = $('sync')
const detail = $('detail')

function setPill (pill, state, text) {
  pill.dataset.state = state
  pill.textContent = text
}

function storedName () {
  const fromQuery = params.get('name')
  if (fromQuery) return fromQuery.slice(0, 40)
  try {
    const saved = localStorage.getItem('weft-name')
    if (saved) return saved
  } catch { /* storage may be disabled */ }
  return NAMES[Math.floor(Math.random() * NAMES.length)]
}

const ydoc = new Y.Doc()
const color = COLORS[ydoc.clientID % COLORS.length]
const user = { name: storedName(), color, colorLight: color + '33' }

const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
const provider = new HocuspocusProvider({
  url: `${scheme}//${location.host}/`,
  name: docName,
  document: ydoc,
  token,
})
provider.setAwarenessField('user', user)

// --- connection state -------------------------------------------------------

let refused = null // set once the server refused this token; no retry helps


let online = false // the socket is open (the provider has no getter for it)

provider.on('status', ({ status }) => {
  online = status === WebSocketStatus.Connected
  if (refused) return
  if (status === WebSocketStatus.Connected) {
    setPill(connectionPill, 'connected', `Connected to ${location.host}`)
    detail.textContent = ''
  } else if (status === WebSocketStatus.Connecting) {
    setPill(connectionPill, 'connecting', 'Connecting…')
  } else {
    setPill(connectionPill, 'offline', 'Offline, retrying')
  }
  renderSync()
})

provider.on('close', ({ event }) => {

  if (!refused && event) {
    detail.textContent = `Connection closed (${event.code}${event.reason ? `: ${event.reason}` : ''}); edits stay in this tab and are sent when it reconnects.`
  }
})

provider.on('authenticationFailed', ({ reason }) => {
  refused = reason || 'permission denied'
  setPill(connectionPill, 'refused', 'Access refused')
  detail.textContent = `The server refused this page's token for "${docName}": ${refused}. Open the page with ?token=<a JWT for this document>.`
  renderSync()
})

// --- sync state -------------------------------------------------------------

let synced = false
provider.on('synced', () => { synced = true; renderSync() })
provider.on('unsyncedChanges', () => renderSync())
provider.on('authenticated', () => renderSync())

function renderSync () {
  const pending = provider.unsyncedChanges
  if (refused) {
    setPill(syncPill, 'unsaved', pending ? `${pending} unsaved` : 'Not loaded')
  } else if (synced && provider.authorizedScope === 'readonly') {
    // The node applies nothing from a read-only session, so nothing here
    // is ever "saved"; say what the page is instead.
    setPill(syncPill, 'readonly', 'Read-only')
  } else if (!synced) {
    setPill(syncPill, 'loading', 'Loading document…')
  } else if (pending === 0) {
    setPill(syncPill, 'saved', 'All changes saved')
  } else if (online) {
    setPill(syncPill, 'saving', `Saving ${pending} change${pending === 1 ? '' : 's'}…`)
  } else {
    setPill(syncPill, 'unsaved', `${pending} change${pending === 1 ? '' : 's'} not saved yet`)
  }
}

// --- presence ---------------------------------------------------------------

function renderPresence () {
  const list = $('presence')
  const people = []
  provider.awareness.getStates().forEach((state, clientID) => {
    if (state.user) people.push({ clientID, ...state.user })
  })
  people.sort((a, b) => (a.clientID === ydoc.clientID ? -1 : b.clientID === ydoc.clientID ? 1 : a.name.localeCompare(b.name)))
  list.replaceChildren(...people.map((person) => {
    const item = document.createElement('li')
    item.dataset.clientId = String(person.clientID)
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.style.background = person.color
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = String(person.name)
    item.append(dot, name)
    if (person.clientID === ydoc.clientID) {
      const me = document.createElement('span')
      me.className = 'me'
      me.textContent = '(you)'
      item.append(me)
    }
    return item
  }))
}
provider.awareness.on('change', renderPresence)
renderPresence()

// --- the editor -------------------------------------------------------------

const TEXT_ROOT = 'codemirror'
const ytext = ydoc.getText(TEXT_ROOT)
const undoManager = new Y.UndoManager(ytext)
const view = new EditorView({
  parent: $('editor'),
  extensions: [
    basicSetup,
    EditorView.lineWrapping,
    yCollab(ytext, provider.awareness, { undoManager }),
  ],
})

// --- history ----------------------------------------------------------------

const historyPanel = setupHistory({ docName, token, textRoot: TEXT_ROOT, editor: $('editor') })

// --- header controls ----------------------------------------------------------

const docInput = $('doc-input')
docInput.value = docName
$('doc-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const next = new URLSearchParams(location.search)
  next.set('doc', docInput.value.trim())
  location.search = next.toString()
})

const nameInput = $('name-input')
nameInput.value = user.name
nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim().slice(0, 40)
  if (!name) return
  user.name = name
  try { localStorage.setItem('weft-name', name) } catch { /* storage may be disabled */ }
  provider.setAwarenessField('user', user)
})

document.title = `${docName} · Weft`
renderSync()
// For debugging in the console; the page itself never reads it.
window.weft = { ydoc, provider, view, history: historyPanel }

