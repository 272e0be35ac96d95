"""Unmodified pycrdt + pycrdt-websocket clients (over httpx-ws) against
Weft's y-websocket path, alone and together with a y-websocket (Node)
client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from httpx_ws import aconnect_ws
from pycrdt import Array, Doc, Map, Text
from pycrdt_websocket import WebsocketProvider
from pycrdt_websocket.websocket import HttpxWebsocket

from conftest import TESTS_DIR

SYNC_TIMEOUT_S = 10.0


async def wait_until(predicate, doc: Doc, what: str, timeout: float = SYNC_TIMEOUT_S) -> None:
    """Waits for `predicate()` to hold, re-checking on every change of `doc`."""
    changed = asyncio.Event()
    subscription = doc.observe(lambda _event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await changed.wait()
                changed.clear()
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
    finally:
        doc.unobserve(subscription)


def provider(websocket, room: str, doc: Doc) -> WebsocketProvider:
    return WebsocketProvider(doc, HttpxWebsocket(websocket, room))


async def start_yjs_peer(ws_url: str, room: str):
    """Starts `yjs_peer.mjs`: a y-websocket (Node) client that writes
    "from yjs;" and waits for "from pycrdt;"."""
    return await asyncio.create_subprocess_exec(
        "node",
        str(TESTS_DIR / "python" / "yjs_peer.mjs"),
        ws_url,
        room,
        cwd=str(TESTS_DIR),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def finish_yjs_peer(peer) -> dict:
    """Waits (bounded) for the peer to exit 0 and returns what it saw."""
    try:
        stdout, stderr = await asyncio.wait_for(peer.communicate(), timeout=SYNC_TIMEOUT_S)
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
    assert peer.returncode == 0, f"yjs peer failed: {stderr.decode()}"
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.mark.asyncio
async def test_two_pycrdt_clients_converge_through_weft(weft):
    room = "python/two-clients"
    first, second = Doc(), Doc()
    first["text"] = Text()
    first["map"] = Map()
    second["text"] = Text()
    second["map"] = Map()
    async with (
        aconnect_ws(f"{weft.http_url}/{room}") as ws1,
        provider(ws1, room, first),
        aconnect_ws(f"{weft.http_url}/{room}") as ws2,
        provider(ws2, room, second),
    ):
        first["text"] += "hello from pycrdt"
        first["map"]["k"] = 1
        await wait_until(
            lambda: str(second["text"]) == "hello from pycrdt" and second["map"].get("k") == 1,
            second,
            "the second client to see the first one's edits",
        )
        second["text"] += ", and back"
        await wait_until(
            lambda: str(first["text"]) == "hello from pycrdt, and back",
            first,
            "the first client to see the reply",
        )


@pytest.mark.asyncio
async def test_a_late_pycrdt_client_gets_the_stored_state(weft):
    room = "python/late-joiner"
    writer = Doc()
    writer["items"] = Array()
    async with aconnect_ws(f"{weft.http_url}/{room}") as ws, provider(ws, room, writer):
        writer["items"].extend([1, 2, 3])
        # The server acknowledges nothing to this client; a second client
        # seeing the items proves the server holds them.
        witness = Doc()
        witness["items"] = Array()
        async with aconnect_ws(f"{weft.http_url}/{room}") as ws2, provider(ws2, room, witness):
            await wait_until(lambda: list(witness["items"]) == [1, 2, 3], witness, "the witness")
    # Nobody is connected now; the state comes from the server alone.
    late = Doc()
    late["items"] = Array()
    async with aconnect_ws(f"{weft.http_url}/{room}") as ws, provider(ws, room, late):
        await wait_until(lambda: list(late["items"]) == [1, 2, 3], late, "the late joiner")


@pytest.mark.asyncio
async def test_pycrdt_and_a_yjs_websocket_provider_edit_one_document(weft):
    room = "python/with-yjs"
    doc = Doc()
    doc["text"] = Text()
    peer = await start_yjs_peer(weft.ws_url, room)
    try:
        async with aconnect_ws(f"{weft.http_url}/{room}") as ws, provider(ws, room, doc):
            await wait_until(lambda: "from yjs;" in str(doc["text"]), doc, "the y-websocket client's edit")
            doc["text"] += "from pycrdt;"
            seen = await finish_yjs_peer(peer)
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
    assert "from yjs;" in seen["text"] and "from pycrdt;" in seen["text"], seen
    assert str(doc["text"]) == seen["text"], "both ends hold the same text"


@pytest.mark.asyncio
async def test_pycrdt_clients_on_two_nodes_converge_with_each_other_and_a_yjs_client(cluster):
    room = "python/two-nodes"
    first, second = Doc(), Doc()
    first["text"] = Text()
    second["text"] = Text()
    node_a, node_b = cluster
    async with (
        aconnect_ws(f"{node_a.http_url}/{room}") as ws1,
        provider(ws1, room, first),
        aconnect_ws(f"{node_b.http_url}/{room}") as ws2,
        provider(ws2, room, second),
    ):
        first["text"] += "A;"
        await wait_until(lambda: "A;" in str(second["text"]), second, "node B's client to see node A's edit")
        second["text"] += "B;"
        await wait_until(lambda: "B;" in str(first["text"]), first, "node A's client to see node B's edit")
        # A y-websocket (Node) client on node B writes and waits for pycrdt.
        peer = await start_yjs_peer(node_b.ws_url, room)
        try:
            await wait_until(lambda: "from yjs;" in str(first["text"]), first, "the y-websocket client's edit on node A")
            first["text"] += "from pycrdt;"
            seen = await finish_yjs_peer(peer)
        finally:
            if peer.returncode is None:
                peer.kill()
                await peer.wait()
        await wait_until(lambda: str(second["text"]) == str(first["text"]), second, "the two pycrdt clients to converge")
        for token in ("A;", "B;", "from yjs;", "from pycrdt;"):
            assert token in seen["text"], (token, seen)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
