//! The persistence worker started and stopped as a library, against the
//! broker `make test` starts (`WEFT_TEST_KAFKA`; without it the test is
//! skipped locally and fails under CI) and a SQLite store in a scratch
//! directory. Every wait is bounded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_server::cli::{Cli, Command};
use weft_server::{PersistConfig, Worker};

/// Upper bound of every single wait for something the worker should do.
const WAIT: Duration = Duration::from_secs(30);

/// The broker, or `None` to skip.
fn broker() -> Option<String> {
    match std::env::var("WEFT_TEST_KAFKA") {
        Ok(address) if !address.is_empty() => Some(address),
        _ if std::env::var_os("CI").is_some() => {
            panic!("WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it")
        }
        _ => {
            eprintln!("skipped: set WEFT_TEST_KAFKA=host:port (make test does)");
            None
        }
    }
}

/// A name no other run uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("test-{name}-{}-{nanos}", std::process::id())
}

/// The status code of `GET path`, over a fresh connection.
async fn http_status(address: std::net::SocketAddr, path: &str) -> u16 {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an HTTP answer in time");
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status line in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starts_serves_its_health_and_stops_within_the_grace() {
    let Some(brokers) = broker() else {
        return;
    };
    let directory: PathBuf = std::env::temp_dir().join(unique("persist"));
    let store_url = format!("sqlite://{}/weft.db", directory.display());
    let topic = unique("persist-topic");
    let group = unique("persist-group");
    let argv = [
        "weft",
        "persist",
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &topic,
        "--group",
        &group,
        "--store",
        &store_url,
    ];
    let Command::Persist(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than persist");
    };
    let config = PersistConfig::from_args(&args).expect("valid settings");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let worker = tokio::time::timeout(WAIT, Worker::start(config, listener))
        .await
        .expect("the worker starts in time")
        .expect("the worker starts");
    let address = worker.local_addr();
    assert_eq!(http_status(address, "/healthz").await, 200);

    let grace = WAIT;
    let started = Instant::now();
    tokio::time::timeout(WAIT * 2, worker.shutdown(grace))
        .await
        .expect("shutdown returns")
        .expect("the worker stops cleanly");
    assert!(started.elapsed() < grace, "stopped within the grace");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the worker's listener is closed once it stopped"
    );
    let _gone = std::fs::remove_dir_all(&directory);
}
