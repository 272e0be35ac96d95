//! The flags of the HTTP server: deadlines and caps for connections that
//! have not upgraded to a WebSocket.

use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;

/// Connections that have not upgraded yet: a client that never finishes its
/// request is closed, and no address holds many such connections.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// A request's head (request line and headers) must be complete this
    /// long after the connection opens, or after the first byte of a
    /// further request on a keep-alive connection; else the connection is
    /// closed.
    #[arg(long, env = "WEFT_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// A plain HTTP keep-alive connection with no request for this long is
    /// closed.
    #[arg(long, env = "WEFT_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Connections not yet upgraded to a WebSocket that the node holds at
    /// once; past it a new connection gets 503 and is closed. 0: no limit.
    #[arg(long, env = "WEFT_MAX_PENDING_CONNECTIONS", default_value_t = 4096)]
    pub max_pending_connections: u64,

    /// Connections not yet upgraded that one client address holds at once;
    /// past it a new connection gets 503 and is closed. 0: no limit.
    #[arg(
        long,
        env = "WEFT_MAX_PENDING_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub max_pending_connections_per_ip: u64,
}
