//! Limits and timers of the gateway.

use std::time::Duration;

/// How sessions are bounded. Every field has a `weft serve` flag.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest WebSocket message accepted from a client; a larger one closes
    /// the session with 1009. It must fit a client's initial SyncStep2, which
    /// can be the whole document.
    pub max_message_bytes: usize,
    /// Frames queued per session before the client counts as too slow and is
    /// disconnected (1013). Bounds memory per session.
    pub send_queue_frames: usize,
    /// Bytes queued per session (not yet written to the kernel, the
    /// WebSocket write buffer included) before the client counts as too slow
    /// and is disconnected (1013). A frame is charged in full to every
    /// session that queues it, though sessions share its bytes. A session
    /// with nothing queued still takes one frame of any size, so a frame up
    /// to `max_message_bytes` reaches a client that keeps up.
    pub send_queue_bytes: usize,
    /// How often the server pings an idle client.
    pub heartbeat_interval: Duration,
    /// A session that sends nothing (not even a pong) for this long is
    /// considered dead and dropped.
    pub heartbeat_timeout: Duration,
    /// A session that sends no message (pongs do not count) for this long is
    /// closed (1001). y-websocket clients renew their awareness every 15 s,
    /// so a live editor is never idle by this measure.
    pub idle_timeout: Duration,
    /// Updates one session may send per second (token bucket, burst twice
    /// that); past it the session is closed with 1008 and the client
    /// re-syncs on reconnect. 0 disables the limit.
    pub max_updates_per_second: u32,
    /// Origins allowed to open sessions (exact `Origin` header values),
    /// against cross-site WebSocket hijacking. Empty: any origin. Requests
    /// without an `Origin` header (non-browser clients) are not affected.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            send_queue_frames: 1024,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(75),
            idle_timeout: Duration::from_secs(600),
            max_updates_per_second: 200,
            allowed_origins: Vec::new(),
        }
    }
}

/// The default of `--send-queue-bytes`: 4 MiB, about 70 updates of 60 KiB
/// or thousands of keystrokes, seconds of a busy document for a client that
/// is only slow. 1,000 clients that stopped reading are charged at most
/// 4 GiB together (and cost far less: they share frames), where the frame
/// bound alone let each hold 1,024 frames of 60 KiB, 60 MiB. A single larger
/// frame (up to `--max-message-bytes`, 16 MiB) still goes to a session whose
/// queue is empty, so the bound never refuses a document's state to a new
/// client; a bound of 16 MiB or more would instead let every stalled client
/// hold a whole largest message besides what it has queued.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// tungstenite's read buffer is 128 KiB per connection by default, most of
/// the memory of an idle session; Yjs frames of an idle editor are tiny.
/// The buffer grows on demand for a larger message, but it is also the most
/// tungstenite reads per system call: 1 KiB reads a 16 MiB update in 16,384
/// reads (tens of milliseconds on loopback, small beside applying it), and
/// keeps 3 KiB per idle session that 4 KiB held.
pub const READ_BUFFER_BYTES: usize = 1024;

/// Frames are written as soon as they are queued (the writer batches the
/// frames already waiting before it flushes), so no write buffer is held.
pub const WRITE_BUFFER_BYTES: usize = 0;

/// Updates a session may have in the committer at once before it stops
/// reading its socket (TCP backpressure on a client that writes faster than
/// the store commits).
pub const MAX_UPDATES_IN_FLIGHT: usize = 64;

/// How long a closing session may take to write its close frame and the
/// frames queued before it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Outbound messages larger than this are sent as WebSocket fragments of
/// this size, each a slice of the shared message: a session's write buffer
/// then holds about one fragment, not a copy of the whole message.
pub const FRAGMENT_BYTES: usize = 64 * 1024;

/// The longest document name accepted, in bytes (after URL-decoding).
pub const MAX_DOC_NAME_BYTES: usize = 1024;

/// Seconds a client refused with 503 is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

/// Largest request body any plain-HTTP route but an update's accepts
/// (documents are edited over WebSocket); a request declaring a larger one
/// is refused with 413 before anything reads it.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;
