//! One simulated editor: a WebSocket, a yrs `Doc`, and the y-sync handshake.
//!
//! The client speaks either dialect a measured server offers:
//!
//! - **y-websocket** (Weft at `/{doc}`, `@y/websocket-server`): plain
//!   y-protocols frames;
//! - **Hocuspocus** (`@hocuspocus/server`): every frame starts with the
//!   document name (varstring), the sync reply has its own type (4), and the
//!   server waits for an auth message before it answers anything.
//!
//! Frames are encoded with `weft-protocol`, updates are produced and applied
//! by `yrs`; nothing here re-implements the codec.
//!
//! Writers stamp each update: writer `w` appends `"{seq}:{nanos}"` to its
//! own root array `w{w}`, where `nanos` counts from the driver's start
//! ([`crate::clock`]). A reader that applies an update finds the new entries
//! at the end of each writer's array (one writer per array, so entries never
//! shift) and so knows both which updates it has and how late they came.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_protocol::hocuspocus::encode_addressed;
use weft_protocol::{Message, SyncMessage, decode_frame};
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, Out, ReadTxn, StateVector, Transact, Update};

/// The socket type every client holds.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Hocuspocus message type of a sync reply (y-websocket's sync, answering a
/// step 1); the server sends its SyncStep2 with it.
const HOCUS_SYNC_REPLY: u32 = 4;
/// Hocuspocus message type of auth.
const HOCUS_AUTH: u32 = 2;
/// Hocuspocus auth sub-type of "permission denied".
const HOCUS_AUTH_DENIED: u32 = 1;
/// Read buffer per socket: the driver holds up to tens of thousands of idle
/// sockets, and tungstenite's default (128 KiB) would make the driver, not
/// the server, run out of memory. Frames larger than this still arrive; the
/// buffer only grows for them.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Which framing a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Dialect {
    /// y-websocket: the document is the URL path.
    YWebsocket,
    /// Hocuspocus: one socket at `/`, the document in every frame.
    Hocuspocus,
}

/// Where a client connects.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) dialect: Dialect,
}

/// A connected, synced client.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) socket: Socket,
    pub(crate) doc: Doc,
    pub(crate) doc_name: String,
    pub(crate) dialect: Dialect,
}

impl Client {
    /// Connects from `source` (a 127.0.0.0/8 address, port chosen by the
    /// kernel, so many clients can spread over source addresses), and runs
    /// the handshake until the server's SyncStep2 has been applied.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        doc_name: &str,
        source: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> anyhow::Result<Client> {
        Self::connect_with_doc(endpoint, doc_name, source, timeout, Doc::new()).await
    }

    /// Like [`Client::connect`], with a replica the client already holds:
    /// a reconnecting editor keeps its document, as a browser's provider
    /// does, and syncs it with the server it reaches.
    pub(crate) async fn connect_with_doc(
        endpoint: &Endpoint,
        doc_name: &str,
        source: Option<std::net::IpAddr>,
        timeout: Duration,
        doc: Doc,
    ) -> anyhow::Result<Client> {
        tokio::time::timeout(
            timeout,
            Self::connect_inner(endpoint, doc_name, source, doc, None),
        )
        .await
        .with_context(|| format!("connect and sync {doc_name} within {timeout:?}"))?
    }

    /// Like [`Client::connect`], with a kernel receive buffer of
    /// `receive_buffer` bytes: a client that will stop reading, so the
    /// kernel holds little on its behalf and the server's own queue fills.
    pub(crate) async fn connect_small_window(
        endpoint: &Endpoint,
        doc_name: &str,
        source: Option<std::net::IpAddr>,
        timeout: Duration,
        receive_buffer: u32,
    ) -> anyhow::Result<Client> {
        tokio::time::timeout(
            timeout,
            Self::connect_inner(endpoint, doc_name, source, Doc::new(), Some(receive_buffer)),
        )
        .await
        .with_context(|| format!("connect and sync {doc_name} within {timeout:?}"))?
    }

    async fn connect_inner(
        endpoint: &Endpoint,
        doc_name: &str,
        source: Option<std::net::IpAddr>,
        doc: Doc,
        receive_buffer: Option<u32>,
    ) -> anyhow::Result<Client> {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let mut client =
            Self::open(endpoint, doc_name, source, config, doc, receive_buffer).await?;
        let step1 = SyncMessage::SyncStep1(client.doc.transact().state_vector()).encode_frame();
        client.send_yjs(&step1).await?;
        loop {
            let frame = client.next_frame().await?;
            if let Some(true) = client.handle_frame(&frame).await? {
                return Ok(client);
            }
        }
    }

    /// Opens the socket (and, for Hocuspocus, sends the auth message), with
    /// no handshake yet: the caller sends its SyncStep1. `receive_buffer`
    /// sets the socket's SO_RCVBUF before connecting.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        doc_name: &str,
        source: Option<std::net::IpAddr>,
        config: WebSocketConfig,
        doc: Doc,
        receive_buffer: Option<u32>,
    ) -> anyhow::Result<Client> {
        let tcp_socket = TcpSocket::new_v4().context("create socket")?;
        if let Some(bytes) = receive_buffer {
            // Before connecting, so the window is negotiated for it.
            tcp_socket
                .set_recv_buffer_size(bytes)
                .context("set SO_RCVBUF")?;
        }
        if let Some(ip) = source {
            tcp_socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
        }
        let stream = tcp_socket
            .connect(endpoint.addr)
            .await
            .with_context(|| format!("connect {}", endpoint.addr))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let url = match endpoint.dialect {
            Dialect::YWebsocket => format!("ws://{}/{}", endpoint.addr, doc_name),
            Dialect::Hocuspocus => format!("ws://{}/", endpoint.addr),
        };
        let (socket, _response) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .context("WebSocket upgrade")?;
        let mut client = Client {
            socket,
            doc,
            doc_name: doc_name.to_owned(),
            dialect: endpoint.dialect,
        };
        if client.dialect == Dialect::Hocuspocus {
            client.send_raw(encode_hocus_auth(doc_name)).await?;
        }
        Ok(client)
    }

    /// Waits for the next binary frame (pings are answered by tungstenite
    /// while it reads).
    pub(crate) async fn next_frame(&mut self) -> anyhow::Result<Vec<u8>> {
        self.next_message().await.map(|bytes| bytes.to_vec())
    }

    /// Like [`Client::next_frame`], without copying the message.
    pub(crate) async fn next_message(
        &mut self,
    ) -> anyhow::Result<tokio_tungstenite::tungstenite::Bytes> {
        loop {
            let Some(message) = self.socket.next().await else {
                bail!("server closed the connection");
            };
            match message.context("read frame")? {
                WsMessage::Binary(bytes) => return Ok(bytes),
                WsMessage::Close(frame) => bail!("server closed the connection: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Applies one frame. Returns `Some(true)` for a SyncStep2 (the end of
    /// the handshake), `Some(false)` for an update, `None` otherwise.
    pub(crate) async fn handle_frame(&mut self, frame: &[u8]) -> anyhow::Result<Option<bool>> {
        let yjs = match self.dialect {
            Dialect::YWebsocket => Cow::Borrowed(frame),
            Dialect::Hocuspocus => match strip_hocus(frame)? {
                Some(yjs) => yjs,
                None => return Ok(None),
            },
        };
        match decode_frame(&yjs).context("decode frame")? {
            Message::Sync(SyncMessage::SyncStep1(remote)) => {
                let diff = self.doc.transact().encode_state_as_update_v1(&remote);
                let reply = SyncMessage::SyncStep2(diff).encode_frame();
                self.send_yjs(&reply).await?;
                Ok(None)
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                self.apply(&update)?;
                Ok(Some(true))
            }
            Message::Sync(SyncMessage::Update(update)) => {
                self.apply(&update)?;
                Ok(Some(false))
            }
            Message::Auth(weft_protocol::AuthMessage::PermissionDenied(reason)) => {
                bail!("permission denied: {reason}")
            }
            _ => Ok(None),
        }
    }

    /// The y-websocket message a frame carries (the frame itself, or the
    /// message inside a Hocuspocus frame), or `None` for a Hocuspocus frame
    /// that carries none.
    pub(crate) fn yjs_message<'frame>(
        &self,
        frame: &'frame [u8],
    ) -> anyhow::Result<Option<Cow<'frame, [u8]>>> {
        match self.dialect {
            Dialect::YWebsocket => Ok(Some(Cow::Borrowed(frame))),
            Dialect::Hocuspocus => strip_hocus(frame),
        }
    }

    fn apply(&self, update: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(update).context("decode update")?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .context("apply update")?;
        Ok(())
    }

    /// Sends a y-websocket frame, addressed if the dialect wants it.
    pub(crate) async fn send_yjs(&mut self, yjs_frame: &[u8]) -> anyhow::Result<()> {
        let frame = match self.dialect {
            Dialect::YWebsocket => yjs_frame.to_vec(),
            Dialect::Hocuspocus => encode_addressed(&self.doc_name, yjs_frame),
        };
        self.send_raw(frame).await
    }

    async fn send_raw(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.socket
            .send(WsMessage::Binary(frame.into()))
            .await
            .context("send frame")
    }

    /// Appends stamp `seq` (sent now) to writer `writer`'s array and sends
    /// the resulting update.
    pub(crate) async fn send_stamp(&mut self, writer: usize, seq: u64) -> anyhow::Result<()> {
        let update = {
            let array = self.doc.get_or_insert_array(writer_array(writer));
            let mut txn = self.doc.transact_mut();
            let stamp = format!("{seq}:{}", crate::clock::nanos());
            array.push_back(&mut txn, stamp);
            txn.encode_update_v1()
        };
        let frame = SyncMessage::Update(update).encode_frame();
        self.send_yjs(&frame).await
    }

    /// The document's state vector.
    pub(crate) fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Closes the socket politely (errors ignored: the run is over).
    ///
    /// Bounded by `CLOSE_TIMEOUT`: a server that stopped reading this
    /// connection would otherwise hold the close (and the run) forever.
    pub(crate) async fn close(mut self) {
        let _ignored_close_error =
            tokio::time::timeout(CLOSE_TIMEOUT, self.socket.close(None)).await;
    }
}

/// How long a close may take to be written.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Root array of one writer's stamps.
pub(crate) fn writer_array(writer: usize) -> String {
    format!("w{writer}")
}

/// Reads stamps `from..` of writer `writer` from `doc`: `(seq, nanos)`.
pub(crate) fn read_stamps(doc: &Doc, writer: usize, from: u32) -> Vec<(u64, u64)> {
    let array = doc.get_or_insert_array(writer_array(writer));
    let txn = doc.transact();
    let len = array.len(&txn);
    let mut stamps = Vec::with_capacity(len.saturating_sub(from) as usize);
    for index in from..len {
        if let Some(Out::Any(yrs::Any::String(text))) = array.get(&txn, index)
            && let Some((seq, nanos)) = text.split_once(':')
            && let (Ok(seq), Ok(nanos)) = (seq.parse(), nanos.parse())
        {
            stamps.push((seq, nanos));
        }
    }
    stamps
}

/// Number of stamps writer `writer` has in `doc`.
pub(crate) fn stamp_count(doc: &Doc, writer: usize) -> u32 {
    let array = doc.get_or_insert_array(writer_array(writer));
    let txn = doc.transact();
    array.len(&txn)
}

/// Hocuspocus auth with an empty token (the peers run without auth hooks).
fn encode_hocus_auth(doc_name: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.write_string(doc_name);
    buf.write_var(HOCUS_AUTH);
    buf.write_var(0_u32);
    buf.write_string("");
    buf
}

/// The y-websocket message inside a Hocuspocus frame, or `None` for frames
/// that carry none (auth answers, sync status, stateless, pings).
pub(crate) fn strip_hocus(frame: &[u8]) -> anyhow::Result<Option<Cow<'_, [u8]>>> {
    if frame.len() == 1 {
        return Ok(None);
    }
    let mut cursor = Cursor::new(frame);
    let _address = cursor.read_string().context("read address")?;
    let start = cursor.next;
    let kind: u32 = cursor.read_var().context("read type")?;
    match kind {
        0 | 1 | 3 => Ok(Some(Cow::Borrowed(&frame[start..]))),
        HOCUS_SYNC_REPLY => {
            // A sync message under another type: re-tag it as sync.
            let mut yjs = Vec::with_capacity(frame.len() - start);
            yjs.write_var(weft_protocol::message::MSG_SYNC);
            yjs.extend_from_slice(&frame[cursor.next..]);
            Ok(Some(Cow::Owned(yjs)))
        }
        HOCUS_AUTH => {
            let sub: u32 = cursor.read_var().context("read auth type")?;
            if sub == HOCUS_AUTH_DENIED {
                let reason = cursor.read_string().unwrap_or("?");
                bail!("hocuspocus permission denied: {reason}");
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}
