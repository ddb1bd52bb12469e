"""Shared fixtures: a real PostgreSQL (embedded pgserver, or TEST_DATABASE_URL), moto S3,
Lambda contexts and the events/ files."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pg8000.native
import pytest

from paysync.config import get_settings
from paysync.dal import db, storage
from paysync.dal.db import parse_database_url
from paysync.jsonio import to_json
from paysync.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
SAMPLES = ROOT / "samples"
TABLES = ("sync_runs", "payments", "patients")
TEST_BUCKET = "paysync-test-snapshots"


def _server_url() -> Iterator[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="pgtest")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    # Swap the database name in a postgresql:// URL (keeps ?host=… for sockets).
    head, _, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test session; DATABASE_URL points at it."""
    for server_url in _server_url():
        name = f"paysync_test_{uuid.uuid4().hex[:8]}"
        admin = pg8000.native.Connection(**parse_database_url(server_url).as_kwargs())
        admin.run(f"CREATE DATABASE {name}")
        url = _with_database(server_url, name)
        previous = os.environ.get("DATABASE_URL")
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        upgrade(parse_database_url(url))
        try:
            yield url
        finally:
            if db._shared is not None:
                db.close_quietly(db._shared)
                db._shared = None
            admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
            if previous is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = previous
            get_settings.cache_clear()


@pytest.fixture
def conn(database_url: str) -> Iterator[pg8000.native.Connection]:
    """An empty replica (all tables truncated) and a connection to inspect it."""
    connection = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    connection.run(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    yield connection
    connection.close()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set paysync environment variables for one test: settings_env(DELETE_GUARD_MIN_ROWS="5")."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto S3 with the snapshot bucket (versioned, like the deployed one)."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SNAPSHOT_BUCKET": TEST_BUCKET,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    get_settings.cache_clear()
    storage.s3_client.cache_clear()
    with mock_aws():
        client = storage.s3_client()
        client.create_bucket(Bucket=TEST_BUCKET)
        client.put_bucket_versioning(Bucket=TEST_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client
    storage.s3_client.cache_clear()
    get_settings.cache_clear()


@dataclass
class FakeLambdaContext:
    function_name: str = "paysync-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:paysync-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"
    log_group_name: str = "/aws/lambda/paysync-test"
    log_stream_name: str = "2026/11/26/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def load_event(name: str) -> dict[str, Any]:
    """An event file from events/ (the same files `sam local invoke -e` takes)."""
    return json.loads((EVENTS / name).read_text())


def sample_bytes(entity: str) -> bytes:
    """The brief's sample snapshot of `entity`."""
    return (SAMPLES / f"{entity}.json").read_bytes()


def snapshot(records: list[Any]) -> io.BytesIO:
    """A snapshot stream holding `records` as a JSON array (Decimal amounts as JSON numbers)."""
    return io.BytesIO(to_json(records).encode())


def table_state(connection: pg8000.native.Connection) -> dict[str, list[list[Any]]]:
    """Every row of the replica's tables, to compare before/after a refused request."""
    return {table: connection.run(f"SELECT * FROM {table} ORDER BY id") for table in ("patients", "payments")}


def api_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    resource: str | None = None,
    path_parameters: dict[str, str] | None = None,
    base64: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, shaped like the real thing."""
    all_headers = {
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
        "User-Agent": "pytest",
        **({"Content-Type": "application/json"} if body is not None else {}),
        **(headers or {}),
    }
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/Prod{path}",
            "stage": "Prod",
            "accountId": "123456789012",
            "apiId": "abc123",
            "requestId": str(uuid.uuid4()),
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1796300000000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": body,
        "isBase64Encoded": base64,
    }


def load_handler(name: str) -> ModuleType:
    """functions/<name>/app.py as a module (each under its own name, like one Lambda each)."""
    module_name = f"handler_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def invoke(lambda_context: FakeLambdaContext) -> Any:
    """invoke("get_patients", event) -> the handler's response dict."""

    def call(name: str, event: dict[str, Any]) -> dict[str, Any]:
        return load_handler(name).lambda_handler(event, lambda_context)

    return call
