// The y-websocket (Node) side of test_pycrdt.py: joins ROOM on URL, writes
// "from yjs;", waits (bounded) for "from pycrdt;", prints the text as JSON
// and exits 0; exits 1 on timeout.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [url, room] = process.argv.slice(2)
const TIMEOUT_MS = 10000
const doc = new Y.Doc()
const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
const text = doc.getText('text')
const timer = setTimeout(() => {
  console.error(`timed out; text: ${JSON.stringify(text.toString())}`)
  process.exit(1)
}, TIMEOUT_MS)
provider.once('sync', () => text.insert(text.length, 'from yjs;'))
const check = () => {
  if (text.toString().includes('from pycrdt;')) {
    clearTimeout(timer)
    console.log(JSON.stringify({ text: text.toString() }))
    provider.destroy()
    process.exit(0)
  }
}
doc.on('update', check)
