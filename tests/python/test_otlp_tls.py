"""OTLP over https: a node exports its spans (http/protobuf) to an https
endpoint whose certificate a test CA signs, trusting that CA through
OTEL_EXPORTER_OTLP_CERTIFICATE; with another CA the handshake fails (the
receiver sees the client give up); an unreadable CA file stops start-up
naming the variable. The receiver is a small https server of this test
(the rotel collector of test_tracing.py has no TLS receiver)."""

from __future__ import annotations

import os
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Text

from conftest import TESTS_DIR, WEFT_BIN, Weft, free_port
from test_pycrdt import provider, wait_until

RECEIVE_TIMEOUT_S = 15.0


class Receiver(ThreadingHTTPServer):
    """Accepts OTLP/HTTP posts over TLS; records their paths and the
    handshakes that failed."""

    daemon_threads = True

    def __init__(self, certificate: Path, key: Path) -> None:
        self.posts: list[str] = []
        self.posted = threading.Event()
        self.handshake_failures: list[str] = []
        self.handshake_failed = threading.Event()
        super().__init__(("127.0.0.1", free_port()), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certificate), str(key))
        self.context = context

    def get_request(self):
        raw, address = self.socket.accept()
        try:
            return self.context.wrap_socket(raw, server_side=True), address
        except (ssl.SSLError, OSError) as error:
            self.handshake_failures.append(str(error))
            self.handshake_failed.set()
            raw.close()
            raise


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.server.posts.append(self.path)
        self.server.posted.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def tls_dir():
    with tempfile.TemporaryDirectory(prefix="weft-otlp-tls-") as root:
        subprocess.run([str(TESTS_DIR / "lib" / "make-test-ca.sh"), root], check=True, timeout=60)
        yield Path(root)


@pytest.fixture
def receiver(tls_dir):
    server = Receiver(tls_dir / "server.pem", tls_dir / "server.key")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def start_node(root: Path, receiver: Receiver, ca: Path) -> Weft:
    node = Weft(
        free_port(),
        str(root),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca),
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    node.start()
    return node


async def make_spans(node: Weft) -> None:
    """One session and one edit: an `upgrade`, a `session`, an `update`."""
    room = "otlp/tls"
    doc = Doc()
    doc["text"] = Text()
    async with aconnect_ws(f"{node.http_url}/{room}") as ws, provider(ws, room, doc):
        doc["text"] += "traced"
        await wait_until(lambda: str(doc["text"]) == "traced", doc, "the local edit")


@pytest.mark.asyncio
async def test_spans_reach_an_https_endpoint_trusted_by_its_ca(tls_dir, receiver):
    (tls_dir / "node").mkdir()
    node = start_node(tls_dir / "node", receiver, tls_dir / "ca.pem")
    try:
        await make_spans(node)
        assert receiver.posted.wait(RECEIVE_TIMEOUT_S), f"no OTLP post within {RECEIVE_TIMEOUT_S} s:\n{node.log_path.read_text()[-3000:]}"
        assert "/v1/traces" in receiver.posts
        assert not receiver.handshake_failures, receiver.handshake_failures
    finally:
        node.stop()


@pytest.mark.asyncio
async def test_an_endpoint_another_ca_signed_is_refused(tls_dir, receiver):
    (tls_dir / "node").mkdir()
    node = start_node(tls_dir / "node", receiver, tls_dir / "other-ca.pem")
    try:
        await make_spans(node)
        assert receiver.handshake_failed.wait(RECEIVE_TIMEOUT_S), "the exporter never tried the endpoint"
        assert not receiver.posts, "nothing is posted over a certificate the CA did not sign"
    finally:
        node.stop()


def test_an_unreadable_ca_file_stops_start_up_naming_the_variable(tls_dir):
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tls_dir / "missing-ca.pem"),
    }
    result = subprocess.run(
        [WEFT_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--store", f"sqlite://{tls_dir}/weft.db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in result.stderr, result.stderr
