"""Traces across nodes: two Weft nodes of a cluster export spans with OTLP
(one over gRPC, one over HTTP/protobuf) to a real OpenTelemetry collector
(rotel, which logs every span it receives); one edit made on node 0 and
read on node 1 is one trace holding spans of both nodes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
import rotel
from httpx_ws import aconnect_ws
from pycrdt import Doc, Text

from conftest import WEFT_BIN, Weft, free_port
from test_pycrdt import provider, wait_until

COLLECTOR_TIMEOUT_S = 15.0


class Collector:
    """rotel-agent on two free ports, logging the spans it receives."""

    def __init__(self, root: Path) -> None:
        binary = Path(rotel.__file__).parent / "rotel-agent"
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.output = root / "collector.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [
                    str(binary), "start",
                    "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                    "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                    "--exporter", "blackhole",
                    "--debug-log", "traces",
                    "--debug-log-verbosity", "detailed",
                    "--pid-file", str(root / "rotel.pid"),
                    "--log-file", str(root / "rotel.log"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + COLLECTOR_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rotel exited at start-up:\n{self.output.read_text()}")
            if all(self._listening(port) for port in (self.grpc_port, self.http_port)):
                return
            time.sleep(0.025)
        raise RuntimeError(f"rotel not listening within {COLLECTOR_TIMEOUT_S} s")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    def spans(self) -> list[dict]:
        """Every span logged so far: trace id, name, and the resource's
        service name and instance id."""
        spans = []
        resource: dict[str, str] = {}
        current: dict | None = None
        for line in self.output.read_text(errors="replace").splitlines():
            if line.startswith("ResourceSpans #"):
                resource = {}
                current = None
            elif match := re.match(r"\s+-> (service\.name|service\.instance\.id): Str\((.*)\)$", line):
                if current is None:
                    resource[match.group(1)] = match.group(2)
            elif line.startswith("Span #"):
                current = {"resource": dict(resource)}
                spans.append(current)
            elif current is not None and (match := re.match(r"\s+Trace ID\s+: ([0-9a-f]{32})$", line)):
                current["trace_id"] = match.group(1)
            elif current is not None and (match := re.match(r"\s+Parent ID\s+: ([0-9a-f]*)$", line)):
                current["parent"] = match.group(1)
            elif current is not None and (match := re.match(r"\s+Name\s+: (.+)$", line)):
                current.setdefault("name", match.group(1))
        return spans

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def collector():
    with tempfile.TemporaryDirectory(prefix="weft-otel-") as root:
        running = Collector(Path(root))
        try:
            yield running
        finally:
            running.stop()


def traced_cluster(broker: str, collector: Collector, root: Path) -> list[Weft]:
    topic = f"python-trace-{os.getpid()}-{time.monotonic_ns()}"
    endpoints = [
        ("grpc", f"http://127.0.0.1:{collector.grpc_port}"),
        ("http/protobuf", f"http://127.0.0.1:{collector.http_port}"),
    ]
    nodes = []
    for index, (protocol, endpoint) in enumerate(endpoints):
        store_dir = root / f"node-{index}"
        store_dir.mkdir()
        node = Weft(
            free_port(),
            str(store_dir),
            [
                "--kafka-brokers", broker,
                "--kafka-topic", topic,
                "--kafka-partitions", "2",
                "--node-id", f"trace-node-{index}",
                "--kafka-fetch-wait-ms", "10",
                "--log-format", "json",
            ],
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            },
        )
        node.start()
        nodes.append(node)
    return nodes


@pytest.mark.asyncio
async def test_one_edit_is_one_trace_across_two_nodes(collector: Collector):
    broker = os.environ.get("WEFT_TEST_KAFKA")
    if not broker:
        if os.environ.get("CI"):
            pytest.fail("WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it")
        pytest.skip("set WEFT_TEST_KAFKA (make test does)")
    with tempfile.TemporaryDirectory(prefix="weft-py-") as root:
        nodes = traced_cluster(broker, collector, Path(root))
        try:
            writer_doc, reader_doc = Doc(), Doc()
            writer_doc["text"] = writer_text = Text()
            reader_doc["text"] = reader_text = Text()
            async with (
                aconnect_ws(f"{nodes[0].ws_url}/traced") as writer_ws,
                aconnect_ws(f"{nodes[1].ws_url}/traced") as reader_ws,
                provider(writer_ws, "traced", writer_doc),
                provider(reader_ws, "traced", reader_doc),
            ):
                writer_text += "traced edit"
                await wait_until(lambda: str(reader_text) == "traced edit", reader_doc, "the edit on node 1")
        finally:
            for node in nodes:
                node.stop()  # SIGTERM: the node flushes its spans before it exits

        # Spans arrive in batches; wait (bounded) for a trace of both nodes.
        deadline = time.monotonic() + COLLECTOR_TIMEOUT_S
        shared: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            by_trace: dict[str, set[tuple[str, str]]] = defaultdict(set)
            for span in collector.spans():
                if "trace_id" in span:
                    by_trace[span["trace_id"]].add((span["resource"].get("service.instance.id", "?"), span.get("name", "?")))
            shared = {
                trace: {f"{node}:{name}" for node, name in spans}
                for trace, spans in by_trace.items()
                if {node for node, _ in spans} >= {"trace-node-0", "trace-node-1"}
            }
            if shared:
                break
            time.sleep(0.1)
        spans = collector.spans()
        assert shared, f"no trace holds spans of both nodes; received {len(spans)} spans: " + ", ".join(
            sorted({f"{s['resource'].get('service.instance.id')}:{s.get('name')}" for s in spans})
        )
        names = next(iter(shared.values()))
        # The writer's node published the update, the reader's consumed it
        # with the publisher's context as its parent, and applied it.
        assert {"trace-node-0:update", "trace-node-0:publish", "trace-node-1:consume", "trace-node-1:apply"} <= names, names
        assert {s["resource"].get("service.name") for s in spans} == {"weft"}

        # A log line written inside a traced span names its trace.
        upgrade_traces = {
            s["trace_id"] for s in spans
            if s.get("name") == "upgrade" and s["resource"].get("service.instance.id") == "trace-node-0"
        }
        logged = [
            json.loads(line) for line in nodes[0].log_path.read_text().splitlines() if line.startswith("{")
        ]
        opened = [line for line in logged if line.get("message") == "session open"]
        assert opened and all(line.get("trace_id") in upgrade_traces for line in opened), opened


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2.5"),
    ],
)
def test_a_bad_otel_setting_stops_start_up_and_names_it(variable: str, value: str):
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    if variable == "OTEL_TRACES_SAMPLER_ARG":
        env["OTEL_TRACES_SAMPLER"] = "traceidratio"
    env[variable] = value
    with tempfile.TemporaryDirectory(prefix="weft-py-") as root:
        result = subprocess.run(
            [WEFT_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--store", f"sqlite://{root}/weft.db"],
            env=env,
            capture_output=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert variable in result.stderr.decode(), result.stderr.decode()
