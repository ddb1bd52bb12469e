"""Schemathesis against the local stack: requests generated from openapi.yaml (valid and invalid
ones) must never get a server error, every response must be what the document promises
(status code, content type, headers, body schema), and requests it calls invalid get a 4xx.

The devserver runs on a database of its own (the POST routes change data) with the samples
loaded. Deterministic generation and a fixed number of examples keep the run repeatable and
within a couple of minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest

from paysync.dal.db import parse_database_url
from tests.conftest import ROOT, _with_database
from tests.integration.test_devserver import Devserver, start_devserver, stop_devserver, subprocess_env

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",  # requests the document calls invalid get a 4xx
)
MAX_EXAMPLES = 15  # per operation and phase: about 550 requests
RUN_TIMEOUT = 300  # a hard stop far above the usual minute, for a busy machine


@pytest.fixture(scope="module")
def own_devserver(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devserver]:
    """A devserver on a fresh database of the test server, with the samples loaded."""
    name = f"paysync_schemathesis_{uuid.uuid4().hex[:8]}"
    admin = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    admin.run(f"CREATE DATABASE {name}")
    log = tmp_path_factory.mktemp("schemathesis") / "devserver.log"
    try:
        server = start_devserver(log, env=subprocess_env(DATABASE_URL=_with_database(database_url, name)))
        yield server
        assert stop_devserver(server) == 0, server.output()
    finally:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_generated_requests_get_documented_answers_and_no_server_error(
    own_devserver: Devserver, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG)),
        *("run", str(ROOT / "openapi.yaml"), "--url", own_devserver.base),
        *("--checks", ",".join(CHECKS), "--generation-deterministic", "--max-examples", str(MAX_EXAMPLES)),
        # The local stack has no IAM: a request without a signature is a valid one there.
        *("--generation-with-security-parameters", "false"),
        *("--workers", "1", "--no-color", "--report", "json", "--report-json-path", str(report)),
    ]

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    summary = json.loads(report.read_text())
    failures = result.stdout[-6000:] + result.stderr[-2000:]
    assert summary["failures"] == [], failures
    assert summary["errors"] == [], failures
    assert result.returncode == 0, failures
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 7
    assert all(phase["status"] == "success" for phase in summary["phases"].values()), summary["phases"]
    # Enough traffic to mean something, valid and invalid requests alike.
    assert summary["test_cases"]["generated"] >= 300
    handler_log = own_devserver.log.read_text(errors="replace")
    assert "unexpected error" not in handler_log
    assert "Traceback" not in handler_log
