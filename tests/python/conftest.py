"""Fixtures for the Python client tests: a real `weft` binary (WEFT_BIN) on a
free loopback port with a fresh embedded store, and the y-websocket Node
client (`tests/node_modules`) for the cross-language test."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
WEFT_BIN = os.environ.get("WEFT_BIN", str(REPO_ROOT / "target" / "debug" / "weft"))
READY_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Weft:
    """One `weft serve` process."""

    def __init__(
        self,
        port: int,
        store_dir: str,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        # With --tls-cert: the context trusting its CA (https, wss).
        self.tls = tls
        self.env = env or {}
        self.store = f"sqlite://{store_dir}/weft.db"
        self.log_path = Path(store_dir) / "weft.log"
        self.args = args or []
        self.process: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [WEFT_BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--store", self.store, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        # An external process's listener: polled, bounded in time.
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weft exited at start-up:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.http_url}/readyz", timeout=1.0, verify=self.tls or True).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.025)
        raise RuntimeError(f"weft not ready within {READY_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def weft():
    with tempfile.TemporaryDirectory(prefix="weft-py-") as store_dir:
        server = Weft(free_port(), store_dir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def cluster():
    """Two nodes on a fresh topic of the broker `make test` started
    (WEFT_TEST_KAFKA); skipped without one, except under CI."""
    broker = os.environ.get("WEFT_TEST_KAFKA")
    if not broker:
        if os.environ.get("CI"):
            pytest.fail("WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it")
        pytest.skip("set WEFT_TEST_KAFKA (make test does)")
    topic = f"python-{os.getpid()}-{time.monotonic_ns()}"
    with tempfile.TemporaryDirectory(prefix="weft-py-") as root:
        nodes = []
        try:
            for index in range(2):
                store_dir = Path(root) / f"node-{index}"
                store_dir.mkdir()
                node = Weft(
                    free_port(),
                    str(store_dir),
                    [
                        "--kafka-brokers", broker,
                        "--kafka-topic", topic,
                        "--kafka-partitions", "2",
                        "--node-id", f"py-node-{index}",
                        "--kafka-fetch-wait-ms", "10",
                    ],
                )
                node.start()
                nodes.append(node)
            yield nodes
        finally:
            for node in nodes:
                node.stop()
