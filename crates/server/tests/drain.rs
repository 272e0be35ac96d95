//! A node started as a library, on the embedded SQLite store in a scratch
//! directory and a loopback listener, drains in order: readiness off and
//! upgrades refused, sessions closed with 1012, commits flushed, snapshots
//! written, exit within the grace.
//!
//! Each step is observed from outside where it can be (HTTP, the clients'
//! close frames, the store while the drain is held at a phase), and the
//! order through the phases the node's handle reports. Every wait is
//! bounded; nothing waits on a sleep. Once the drain returned, the node's
//! task tracker is closed and empty, also for a node on a Kafka broker
//! (`WEFT_TEST_KAFKA`), whose bus runs its tasks on that tracker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use weft_server::cli::{Cli, Command};
use weft_server::{DrainPhase, Listeners, Node, NodeConfig, NodeHandle};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Upper bound of every single wait for something the node should do.
const WAIT: Duration = Duration::from_secs(10);

/// The shared text every test client edits.
const TEXT: &str = "content";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A scratch directory for one test's store, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-server-{name}-{}", std::process::id()));
        let _absent = std::fs::remove_dir_all(&path);
        Self(path)
    }

    fn store_url(&self) -> String {
        format!("sqlite://{}/weft.db", self.0.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

/// A node on `store_url` and `127.0.0.1:0`, configured as `weft serve`
/// with `extra` flags would be. Snapshots are due only at shutdown, so the
/// one the test finds afterwards was written by the drain.
async fn start_node(store_url: &str, extra: &[&str]) -> NodeHandle {
    let config = node_config(store_url, extra);
    assert!(
        config.kafka.is_none(),
        "the test node runs on its embedded store"
    );
    start_configured(config).await
}

/// The settings `weft serve` with `extra` flags would run a node on
/// `store_url` with.
fn node_config(store_url: &str, extra: &[&str]) -> NodeConfig {
    let mut argv = vec![
        "weft",
        "serve",
        "--store",
        store_url,
        "--snapshot-debounce",
        "1h",
        "--snapshot-max-delay",
        "1h",
    ];
    argv.extend_from_slice(extra);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than serve");
    };
    NodeConfig::from_args(&args).expect("valid settings")
}

/// A node with `config` on `127.0.0.1:0`, once it is ready.
async fn start_configured(config: NodeConfig) -> NodeHandle {
    let listeners = Listeners {
        http: TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0"),
        metrics: None,
    };
    let node = bounded("the node to start", Node::start(config, listeners))
        .await
        .expect("node starts");
    bounded("the node to be ready", node.ready())
        .await
        .expect("the node gets ready");
    node
}

/// The status code of `GET path`, over a fresh connection.
async fn http_status(node: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = bounded("an HTTP connection", TcpStream::connect(node))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {node}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut response = Vec::new();
    bounded("an HTTP response", stream.read_to_end(&mut response))
        .await
        .expect("read the response");
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status line in {text:?}"))
}

/// A y-websocket session on document `doc`.
async fn connect(node: std::net::SocketAddr, doc: &str) -> Socket {
    let (socket, _response) = bounded("the upgrade", connect_async(format!("ws://{node}/{doc}")))
        .await
        .expect("upgrade accepted");
    socket
}

/// A y-websocket sync `Update` frame: message type 0 (sync), sync type 2
/// (update), then the update's length as a varint and its bytes.
fn update_frame(update: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 2];
    let mut length = update.len();
    loop {
        let low = u8::try_from(length & 0x7f).expect("seven bits fit a byte");
        length >>= 7;
        if length == 0 {
            frame.push(low);
            break;
        }
        frame.push(low | 0x80);
    }
    frame.extend_from_slice(update);
    frame
}

/// The update a client sends when it types `text` into an empty document.
fn typed(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let content = doc.get_or_insert_text(TEXT);
    content.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Reads `socket` until a frame that starts with `prefix` (bounded).
async fn read_until_frame(socket: &mut Socket, prefix: &[u8]) {
    bounded("a frame from the node", async {
        while let Some(message) = socket.next().await {
            if let WsMessage::Binary(bytes) = message.expect("a frame")
                && bytes.starts_with(prefix)
            {
                return;
            }
        }
        panic!("the session ended before a frame starting with {prefix:?}");
    })
    .await;
}

/// The payload of the ping that follows the update.
const PAST_THE_UPDATE: &[u8] = b"past the update";

/// Reads `socket` until the pong that answers `payload` (bounded).
async fn read_until_pong(socket: &mut Socket, payload: &[u8]) {
    bounded("the pong", async {
        while let Some(message) = socket.next().await {
            if let WsMessage::Pong(bytes) = message.expect("a frame")
                && bytes.as_ref() == payload
            {
                return;
            }
        }
        panic!("the session ended before the pong");
    })
    .await;
}

/// Reads `socket` until its close frame and returns the close code, then
/// reads on to the end of the stream, which sends the client's answer to
/// the close (the node waits for it before it counts the session closed).
async fn close_code(socket: &mut Socket) -> Option<u16> {
    bounded("the close frame and the end of the session", async {
        let mut code = None;
        while let Some(message) = socket.next().await {
            match message {
                Ok(WsMessage::Close(frame)) => code = frame.map(|frame| u16::from(frame.code)),
                Ok(_) => {}
                Err(error) => panic!("the session failed before its close frame: {error}"),
            }
        }
        code
    })
    .await
}

/// The text of `doc` as the store holds it: its snapshot and the logged
/// updates after it, and whether a snapshot held it all.
async fn stored_text(store_url: &str, doc: &str) -> (String, bool, usize) {
    let store = weft_persistence::open_store(store_url)
        .await
        .expect("open the store");
    let stored = store.load(doc).await.expect("load the document");
    let replica = Doc::new();
    let content = replica.get_or_insert_text(TEXT);
    let mut txn = replica.transact_mut();
    if let Some(snapshot) = &stored.snapshot {
        let update = Update::decode_v1(&snapshot.state).expect("a stored snapshot decodes");
        txn.apply_update(update).expect("the snapshot applies");
    }
    for logged in &stored.updates {
        let update = Update::decode_v1(&logged.update).expect("a logged update decodes");
        txn.apply_update(update).expect("the update applies");
    }
    (
        content.get_string(&txn),
        stored.snapshot.is_some(),
        stored.updates.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_order_within_the_grace() {
    const DOC: &str = "drained";
    const GRACE: Duration = Duration::from_secs(20);
    let scratch = Scratch::new("drain-order");
    let store_url = scratch.store_url();
    // A commit window longer than the test: an update reaches the store
    // only through the drain's flush.
    let mut node = start_node(&store_url, &["--commit-window", "1h"]).await;
    let address = node.local_addr();
    let tracker = node.tasks();
    let mut phases = node.phases();
    // The drain stops at these two phases until the store was looked at.
    let at_commits_flushed = node.hold_at(DrainPhase::CommitsFlushed);
    let at_snapshots_written = node.hold_at(DrainPhase::SnapshotsWritten);
    assert_eq!(*phases.borrow(), DrainPhase::Serving);

    let mut writer = connect(address, DOC).await;
    let mut reader = connect(address, DOC).await;
    read_until_frame(&mut reader, &[0, 0]).await;
    writer
        .send(WsMessage::Binary(update_frame(&typed("hello")).into()))
        .await
        .expect("send the update");
    // A session reads its socket in order and hands an update to the
    // committer before it reads the next frame, so the pong proves the
    // update is queued for commit.
    writer
        .send(WsMessage::Ping(PAST_THE_UPDATE.into()))
        .await
        .expect("send the ping");
    read_until_pong(&mut writer, PAST_THE_UPDATE).await;
    assert_eq!(
        http_status(address, "/readyz").await,
        200,
        "ready while serving"
    );
    let (text, snapshotted, logged) = stored_text(&store_url, DOC).await;
    assert!(
        text.is_empty() && !snapshotted && logged == 0,
        "the edit waits in the committer: not stored before the drain"
    );

    let started = Instant::now();
    let shutdown = tokio::spawn(node.shutdown(GRACE));
    bounded(
        "the drain to start",
        phases.wait_for(|phase| *phase >= DrainPhase::Draining),
    )
    .await
    .expect("the node reports its phases");

    // 1. Readiness off, then 2. upgrades refused. Both while the sessions
    // are still open: the node waits for each client to answer its close
    // frame (up to the gateway's close grace, 2 s), and these clients
    // have not read theirs yet.
    assert_eq!(
        http_status(address, "/readyz").await,
        503,
        "not ready while draining"
    );
    match bounded(
        "the refused upgrade",
        connect_async(format!("ws://{address}/{DOC}")),
    )
    .await
    {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503, "an upgrade while draining");
            assert!(
                response.headers().contains_key("retry-after"),
                "with Retry-After"
            );
        }
        Ok(_) => panic!("an upgrade while draining was accepted"),
        Err(error) => panic!("an upgrade while draining failed without an answer: {error}"),
    }
    assert_eq!(
        *phases.borrow(),
        DrainPhase::Draining,
        "readiness and upgrades turned off before the sessions closed"
    );

    // 3. Sessions closed with 1012 ("service restart").
    assert_eq!(
        close_code(&mut writer).await,
        Some(1012),
        "the writer's close code"
    );
    assert_eq!(
        close_code(&mut reader).await,
        Some(1012),
        "the reader's close code"
    );

    // 4. Commits flushed: the edit is in the log, and no snapshot yet.
    bounded(
        "the commits to be flushed",
        phases.wait_for(|phase| *phase >= DrainPhase::CommitsFlushed),
    )
    .await
    .expect("the node reports its phases");
    assert_eq!(*phases.borrow(), DrainPhase::CommitsFlushed, "held there");
    let (text, snapshotted, logged) = stored_text(&store_url, DOC).await;
    assert_eq!(text, "hello", "the drain committed the queued edit");
    assert!(
        !snapshotted && logged == 1,
        "in the log, not yet in a snapshot (snapshot: {snapshotted}, logged updates: {logged})"
    );
    assert_eq!(
        *phases.borrow(),
        DrainPhase::CommitsFlushed,
        "still held while the store was read"
    );
    at_commits_flushed.release();

    // 5. Snapshots written: a snapshot covers the edit and the log after
    // it is empty.
    bounded(
        "the snapshots to be written",
        phases.wait_for(|phase| *phase >= DrainPhase::SnapshotsWritten),
    )
    .await
    .expect("the node reports its phases");
    assert_eq!(*phases.borrow(), DrainPhase::SnapshotsWritten, "held there");
    let (text, snapshotted, logged) = stored_text(&store_url, DOC).await;
    assert_eq!(text, "hello", "the snapshot holds the edit");
    assert!(
        snapshotted && logged == 0,
        "a snapshot covering it (snapshot: {snapshotted}, updates after it: {logged})"
    );
    at_snapshots_written.release();

    // 6. Stopped, every step in order and within the grace.
    let report = bounded("shutdown to return", shutdown)
        .await
        .expect("the shutdown task")
        .expect("the node drains without error");
    assert_eq!(
        report.phases(),
        [
            DrainPhase::Draining,
            DrainPhase::SessionsClosed,
            DrainPhase::CommitsFlushed,
            DrainPhase::SnapshotsWritten,
            DrainPhase::Stopped
        ]
    );
    assert!(
        report
            .steps
            .windows(2)
            .all(|pair| pair[0].elapsed <= pair[1].elapsed),
        "steps in time order: {report:?}"
    );
    assert!(
        report.elapsed() < GRACE && started.elapsed() < GRACE,
        "{report:?}"
    );
    assert_eq!(*phases.borrow(), DrainPhase::Stopped);
    assert!(
        tracker.is_closed() && tracker.is_empty(),
        "every task of the node ended ({} left)",
        tracker.len()
    );
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed once the node stopped"
    );
    let (text, snapshotted, logged) = stored_text(&store_url, DOC).await;
    assert!(
        text == "hello" && snapshotted && logged == 0,
        "the stopped node left the edit in its snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_its_grace_fails_and_stops_the_node() {
    let scratch = Scratch::new("drain-grace");
    let node = start_node(&scratch.store_url(), &[]).await;
    let address = node.local_addr();
    // A client that never reads keeps its session open until the gateway's
    // close grace (2 s) runs out, longer than this shutdown's grace.
    let mut silent = connect(address, "held").await;
    // The greeting (SyncStep1) comes from the session task: it runs.
    read_until_frame(&mut silent, &[0, 0]).await;
    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = bounded("shutdown to give up", node.shutdown(grace)).await;
    let error = outcome.expect_err("a drain past its grace is an error");
    assert!(
        error.to_string().contains("did not finish within"),
        "the error says the grace ran out: {error:#}"
    );
    assert!(
        started.elapsed() < grace + WAIT / 2,
        "it gave up at the grace"
    );
}

/// The broker `make unit` started (`WEFT_TEST_KAFKA`); without it the
/// cluster test is skipped locally (and fails under CI).
fn broker() -> Option<String> {
    let address = std::env::var("WEFT_TEST_KAFKA").ok();
    let address = address.filter(|address| !address.is_empty());
    assert!(
        address.is_some() || std::env::var_os("CI").is_none(),
        "WEFT_TEST_KAFKA is not set: `make unit` starts a broker and sets it"
    );
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_ends_every_task_it_started_when_it_drains() {
    let Some(brokers) = broker() else { return };
    let scratch = Scratch::new("drain-cluster");
    let topic = format!("test-drain-{}", std::process::id());
    let kafka = ["--kafka-brokers", &brokers, "--kafka-topic", &topic];
    let config = node_config(&scratch.store_url(), &kafka);
    assert!(config.kafka.is_some(), "the test node runs on Kafka");
    let node = start_configured(config).await;
    let tracker = node.tasks();
    // A session's greeting comes once its document loaded: its partition
    // was replayed and the live consumer reads it.
    let mut session = connect(node.local_addr(), "clustered").await;
    read_until_frame(&mut session, &[0, 0]).await;
    assert!(!tracker.is_empty(), "the node's tasks are on its tracker");

    let shutdown = tokio::spawn(node.shutdown(Duration::from_secs(20)));
    assert_eq!(close_code(&mut session).await, Some(1012));
    let report = bounded("shutdown to return", shutdown)
        .await
        .expect("the shutdown task")
        .expect("the node drains without error");
    assert_eq!(report.phases().last(), Some(&DrainPhase::Stopped));
    assert!(
        tracker.is_closed() && tracker.is_empty(),
        "every task of the node ended, the Kafka bus's included ({} left)",
        tracker.len()
    );
}
