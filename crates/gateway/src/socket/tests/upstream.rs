//! Per-document forwarding on a Hocuspocus socket, against a stand-in
//! owner on loopback: the client's auth frame and later frames go up as
//! they came, with the cluster secret on the upgrade; the owner's frames
//! reach the client's outbox; the owner closing ends the socket.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::super::upstream::{ClientOutbox, Forwarder, Placement, Upstreams};
use super::*;
use crate::cluster::{CLUSTER_SECRET_HEADER, ClusterRoutes, ClusterView, Ownership, Route};
use crate::upgrade::socket_config;

#[derive(Debug)]
struct OwnedAt(String);

impl ClusterRoutes for OwnedAt {
    fn route(&self, doc: &str) -> Route {
        if doc == "mine" {
            Route::Here
        } else {
            Route::Forward(self.0.clone())
        }
    }
    fn partition_of(&self, _doc: &str) -> Option<i32> {
        Some(0)
    }
    fn view(&self) -> ClusterView {
        ClusterView {
            generation: 1,
            nodes: Vec::new(),
        }
    }
}

// tungstenite's handshake callback returns its own (large) error type.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn a_forwarded_document_is_relayed_both_ways_and_the_owners_close_ends_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen_sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let owner = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut secret = None;
        let mut socket =
            tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
                secret = request
                    .headers()
                    .get(CLUSTER_SECRET_HEADER)
                    .map(|value| value.to_str().unwrap().to_owned());
                Ok(response)
            })
            .await
            .unwrap();
        seen_sender
            .send(secret.unwrap_or_default().into_bytes())
            .unwrap();
        for _ in 0..2 {
            let Some(Ok(WsMessage::Binary(frame))) = socket.next().await else {
                panic!("the owner expected two frames");
            };
            seen_sender.send(frame.to_vec()).unwrap();
        }
        socket
            .send(WsMessage::Binary(b"from the owner".to_vec().into()))
            .await
            .unwrap();
        socket.close(None).await.unwrap();
    });
    let registry = registry();
    let forwarder = Forwarder {
        ownership: Ownership::new(Arc::new(OwnedAt(address)), "s3cret"),
        path: "/".to_owned(),
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        socket_config: socket_config(1 << 20),
        metrics: Arc::new(Metrics::new(registry)),
    };
    let outbox = SocketOutbox::new(16, 1 << 20);
    let client = ClientOutbox {
        frames: outbox.frames.clone(),
        queued: outbox.queued.clone(),
        overflowed: outbox.overflowed.clone(),
    };
    let mut receiver = outbox.receiver;
    let mut upstreams = Upstreams::default();
    let headers = axum::http::HeaderMap::new();
    let here = upstreams
        .place(
            &forwarder,
            &headers,
            &client,
            "mine",
            "mine",
            Bytes::from_static(b"x"),
        )
        .await;
    assert!(
        matches!(here, Placement::Here),
        "a document owned here is not forwarded"
    );
    let placed = upstreams
        .place(
            &forwarder,
            &headers,
            &client,
            "theirs",
            "theirs",
            Bytes::from_static(b"auth"),
        )
        .await;
    assert!(matches!(placed, Placement::Forwarded));
    assert!(upstreams.is_forwarded("theirs") && !upstreams.is_forwarded("mine"));
    assert!(
        upstreams
            .relay("theirs", Bytes::from_static(b"update"))
            .await
    );
    assert_eq!(seen.recv().await.unwrap(), b"s3cret");
    assert_eq!(seen.recv().await.unwrap(), b"auth");
    assert_eq!(seen.recv().await.unwrap(), b"update");
    assert_eq!(&receiver.recv().await.unwrap()[..], b"from the owner");
    std::future::poll_fn(|context| upstreams.poll_ended(context)).await;
    owner.await.unwrap();
    assert_eq!(forwarder.metrics.forwards.get(), 1);
}
