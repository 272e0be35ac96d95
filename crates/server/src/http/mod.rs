//! The HTTP server of a node's listener: accepts connections, bounds the
//! ones that have not upgraded yet, and serves each with hyper.
//!
//! `axum::serve` holds a connection that sends half a request for as long
//! as the client likes and counts it against nothing, so a few thousand
//! such connections from one address exhaust the node's file descriptors
//! (slowloris). This server adds, per connection:
//!
//! - a header deadline (`--http-header-timeout`): a request head must be
//!   complete this long after the connection is accepted, or after its first
//!   byte on a keep-alive connection;
//! - an idle deadline (`--http-idle-timeout`) between two requests of a
//!   keep-alive connection;
//! - a cap on connections that have not upgraded, per address
//!   (`--max-pending-connections-per-ip`) and in all
//!   (`--max-pending-connections`). A connection over a cap gets a `503`
//!   written without waiting and is closed at once.
//!
//! Once a connection becomes a WebSocket none of this applies: sessions
//! have their own heartbeats and admission.
//!
//! # Layout
//!
//! - `pending`: the counts of pending connections.
//! - `activity`: a connection's phase (reading a head, busy, idle) and its
//!   deadline.

mod activity;
mod pending;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::{Listener, ListenerExt};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use self::activity::{Activity, Deadline, Watched};
use self::pending::{PendingConnections, PendingPermit, PendingRefusal};

/// How long a refused connection's answer may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a refused connection is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 111\r\n\r\n\
{\"error\":{\"code\":503,\"message\":\"too many connections\",\"details\":\"too many unfinished requests; retry shortly\"}}";

/// The bounds on connections that have not upgraded.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must be complete this long after it starts.
    pub header_timeout: Duration,
    /// A keep-alive connection may wait this long between requests.
    pub idle_timeout: Duration,
    /// Connections not yet upgraded, in all (0: no limit).
    pub max_pending: usize,
    /// Connections not yet upgraded from one address (0: no limit).
    pub max_pending_per_ip: usize,
}

/// The HTTP server's metrics.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    /// `weft_http_pending_connections`: connections not yet upgraded.
    pub pending: Gauge,
    /// `weft_http_connections_refused_total{limit="node"|"address"}`.
    pub refused: Family<RefusedLabel, Counter>,
    /// `weft_http_connections_timed_out_total{phase="header"|"idle"}`.
    pub timed_out: Family<PhaseLabel, Counter>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RefusedLabel {
    /// `node` or `address`.
    pub limit: &'static str,
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PhaseLabel {
    /// `header` or `idle`.
    pub phase: &'static str,
}

impl HttpMetrics {
    /// Registers the metrics in `registry` (names without `weft_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "http_pending_connections",
            "Connections accepted that have not upgraded to a WebSocket nor closed",
            self.pending.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections closed at accept because too many had not upgraded (limit: node or address)",
            self.refused.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "Connections closed because a request head took too long (header) or a keep-alive connection sat idle (idle)",
            self.timed_out.clone(),
        );
    }
}

/// Serves `router` on a TCP `listener` until `stop` (see [`serve`]), with
/// `TCP_NODELAY` on each connection: Yjs frames are small and
/// latency-bound, and without it Nagle's algorithm and the peer's delayed
/// ACK hold a frame back ~40 ms.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(error = %error, "set TCP_NODELAY");
        }
    });
    serve(listener, router, limits, metrics, stop).await
}

/// Serves `router` on `listener` (plain TCP, or a listener that hands
/// over TLS streams) until `stop`, then waits for the connections not yet
/// upgraded to finish (idle ones close at once). Accept errors are the
/// listener's to handle (axum's TCP listener pauses and retries).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let pending = PendingConnections::new(limits.max_pending, limits.max_pending_per_ip);
    let connections = TaskTracker::new();
    loop {
        let (io, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let permit = match pending.admit(remote.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                connections.spawn(refuse(io, refusal, metrics.clone()));
                continue;
            }
        };
        metrics.pending.set(gauge_value(pending.total()));
        let connection = Connection {
            router: router.clone(),
            limits,
            metrics: metrics.clone(),
            stop: stop.clone(),
            remote,
        };
        let pending = pending.clone();
        let gauge = metrics.pending.clone();
        connections.spawn(async move {
            connection.serve(io, permit).await;
            gauge.set(gauge_value(pending.total()));
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Tells a refused connection why (within [`REFUSAL_WRITE_TIMEOUT`]: it
/// fits any socket buffer), then closes it.
async fn refuse<Io: AsyncWrite + Unpin>(mut io: Io, refusal: PendingRefusal, metrics: HttpMetrics) {
    metrics
        .refused
        .get_or_create(&RefusedLabel {
            limit: refusal.label(),
        })
        .inc();
    // Best effort: if it does not go out, the close says enough.
    let _written = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, io.write_all(REFUSAL)).await;
}

/// One accepted connection.
struct Connection {
    router: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    stop: CancellationToken,
    remote: SocketAddr,
}

impl Connection {
    /// Serves the connection until it closes, upgrades, or misses a
    /// deadline (then it is dropped, which closes it).
    async fn serve<Io>(self, io: Io, permit: PendingPermit)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let io = TokioIo::new(Watched::new(io, activity.clone()));
        let router = self.router;
        let remote = self.remote;
        let requests = activity.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let guard = requests.request();
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                drop(guard);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The deadlines are ours (see `activity`): hyper's would also
            // cut the idle wait between two requests.
            .header_read_timeout(None)
            .keep_alive(true);
        let mut connection = pin!(builder.serve_connection(io, service).with_upgrades());
        let mut stopping = false;
        loop {
            let deadline = activity.deadline(self.limits.header_timeout, self.limits.idle_timeout);
            let (at, phase) = match deadline {
                Deadline::Head(at) => (Some(at), "header"),
                Deadline::Idle(at) => (Some(at), "idle"),
                Deadline::None => (None, ""),
            };
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        debug!(error = %error, peer = %remote, "HTTP connection ended with an error");
                    }
                    break;
                }
                () = self.stop.cancelled(), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.changed() => {}
                () = sleep_until(at) => {
                    // The phase may have changed just now: only a deadline
                    // still in force closes the connection.
                    if activity.deadline(self.limits.header_timeout, self.limits.idle_timeout) == deadline {
                        self.metrics.timed_out.get_or_create(&PhaseLabel { phase }).inc();
                        debug!(peer = %remote, phase, "HTTP connection closed: deadline passed");
                        break;
                    }
                }
            }
        }
        activity.finish();
        drop(permit);
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The refusal's `content-length` matches its body.
#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSAL).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
