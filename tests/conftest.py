"""Shared fixtures: a real PostgreSQL (embedded pgserver, or TEST_DATABASE_URL), moto S3,
Lambda contexts and the events/ files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from paysync.config import get_settings
from paysync.dal import db, storage
from paysync.dal.db import parse_database_url
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
