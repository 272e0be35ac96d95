// One unmodified Yjs client over wss://, in a process of its own so that
// it trusts the test CA the way an application would: through
// NODE_EXTRA_CA_CERTS, read by Node at start-up.
//
//   node wss-peer.mjs ywebsocket|hocuspocus URL ROOM WRITE EXPECT
//
// Joins ROOM, appends WRITE to the text `text` once synced, waits (bounded)
// until the text holds EXPECT and prints the text as one JSON line. It then
// stays connected (its own edit may still be on its way to the other
// client) until the parent ends it; it exits 1 if EXPECT does not come.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import WebSocket from 'ws'

const [kind, url, room, write, expect] = process.argv.slice(2)
const TIMEOUT_MS = 15000
const doc = new Y.Doc()
const text = doc.getText('text')
const timer = setTimeout(() => {
  console.error(`${kind}: timed out; text: ${JSON.stringify(text.toString())}`)
  process.exit(1)
}, TIMEOUT_MS)

let seen = false
const finishWhenSeen = () => {
  // Its own edit made (once synced) and the other client's edit seen.
  if (!seen && text.toString().includes(write) && text.toString().includes(expect)) {
    seen = true
    clearTimeout(timer)
    console.log(JSON.stringify({ kind, text: text.toString() }))
  }
}
doc.on('update', finishWhenSeen)
const writeOnce = () => {
  if (!text.toString().includes(write)) text.insert(text.length, write)
  finishWhenSeen()
}

if (kind === 'ywebsocket') {
  const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  provider.on('connection-error', (event) => console.error(`y-websocket connection error: ${event?.message ?? event?.type}`))
  provider.once('sync', writeOnce)
} else if (kind === 'hocuspocus') {
  const socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name: room, document: doc, onSynced: writeOnce })
  provider.attach()
} else {
  console.error(`unknown client kind ${kind}`)
  process.exit(2)
}
