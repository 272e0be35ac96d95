// The history routes of the node's REST API, as the editor page calls them.
//
// Every request carries the page's token as `Authorization: Bearer` (the
// API takes no `?token=`; an open node needs none) and gives up after
// REQUEST_TIMEOUT_MS, so a stalled node never leaves the panel waiting.
// A refusal becomes an `ApiError` whose message is meant for the user.

/** How long one request may take before the page reports it failed. */
const REQUEST_TIMEOUT_MS = 10000

/** A refused or failed request, with a message to show. */
export class ApiError extends Error {
  constructor (status, message) {
    super(message)
    this.name = 'ApiError'
    this.status = status
  }
}

/** What the user is told for a refusal, by status; others show the server's details. */
function refusalMessage (status, details) {
  switch (status) {
    case 401: return 'The server refused this page\'s token. Open the page with ?token=<a JWT for this document>.'
    case 403: return `Not allowed: ${details || 'this page\'s token does not grant it'}.`
    case 501: return 'History is off on this node.'
    case 503: return 'The node is busy or not ready; try again in a moment.'
    default: return details ? `${details} (${status})` : `The request failed (${status}).`
  }
}

async function refusal (response) {
  let details = ''
  try {
    const body = await response.json()
    details = String(body?.error?.details || body?.error?.message || '')
  } catch { /* not the JSON error body */ }
  return new ApiError(response.status, refusalMessage(response.status, details))
}

/** The history routes of one document, authenticated with `token`. */
export class HistoryApi {
  constructor (docName, token) {
    this.base = `/api/documents/${encodeURIComponent(docName)}`
    this.token = token
  }

  async request (path, { method = 'GET', body, accept = 'application/json' } = {}) {
    const headers = { accept }
    if (this.token) headers.authorization = `Bearer ${this.token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    let response
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      })
    } catch (err) {
      const why = err?.name === 'TimeoutError' ? 'the node did not answer in time' : 'the node could not be reached'
      throw new ApiError(0, `Request failed: ${why}.`)
    }
    if (!response.ok) throw await refusal(response)
    return response
  }

  /** The newest `limit` versions: `{ versions, next }`. */
  async versions (limit) {
    const response = await this.request(`/versions?limit=${limit}`)
    return response.json()
  }

  /** Names the document as it is now; resolves to the new version. */
  async nameVersion (name) {
    const response = await this.request('/versions', { method: 'POST', body: { name } })
    return response.json()
  }

  /** The document at version `id`, as one Yjs update. */
  async documentAt (id) {
    const response = await this.request(`?version=${encodeURIComponent(id)}`, { accept: 'application/octet-stream' })
    return new Uint8Array(await response.arrayBuffer())
  }

  /** Restores version `id`; resolves to the version the restore leaves. */
  async restore (id) {
    const response = await this.request('/restore', { method: 'POST', body: { version: id } })
    return response.json()
  }
}
