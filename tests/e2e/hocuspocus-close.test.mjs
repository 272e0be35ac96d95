// A Hocuspocus socket the server closes while its provider is still
// sending gets the close code, not a connection reset (1006): the server
// reads and drops the client's input until the close handshake ends, as on
// the y-websocket path. Seen under the broker fault suite (a 1011 arriving
// as 1006 at a provider that kept editing) and reproduced here with the
// update-rate limit (1008), which closes a socket exactly while it sends.

import assert from 'node:assert/strict'
import * as hocuspocus from '@hocuspocus/provider'
import { e2e, startWeft, within, Y, WebSocket } from '../lib/harness.mjs'

const ROUNDS = 5

e2e('hocuspocus: a socket closed while its provider keeps sending gets the close code (1008), not a reset', { timeout: 60000 }, async (t) => {
  const server = await startWeft(t, { args: ['--max-updates-per-second', '20'] })
  const codes = []
  for (let round = 0; round < ROUNDS; round++) {
    let closed
    const firstClose = new Promise((resolve) => { closed = resolve })
    // The first close this provider's socket sees (it then retries).
    class Tracked extends WebSocket {
      constructor (url, protocols) {
        super(url, protocols)
        this.on('close', (code) => closed(code))
      }
    }
    const socket = new hocuspocus.HocuspocusProviderWebsocket({ url: server.wsUrl, WebSocketPolyfill: Tracked, maxAttempts: 1 })
    const doc = new Y.Doc()
    const provider = new hocuspocus.HocuspocusProvider({ websocketProvider: socket, name: `flood/${round}`, document: doc })
    provider.attach()
    t.after(() => { provider.destroy(); socket.destroy() })
    const synced = await within(new Promise((resolve) => provider.on('synced', () => resolve(true))), 10000, false)
    assert.ok(synced, `round ${round}: the provider synced`)
    // 50 updates every 5 ms, well over the limit: the server closes the
    // socket while more are on their way.
    const flood = setInterval(() => { for (let i = 0; i < 50; i++) doc.getArray('array').push([i]) }, 5)
    const code = await within(firstClose, 10000, 'no close within 10 s')
    clearInterval(flood)
    codes.push(code)
    provider.destroy()
    socket.destroy()
  }
  assert.deepEqual(codes, Array(ROUNDS).fill(1008), 'every flooding socket was told why it was closed')
})
