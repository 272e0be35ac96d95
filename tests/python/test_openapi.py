"""The REST API against its own OpenAPI document: schemathesis (pinned in
requirements.txt) generates requests from `GET /api/openapi.json` and checks
every answer (status codes, content types, bodies and headers as
documented, no 5xx, auth not ignored, 405 for undocumented methods, a
deleted resource stays gone) against a real `weft serve` with JWT auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from pycrdt import Doc, Text

from conftest import Weft, free_port

SECRET = "openapi-test-secret-0123456789abcdef"
# Generated cases per operation and phase: enough to walk every parameter
# and response of the four operations, bounded so the test takes seconds.
MAX_EXAMPLES = 30
SCHEMATHESIS_TIMEOUT_S = 300

# A schema cannot say "a valid Yjs v1 update", so a schema-valid body may
# be refused with 400; every other check applies to that operation too.
# Nor can it say "a version id that exists" or "an instant within the
# history retention": history reads may refuse schema-valid input with 400
# (before the retention) or 404 (no such version); and a history listing
# of a document that has none is an empty 200 whatever its name or
# unknown query parameters, so schema-violating requests there are not
# expected to be refused.
CONFIG = """
[[operations]]
include-path = "/api/documents/{name}/updates"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "413", "415", "422", "503"]

[[operations]]
include-path = "/api/documents/{name}"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
[[operations]]
include-path = "/api/documents/{name}/versions"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
[[operations]]
include-path = "/api/documents/{name}/versions"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
[[operations]]
include-path = "/api/documents/{name}/restore"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
[[operations]]
include-path = "/api/documents/{name}/undelete"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
[[operations]]
include-path = "/api/documents/{name}/diff"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
[[operations]]
include-path = "/api/documents/{name}/activity"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "503"]
generation.mode = "positive"
# A schema cannot say "a ProseMirror document this schema accepts", "a
# JSON Patch that applies to the root as it is", "a root of the type the
# format addresses" or "a stream whose lines are edits": content writes
# may refuse schema-valid input with 400, 409, 412 (a stale If-Match),
# 415 (a Content-Type naming another format) or 422 (an Idempotency-Key
# reused by another generated request). The schemathesis version pinned
# applies the first entry's list to every operation (the updates route's
# above, which therefore names 412, 415 and 422 too); the entries below
# say what each content operation may answer.
[[operations]]
include-operation-id = "getContent"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "413", "415", "422", "503"]
[[operations]]
include-operation-id = "putContent"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "413", "415", "422", "503"]
[[operations]]
include-operation-id = "patchContent"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "413", "415", "422", "503"]
[[operations]]
include-operation-id = "streamEdits"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "408", "409", "410", "422", "503"]

# A schema counts characters where Weft bounds `sub`, `jti` and `docs` in
# bytes, and cannot say "at least one of sub and jti" in a way every
# generator honours: a schema-valid revocation may be refused with 400.
[[operations]]
include-path = "/api/revocations"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "413", "503"]
# This node has no webhooks: a valid replay is a 404.
[[operations]]
include-path = "/api/webhooks/replay"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "413", "503"]
"""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


@pytest.fixture
def weft_with_auth():
    with tempfile.TemporaryDirectory(prefix="weft-py-") as store_dir:
        server = Weft(free_port(), store_dir, ["--auth-jwt-secret", SECRET])
        server.start()
        try:
            yield server
        finally:
            server.stop()


def test_the_server_conforms_to_its_openapi_document(weft_with_auth, tmp_path: Path):
    admin = hs256({"sub": "openapi-test", "exp": int(time.time()) + 3600, "admin": True})
    auth = {"Authorization": f"Bearer {admin}"}
    # One real document, so reads and deletions reach more than 404s.
    doc = Doc()
    doc["body"] = text = Text()
    text += "seeded"
    seeded = httpx.post(
        f"{weft_with_auth.http_url}/api/documents/seeded/updates",
        content=doc.get_update(),
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    assert seeded.status_code == 204, seeded.text
    schema = httpx.get(f"{weft_with_auth.http_url}/api/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.1")

    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(config),
        "run", f"{weft_with_auth.http_url}/api/openapi.json",
        "--url", weft_with_auth.http_url,
        "--header", f"Authorization: Bearer {admin}",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        # Server-sent event streams do not end: they are tested in
        # tests/e2e/webhooks.test.mjs.
        "--exclude-path-regex", "/events$",
    ]
    started = time.monotonic()
    # In a temporary directory: schemathesis keeps a cache where it runs.
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT_S, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    summary = [line for line in run.stdout.splitlines() if "generated" in line]
    print(f"schemathesis: {summary} in {elapsed:.1f} s")
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout}\n{run.stderr}"
    assert summary and " passed" in summary[-1], run.stdout


def test_the_api_refuses_without_a_token_and_reads_what_was_written(weft_with_auth):
    base = weft_with_auth.http_url
    refused = httpx.get(f"{base}/api/documents")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == 401
    reader = hs256({"sub": "reader", "exp": int(time.time()) + 3600, "docs": {"team/*": "r"}})
    writer = hs256({"sub": "writer", "exp": int(time.time()) + 3600, "docs": {"team/*": "rw"}})
    doc = Doc()
    doc["body"] = text = Text()
    text += "from python"
    update = doc.get_update()
    octets = {"Content-Type": "application/octet-stream"}
    forbidden = httpx.post(
        f"{base}/api/documents/team%2Fplan/updates",
        content=update,
        headers={"Authorization": f"Bearer {reader}", **octets},
    )
    assert forbidden.status_code == 403
    written = httpx.post(
        f"{base}/api/documents/team%2Fplan/updates",
        content=update,
        headers={"Authorization": f"Bearer {writer}", **octets},
    )
    assert written.status_code == 204, written.text
    read = httpx.get(
        f"{base}/api/documents/team%2Fplan?text=body",
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert read.status_code == 200, read.text
    assert read.json()["text"] == {"body": "from python"}
    listing = httpx.get(f"{base}/api/documents", headers={"Authorization": f"Bearer {reader}"})
    assert [entry["name"] for entry in listing.json()["documents"]] == ["team/plan"]
    not_admin = httpx.delete(
        f"{base}/api/documents/team%2Fplan", headers={"Authorization": f"Bearer {writer}"}
    )
    assert not_admin.status_code == 403
