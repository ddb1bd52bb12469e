"""Shared fixtures: a real PostgreSQL (embedded pgserver, or TEST_DATABASE_URL), moto S3,
Lambda contexts and the events/ files."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.dbapi
import pg8000.native
import pytest

from devserver.lambdas import LambdaContext, load_handler
from paysync.config import get_settings
from paysync.dal import db, storage
from paysync.dal import stats as stats_sql
from paysync.dal.db import parse_database_url
from paysync.jsonio import to_json
from paysync.migrate import _alembic_config, upgrade

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
SAMPLES = ROOT / "samples"
# Truncating sync_runs empties sync_stats too (its rows belong to a run);
# patient_total_ranks is rebuilt by the first sync that stores figures.
TABLES = ("sync_runs", "payments", "patients", "patient_versions", "payment_versions", "sync_row_changes")
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
def replica_database(conn: pg8000.native.Connection, database_url: str) -> Iterator[Any]:
    """A second database on the session's server (migrated to head), and its connection parameters."""
    name = f"paysync_replica_{uuid.uuid4().hex[:8]}"
    conn.run(f"CREATE DATABASE {name}")
    params = parse_database_url(_with_database(database_url, name))
    try:
        upgrade(params)
        yield params
    finally:
        conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(params: Any, revision: str, down: bool = False) -> None:
    """Upgrade the database at `params` to `revision`, or (`down`) downgrade it to `revision`."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if not down:
        upgrade(params, revision)
        return
    engine = create_engine(
        "postgresql+pg8000://", creator=lambda: pg8000.dbapi.connect(**params.as_kwargs()), poolclass=NullPool
    )
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), revision)
    finally:
        engine.dispose()


@pytest.fixture(params=[1, 3, stats_sql.RANK_STEP], ids=lambda step: f"ranks-every-{step}")
def rank_step(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The test runs with the ranks keeping every total, one per 3 patients (lookups walk between
    kept totals even on a few patients), and the default; the step is returned."""
    monkeypatch.setattr(stats_sql, "RANK_STEP", request.param)
    return request.param


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


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext("paysync-test", memory_limit_in_mb=512, timeout_seconds=30, region="us-east-1")


def load_event(name: str) -> dict[str, Any]:
    """An event file from events/ (the same files `sam local invoke -e` takes)."""
    return json.loads((EVENTS / name).read_text())


class Trickle:
    """A stream that returns at most `step` bytes per read (a network read, an S3 body)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.reads = data, step, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        take = self.step if size < 0 else min(size, self.step)
        chunk, self.data = self.data[:take], self.data[take:]
        return chunk


def sample_bytes(entity: str) -> bytes:
    """The brief's sample snapshot of `entity`."""
    return (SAMPLES / f"{entity}.json").read_bytes()


def snapshot(records: list[Any]) -> io.BytesIO:
    """A snapshot stream holding `records` as a JSON array (Decimal amounts as JSON numbers)."""
    return io.BytesIO(to_json(records).encode())


def table_state(connection: pg8000.native.Connection) -> dict[str, list[list[Any]]]:
    """Every row of the replica's tables, to compare before/after a refused request."""
    return {table: connection.run(f"SELECT * FROM {table} ORDER BY id") for table in ("patients", "payments")}


def database_state(connection: pg8000.native.Connection) -> dict[str, list[list[Any]]]:
    """Every row of every table the tests truncate (the replica, its history and the sync runs)."""
    return {table: connection.run(f"SELECT * FROM {table} ORDER BY 1, 2, 3") for table in TABLES}


@pytest.fixture
def invoke(lambda_context: LambdaContext) -> Any:
    """invoke("get_patients", event) -> the handler's response dict."""

    def call(name: str, event: dict[str, Any]) -> dict[str, Any]:
        return load_handler(ROOT / "functions" / name / "app.py", f"handler_{name}")(event, lambda_context)

    return call


# The brief's samples once both are loaded: patient externalId -> total of its live payments.
SAMPLE_TOTALS = {"4": Decimal("0.00"), "15": Decimal("0.00"), "8": Decimal("9.29"), "5": Decimal("17.22")}


def body_of(response: dict[str, Any]) -> Any:
    """A handler response's JSON body, numbers with decimals as Decimal (exact)."""
    return json.loads(response["body"], parse_float=Decimal)


def header(response: dict[str, Any], name: str) -> str | None:
    """A response header, case-insensitively, from headers or multiValueHeaders."""
    single = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
    if name.lower() in single:
        return single[name.lower()]
    values = multi.get(name.lower())
    return values[0] if values else None
