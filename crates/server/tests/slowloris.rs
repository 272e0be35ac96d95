//! Connections that never finish their request (slowloris): many
//! half-open requests from one address neither keep another client from
//! connecting and editing nor outlive `--http-header-timeout`.
//!
//! `make test` opens 2,000 of them; `WEFT_SLOWLORIS_CONNECTIONS=19000`
//! (`make test-long`) opens nearly as many as the open-files limit allows
//! the test process, which raises its own soft limit to the hard one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{SinkExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_server::cli::{Cli, Command};
use weft_server::{Listeners, Node, NodeConfig, NodeHandle};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

/// Upper bound of every wait for something the node should do at once.
const WAIT: Duration = Duration::from_secs(20);
/// `--http-header-timeout` of the test node.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// `--max-pending-connections-per-ip` of the test node.
const PER_IP: usize = 256;
/// How much later than its deadline a connection may be seen closed: the
/// node accepts from a backlog of thousands on a shared machine.
const SLACK: Duration = Duration::from_secs(5);
/// The attacker's address; the legitimate client is on 127.0.0.1.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Half a request: the head never ends.
const HALF_REQUEST: &[u8] = b"GET /victim HTTP/1.1\r\nHost: weft\r\nUpgrade: websocket\r\n";

async fn bounded<F: Future>(what: &str, wait: Duration, future: F) -> F::Output {
    match tokio::time::timeout(wait, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {wait:?} waiting for {what}"),
    }
}

/// Raises this process's soft open-files limit to its hard one, with the
/// `prlimit` tool (the workspace forbids the `unsafe` a direct call needs).
fn raise_open_files_limit() {
    let pid = std::process::id().to_string();
    let hard = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--output",
            "HARD",
            "--noheadings",
        ])
        .output()
        .expect("run prlimit (util-linux)");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("run prlimit");
    assert!(
        status.success(),
        "raise the soft open-files limit to {hard}"
    );
}

async fn start_node(store_url: &str, flags: &[&str]) -> NodeHandle {
    let mut argv = vec!["weft", "serve", "--store", store_url];
    argv.extend_from_slice(flags);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than serve");
    };
    let config = NodeConfig::from_args(&args).expect("valid settings");
    let listeners = Listeners {
        http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        metrics: None,
    };
    let node = bounded("the node to start", WAIT, Node::start(config, listeners))
        .await
        .expect("node starts");
    bounded("the node to be ready", WAIT, node.ready())
        .await
        .expect("ready");
    node
}

/// A half-open request from [`ATTACKER`], watched from its opening to its
/// end by a task of its own (see [`ending`]).
async fn half_open(node: SocketAddr) -> tokio::task::JoinHandle<(bool, Duration)> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(ATTACKER, 0))
        .expect("bind 127.0.0.2");
    let opened = Instant::now();
    let mut stream = socket.connect(node).await.expect("connect");
    // A refused connection may be closed before this is written.
    let _sent = stream.write_all(HALF_REQUEST).await;
    tokio::spawn(ending(stream, opened))
}

/// How a half-open request ended: the node's 503 (refused at accept) or a
/// close with nothing said (the header deadline), and after how long.
async fn ending(mut stream: TcpStream, opened: Instant) -> (bool, Duration) {
    let mut answer = Vec::new();
    let deadline = HEADER_TIMEOUT + WAIT;
    // An error (reset) ends it as well as an end of stream.
    let _read = bounded("the node to close a half-open request", deadline, async {
        stream.read_to_end(&mut answer).await
    })
    .await;
    (answer.starts_with(b"HTTP/1.1 503"), opened.elapsed())
}

fn typed(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let content = doc.get_or_insert_text("content");
    content.insert(&mut doc.transact_mut(), 0, text);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut frame = vec![0, 2];
    let mut length = update.len();
    loop {
        let low = u8::try_from(length & 0x7f).expect("seven bits");
        length >>= 7;
        if length == 0 {
            frame.push(low);
            break;
        }
        frame.push(low | 0x80);
    }
    frame.extend_from_slice(&update);
    frame
}

/// Two y-websocket clients from 127.0.0.1: one edits, the other sees it.
async fn connect_and_edit(node: SocketAddr) {
    let url = format!("ws://{node}/victim");
    let (mut writer, _) = bounded("an upgrade", WAIT, connect_async(&url))
        .await
        .expect("the legitimate writer gets in");
    let (mut reader, _) = bounded("an upgrade", WAIT, connect_async(&url))
        .await
        .expect("the legitimate reader gets in");
    writer
        .send(WsMessage::Binary(typed("still here").into()))
        .await
        .expect("send the edit");
    bounded("the edit to reach the other client", WAIT, async {
        while let Some(message) = reader.try_next().await.expect("a frame") {
            if let WsMessage::Binary(bytes) = message
                && bytes.starts_with(&[0, 2])
            {
                return;
            }
        }
        panic!("the session ended before the edit arrived");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_neither_block_others_nor_outlive_the_header_timeout() {
    let count: usize = std::env::var("WEFT_SLOWLORIS_CONNECTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000);
    raise_open_files_limit();
    let scratch = std::env::temp_dir().join(format!("weft-slowloris-{}", std::process::id()));
    let store_url = format!("sqlite://{}/weft.db", scratch.display());
    let header_timeout = format!("{}s", HEADER_TIMEOUT.as_secs());
    let per_ip = PER_IP.to_string();
    let flags = [
        "--http-header-timeout",
        &header_timeout,
        "--max-pending-connections-per-ip",
        &per_ip,
    ];
    let node = start_node(&store_url, &flags).await;
    let address = node.local_addr();

    let mut opening = futures::stream::iter(0..count)
        .map(|_| half_open(address))
        .buffer_unordered(512);
    let opening_started = Instant::now();
    let mut watched = Vec::with_capacity(count);
    while let Some(opened) = bounded("half-open requests", WAIT, opening.next()).await {
        watched.push(opened);
    }
    assert_eq!(watched.len(), count);
    // A held request frees its slot at its deadline: while the requests
    // were being opened, up to this many sets of PER_IP could be held.
    let opening_duration = opening_started.elapsed();
    let generations =
        usize::try_from(opening_duration.as_millis() / HEADER_TIMEOUT.as_millis() + 1)
            .expect("a small number");

    // While the attacker's requests are held, another client connects and
    // edits, and plain HTTP still answers.
    let started = Instant::now();
    connect_and_edit(address).await;
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "the legitimate client got in while the half-open requests were held"
    );

    let mut endings: FuturesUnordered<_> = watched.into_iter().collect();
    // A refused request may see its 503, or a reset if its half request
    // reached the node before the close: either way it ends at once.
    let mut answered_503 = 0;
    let mut held = 0;
    let mut longest = Duration::ZERO;
    while let Some(ended) = endings.next().await {
        let (saw_503, after) = ended.expect("the watching task ends");
        answered_503 += usize::from(saw_503);
        if after >= HEADER_TIMEOUT - Duration::from_millis(100) {
            held += 1;
        }
        longest = longest.max(after);
    }
    eprintln!(
        "{count} half-open requests opened in {:?}: {held} held until the deadline, {answered_503} told 503, the longest lasted {longest:?}",
        opening_duration
    );
    assert!(
        (1..=PER_IP * generations).contains(&held),
        "up to {PER_IP} requests from one address are held at a time until the header deadline; {held} were over {generations} deadline(s)"
    );
    assert!(
        longest < HEADER_TIMEOUT + SLACK,
        "no half-open request outlives the header deadline by more than {SLACK:?}; one lasted {longest:?}"
    );
    assert!(
        answered_503 > 0,
        "requests over the per-address cap are told 503"
    );
    node.shutdown(WAIT).await.expect("drain");
    let _gone = std::fs::remove_dir_all(&scratch);
}

/// Reads one response to a keep-alive `GET /healthz` (its head and a
/// body of `content-length` bytes).
async fn one_response(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: weft\r\n\r\n")
        .await
        .expect("send a request");
    let mut received = Vec::new();
    bounded("a response", WAIT, async {
        loop {
            let mut chunk = [0_u8; 1024];
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "the connection closed before its response");
            received.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return;
                }
            }
        }
    })
    .await;
}

/// Waits for the node to close `stream`; returns how long that took.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut rest = Vec::new();
    let _read = bounded(
        "the node to close the connection",
        WAIT,
        stream.read_to_end(&mut rest),
    )
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_get_the_idle_timeout_then_the_header_one() {
    const HEADER: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_secs(3);
    let scratch = std::env::temp_dir().join(format!("weft-idle-{}", std::process::id()));
    let store_url = format!("sqlite://{}/weft.db", scratch.display());
    let flags = ["--http-header-timeout", "1s", "--http-idle-timeout", "3s"];
    let node = start_node(&store_url, &flags).await;

    // Idle after a response: closed at the idle deadline, not the header one.
    let mut idle = TcpStream::connect(node.local_addr())
        .await
        .expect("connect");
    one_response(&mut idle).await;
    let answered = Instant::now();
    let after = closed_after(&mut idle, answered).await;
    assert!(
        after >= IDLE - Duration::from_millis(100) && after < IDLE + SLACK,
        "an idle keep-alive connection is closed after {IDLE:?}, this one after {after:?}"
    );

    // A second request started but not finished: the header deadline runs
    // from its first byte.
    let mut slow = TcpStream::connect(node.local_addr())
        .await
        .expect("connect");
    one_response(&mut slow).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("send half a head");
    let started = Instant::now();
    let after = closed_after(&mut slow, started).await;
    assert!(
        after >= HEADER - Duration::from_millis(100) && after < IDLE,
        "a half head is closed {HEADER:?} after its first byte, this one after {after:?}"
    );
    node.shutdown(WAIT).await.expect("drain");
    let _gone = std::fs::remove_dir_all(&scratch);
}
