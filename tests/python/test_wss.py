"""Unmodified pycrdt + pycrdt-websocket clients over wss:// (Weft serving
TLS with --tls-cert/--tls-key), trusting the test CA through an
`ssl.SSLContext`, as an application would; one of them beside a
y-websocket (Node) client that trusts it through NODE_EXTRA_CA_CERTS."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Text

from conftest import TESTS_DIR, Weft, free_port
from test_pycrdt import SYNC_TIMEOUT_S, provider, wait_until


@pytest.fixture
def tls_weft():
    with tempfile.TemporaryDirectory(prefix="weft-py-tls-") as root:
        tls_dir = Path(root) / "tls"
        subprocess.run([str(TESTS_DIR / "lib" / "make-test-ca.sh"), str(tls_dir)], check=True, timeout=60)
        context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        server = Weft(
            free_port(),
            root,
            ["--tls-cert", str(tls_dir / "server.pem"), "--tls-key", str(tls_dir / "server.key")],
            tls=context,
        )
        server.ca_file = tls_dir / "ca.pem"
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.asyncio
async def test_pycrdt_clients_converge_over_wss(tls_weft):
    room = "python/wss"
    first, second = Doc(), Doc()
    first["text"] = Text()
    second["text"] = Text()
    async with (
        httpx.AsyncClient(verify=tls_weft.tls) as client,
        aconnect_ws(f"{tls_weft.http_url}/{room}", client) as ws1,
        provider(ws1, room, first),
        aconnect_ws(f"{tls_weft.http_url}/{room}", client) as ws2,
        provider(ws2, room, second),
    ):
        first["text"] += "over TLS from pycrdt"
        await wait_until(lambda: str(second["text"]) == "over TLS from pycrdt", second, "the edit over wss")


@pytest.mark.asyncio
async def test_pycrdt_and_a_yjs_client_over_wss(tls_weft):
    room = "python/wss-mixed"
    doc = Doc()
    doc["text"] = Text()
    peer = await asyncio.create_subprocess_exec(
        "node",
        str(TESTS_DIR / "python" / "yjs_peer.mjs"),
        tls_weft.ws_url,
        room,
        cwd=str(TESTS_DIR),
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_weft.ca_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with (
            httpx.AsyncClient(verify=tls_weft.tls) as client,
            aconnect_ws(f"{tls_weft.http_url}/{room}", client) as ws,
            provider(ws, room, doc),
        ):
            await wait_until(lambda: "from yjs;" in str(doc["text"]), doc, "the y-websocket client's edit over wss")
            doc["text"] += "from pycrdt;"
            stdout, stderr = await asyncio.wait_for(peer.communicate(), timeout=SYNC_TIMEOUT_S)
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
    assert peer.returncode == 0, f"yjs peer failed: {stderr.decode()}"
    seen = json.loads(stdout.decode().strip().splitlines()[-1])
    assert "from pycrdt;" in seen["text"] and "from yjs;" in seen["text"]


def test_a_client_without_the_ca_is_refused(tls_weft):
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_weft.http_url}/healthz", timeout=3.0)
    assert httpx.get(f"{tls_weft.http_url}/healthz", timeout=3.0, verify=tls_weft.tls).status_code == 200
