//! A node serving `wss://` and `https://` with `--tls-cert`/`--tls-key`:
//! a client trusting the test CA syncs a document and reads `/healthz`;
//! when the files are replaced by a certificate from another CA, new
//! handshakes present it, while a session opened before keeps working.
//!
//! The certificates are made here with rcgen; every wait is bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_server::cli::{Cli, Command};
use weft_server::{Listeners, Node, NodeConfig, NodeHandle};

/// Upper bound of every single wait for something the node should do.
const WAIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-tls-{name}-{}", std::process::id()));
        let _absent = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        Self(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

/// A test certificate authority.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("self-sign the CA");
        Self {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 and its key, as PEM.
    fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        (certificate.pem(), key.serialize_pem())
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(certificate.expect("CA PEM")).expect("add the CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// Writes `cert`/`key` to the files the node watches, key first, each by
/// an atomic rename (as a Secret volume's update is).
fn install(dir: &Scratch, (cert, key): &(String, String)) {
    for (name, text) in [("key.pem", key), ("cert.pem", cert)] {
        let staging = dir.file(&format!("{name}.new"));
        std::fs::write(&staging, text).expect("write the PEM");
        std::fs::rename(&staging, dir.file(name)).expect("rename into place");
    }
}

async fn start_node(dir: &Scratch) -> NodeHandle {
    let store = format!("sqlite://{}/weft.db", dir.0.display());
    let cert = dir.file("cert.pem");
    let key = dir.file("key.pem");
    let argv = [
        "weft",
        "serve",
        "--store",
        &store,
        "--tls-cert",
        cert.to_str().expect("UTF-8 path"),
        "--tls-key",
        key.to_str().expect("UTF-8 path"),
        "--tls-reload-interval",
        "100ms",
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than serve");
    };
    let config = NodeConfig::from_args(&args).expect("valid settings");
    let listeners = Listeners {
        http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
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

async fn handshake(address: SocketAddr, ca: &TestCa) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    ca.connector().connect(name, tcp).await
}

type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// Sends a SyncStep1 and reads until the node's SyncStep2 (tag 0, 1)
/// answers it: the session is served.
async fn sync_round(socket: &mut Socket) {
    bounded(
        "a SyncStep1 to be sent",
        socket.send(WsMessage::binary(SYNC_STEP1.to_vec())),
    )
    .await
    .expect("the session takes frames");
    loop {
        let frame = bounded("a frame from the node", socket.next())
            .await
            .expect("the session stays open")
            .expect("a frame");
        if let WsMessage::Binary(bytes) = frame
            && bytes.starts_with(&[0, 1])
        {
            return;
        }
    }
}

/// A y-websocket SyncStep1 (tag 0, 0) carrying an empty state vector (one
/// byte, no entries).
const SYNC_STEP1: [u8; 4] = [0, 0, 1, 0];

#[tokio::test]
async fn wss_and_https_then_a_reload_keeps_open_sessions() {
    let dir = Scratch::new("reload");
    let first_ca = TestCa::new("weft test CA 1");
    install(&dir, &first_ca.leaf());
    let node = start_node(&dir).await;
    let address = node.local_addr();

    // https: /healthz over TLS.
    let mut tls = bounded("a TLS handshake", handshake(address, &first_ca))
        .await
        .expect("the node's certificate is signed by the first CA");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write the request");
    let mut response = Vec::new();
    bounded("the health answer", tls.read_to_end(&mut response))
        .await
        .expect("read the response");
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    // wss: a session syncs.
    let stream = bounded("a TLS handshake", handshake(address, &first_ca))
        .await
        .expect("handshake");
    let (mut socket, _response) = bounded(
        "the WebSocket upgrade",
        tokio_tungstenite::client_async("wss://localhost/tls-doc", stream),
    )
    .await
    .expect("upgrade over TLS");
    sync_round(&mut socket).await;

    // A plain-text client gets no HTTP answer from the TLS port.
    let mut plain = TcpStream::connect(address).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _read = bounded(
        "the plain connection to end",
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP is not served"
    );

    // Replace the pair with one from a second CA: new handshakes present it.
    let second_ca = TestCa::new("weft test CA 2");
    install(&dir, &second_ca.leaf());
    let started = Instant::now();
    loop {
        if handshake(address, &second_ca).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the new certificate was not presented within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        handshake(address, &first_ca).await.is_err(),
        "the old certificate is no longer presented"
    );

    // The session opened before the reload still works.
    sync_round(&mut socket).await;

    drop(socket);
    bounded("the node to stop", node.shutdown(WAIT))
        .await
        .expect("drains");
}

#[tokio::test]
async fn a_key_that_does_not_match_fails_naming_the_flag() {
    let dir = Scratch::new("mismatch");
    let ca = TestCa::new("weft test CA");
    let (cert, _key) = ca.leaf();
    let (_other_cert, other_key) = ca.leaf();
    install(&dir, &(cert, other_key));
    let cert_path = dir.file("cert.pem");
    let key_path = dir.file("key.pem");
    let argv = [
        "weft",
        "serve",
        "--tls-cert",
        cert_path.to_str().expect("UTF-8"),
        "--tls-key",
        key_path.to_str().expect("UTF-8"),
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than serve");
    };
    let error = NodeConfig::from_args(&args).expect_err("a key of another certificate");
    assert!(format!("{error:#}").contains("--tls-key"), "{error:#}");

    let argv = [
        "weft",
        "serve",
        "--tls-cert",
        "/nonexistent/weft/cert.pem",
        "--tls-key",
        "/nonexistent/weft/key.pem",
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("parsed a subcommand other than serve");
    };
    let error = NodeConfig::from_args(&args).expect_err("no such file");
    assert!(format!("{error:#}").contains("--tls-cert"), "{error:#}");
}
