"""The database connection dies mid-sync: nothing is applied, the failure is recorded (from a
fresh connection), the API answers 503 and the S3 handler raises so Lambda retries.

The backend is really terminated (pg_terminate_backend from another connection)
just before the statement of each phase runs, or in the middle of the COPY.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pg8000.native
import pytest

from devserver.apigateway import proxy_event as api_event
from paysync import reconcile
from paysync.cli import EXIT_FAILURE, main
from paysync.dal import merge
from paysync.dal.db import parse_database_url
from paysync.errors import DatabaseUnavailable
from tests.conftest import TEST_BUCKET, body_of, snapshot, table_state
from tests.integration.test_s3_sync import put, s3_event


class KillingConnection:
    """A sync's connection whose backend is terminated right before the first statement that
    matches `pattern` (for COPY: once the server is taking the data)."""

    def __init__(self, connection: pg8000.native.Connection, admin_url: str, pattern: str, state: dict) -> None:
        self._connection = connection
        self._admin_url = admin_url
        self._pattern = re.compile(pattern)
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def run(self, sql: str, stream: Iterable[str] | None = None, **params: Any) -> Any:
        if not self._state["killed"] and self._pattern.search(sql):
            if stream is not None:
                return self._connection.run(sql, stream=self._kill_first(stream), **params)
            self._kill()
        if stream is not None:
            return self._connection.run(sql, stream=stream, **params)
        return self._connection.run(sql, **params)

    def _kill_first(self, chunks: Iterable[str]) -> Iterable[str]:
        self._kill()
        yield from chunks

    def _kill(self) -> None:
        [[pid]] = self._connection.run("SELECT pg_backend_pid()")
        admin = pg8000.native.Connection(**parse_database_url(self._admin_url).as_kwargs())
        try:
            [[done]] = admin.run("SELECT pg_terminate_backend(:pid, 5000)", pid=pid)
        finally:
            admin.close()
        assert done
        self._state["killed"] = True


def patient(external_id: int, first: str = "Ann") -> dict:
    return {"firstName": first, "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": str(external_id)}


def payment(external_id: int, patient_id: int, amount: str) -> dict:
    return {"amount": Decimal(amount), "patientId": str(patient_id), "externalId": str(external_id)}


# Phase -> (module, function whose connection dies, statement it dies before, entity, snapshot).
# Before every case the replica holds patients 1..3 and payments 10, 11, except "index rebuild",
# which needs an empty patients table (a bulk first load).
CHANGED_PATIENTS = [patient(1, "Changed"), patient(2), patient(4), patient(5)]  # update, delete 3, insert 4 and 5
PHASES: dict[str, tuple[Any, str, str, str, list[dict]]] = {
    "copy": (merge, "load_stage", r"^COPY", "patients", [patient(i) for i in range(1, 400)]),
    "diff": (merge, "diff_snapshot", r"CREATE TEMP TABLE diff_", "patients", CHANGED_PATIENTS),
    "repeat check": (merge, "repeats_known_ids", r"count\(DISTINCT id\)", "patients", CHANGED_PATIENTS),
    "soft delete and update": (merge, "apply_patients", r"SET first_name", "patients", CHANGED_PATIENTS),
    "insert": (merge, "apply_patients", r"INSERT INTO patients", "patients", CHANGED_PATIENTS),
    "orphan link": (merge, "apply_patients", r"UPDATE payments pay SET patient_id", "patients", CHANGED_PATIENTS),
    "index rebuild": (merge, "apply_patients", r"ADD CONSTRAINT|CREATE (UNIQUE )?INDEX", "patients", CHANGED_PATIENTS),
    "totals": (
        merge,
        "refresh_totals",
        r"SET payments_total",
        "payments",
        [payment(10, 1, "99.99"), payment(12, 2, "5.00")],
    ),
    "record": (reconcile, "insert_run", r"INSERT INTO sync_runs", "patients", CHANGED_PATIENTS),
}


@pytest.fixture
def replica(conn):
    """Patients 1..3 and payments 10, 11 applied."""
    reconcile.reconcile_snapshot("patients", snapshot([patient(i) for i in (1, 2, 3)]), source="cli")
    reconcile.reconcile_snapshot("payments", snapshot([payment(10, 1, "1.00"), payment(11, 3, "2.00")]), source="cli")
    return conn


@pytest.fixture
def fault(replica, database_url, monkeypatch) -> Callable[[str], tuple[str, list[dict]]]:
    """fault(phase): arm the kill for `phase`; returns the entity and snapshot to sync."""

    def arm(phase: str) -> tuple[str, list[dict]]:
        module, function, pattern, entity, records = PHASES[phase]
        if phase == "index rebuild":
            replica.run("TRUNCATE sync_runs, sync_row_changes, payments, patients RESTART IDENTITY CASCADE")
            monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 2)
        original = getattr(module, function)
        state = {"killed": False}

        def wrapped(connection, *args, **kwargs):
            return original(KillingConnection(connection, database_url, pattern, state), *args, **kwargs)

        monkeypatch.setattr(module, function, wrapped)
        return entity, records

    return arm


def schema_state(conn: pg8000.native.Connection) -> list[list[Any]]:
    return conn.run(
        """SELECT tablename, indexdef FROM pg_indexes WHERE tablename IN ('patients', 'payments')
        UNION ALL
        SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid IN ('patients'::regclass, 'payments'::regclass)
        ORDER BY 1, 2"""
    )


def last_run(conn: pg8000.native.Connection) -> list[Any]:
    [row] = conn.run("SELECT entity, source, status, error->>'code' FROM sync_runs ORDER BY id DESC LIMIT 1")
    return row


def runs(conn: pg8000.native.Connection) -> int:
    return conn.run("SELECT count(*) FROM sync_runs")[0][0]


def assert_nothing_applied(conn, before, schema_before, runs_before, entity, source) -> None:
    assert table_state(conn) == before
    assert schema_state(conn) == schema_before
    assert runs(conn) == runs_before + 1
    assert last_run(conn) == [entity, source, "failed", "database_unavailable"]


@pytest.mark.parametrize("phase", PHASES)
def test_direct_sync_raises_database_unavailable(fault, replica, phase):
    entity, records = fault(phase)
    before, schema_before, runs_before = table_state(replica), schema_state(replica), runs(replica)

    with pytest.raises(DatabaseUnavailable) as raised:
        reconcile.reconcile_snapshot(entity, snapshot(records), source="cli")

    assert isinstance(raised.value.__cause__, pg8000.native.InterfaceError | pg8000.native.DatabaseError)
    assert_nothing_applied(replica, before, schema_before, runs_before, entity, "cli")


@pytest.mark.parametrize("phase", PHASES)
def test_api_answers_503(fault, replica, invoke, phase):
    entity, records = fault(phase)
    before, schema_before, runs_before = table_state(replica), schema_state(replica), runs(replica)
    body = snapshot(records).getvalue().decode()

    response = invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=body))

    assert response["statusCode"] == 503
    assert body_of(response)["error"]["code"] == "database_unavailable"
    assert_nothing_applied(replica, before, schema_before, runs_before, entity, "api")


@pytest.mark.parametrize("phase", PHASES)
def test_s3_handler_raises_so_lambda_retries(fault, replica, s3, invoke, phase):
    entity, records = fault(phase)
    version = put(s3, f"{entity}/fault.json", snapshot(records).getvalue())
    before, schema_before, runs_before = table_state(replica), schema_state(replica), runs(replica)

    with pytest.raises(DatabaseUnavailable):
        invoke("reconcile", s3_event(f"{entity}/fault.json", version))

    assert_nothing_applied(replica, before, schema_before, runs_before, entity, "s3")
    [[key, bucket]] = replica.run("SELECT s3_key, s3_bucket FROM sync_runs ORDER BY id DESC LIMIT 1")
    assert (key, bucket) == (f"{entity}/fault.json", TEST_BUCKET)


@pytest.mark.parametrize("phase", PHASES)
def test_cli_exits_with_failure(fault, replica, tmp_path, capsys, phase):
    entity, records = fault(phase)
    path = tmp_path / "snapshot.json"
    path.write_bytes(snapshot(records).getvalue())
    before, schema_before, runs_before = table_state(replica), schema_state(replica), runs(replica)

    code = main(["import", entity, str(path), "--no-progress"])

    assert code == EXIT_FAILURE
    assert "connection was lost" in capsys.readouterr().err
    assert_nothing_applied(replica, before, schema_before, runs_before, entity, "cli")


def test_retry_after_the_outage_applies_the_snapshot(fault, replica):
    entity, records = fault("soft delete and update")
    with pytest.raises(DatabaseUnavailable):
        reconcile.reconcile_snapshot(entity, snapshot(records), source="cli")

    summary = reconcile.reconcile_snapshot(entity, snapshot(records), source="cli")

    assert (summary.status, summary.inserted, summary.updated, summary.deleted) == ("applied", 2, 1, 1)


def test_unreachable_database_for_the_record_keeps_the_original_error(fault, replica, database_url, monkeypatch):
    entity, records = fault("insert")
    before, runs_before = table_state(replica), runs(replica)
    connection = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())

    def unreachable(params=None):
        raise DatabaseUnavailable("the database at nowhere is unreachable")

    monkeypatch.setattr(reconcile, "connect", unreachable)
    with pytest.raises(DatabaseUnavailable) as raised:
        reconcile.reconcile_snapshot(entity, snapshot(records), source="cli", connection=connection)

    assert "connection was lost during the sync" in raised.value.message
    assert isinstance(raised.value.__cause__, pg8000.native.InterfaceError | pg8000.native.DatabaseError)
    assert table_state(replica) == before
    assert runs(replica) == runs_before  # nowhere to record it: logged instead


def test_unexpected_error_is_recorded_and_answers_500(replica, invoke, monkeypatch):
    before = table_state(replica)

    def broken_refresh(connection):
        connection.run("SELECT 1 / 0")

    monkeypatch.setattr(merge, "refresh_totals", broken_refresh)
    body = json.dumps([{"amount": 5, "patientId": "1", "externalId": "99"}])

    response = invoke("post_payments", api_event("POST", "/payments", body=body))

    assert response["statusCode"] == 500
    assert body_of(response)["error"]["code"] == "internal_error"
    assert table_state(replica) == before
    assert last_run(replica) == ["payments", "api", "failed", "internal_error"]


def test_lost_connection_while_recording_a_rejection_records_it_on_a_fresh_one(replica, database_url, monkeypatch):
    before = table_state(replica)
    original = reconcile.insert_run
    state = {"killed": False}

    def killing_insert(connection, summary):
        return original(KillingConnection(connection, database_url, r"INSERT INTO sync_runs", state), summary)

    monkeypatch.setattr(reconcile, "insert_run", killing_insert)
    bad = io.BytesIO(b'[{"firstName": "", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "9"}]')

    with pytest.raises(reconcile.SnapshotRejected) as raised:
        reconcile.reconcile_snapshot("patients", bad, source="cli")

    assert state["killed"]
    assert raised.value.code == "invalid_records"
    assert raised.value.sync_id is not None
    assert table_state(replica) == before
    assert last_run(replica) == ["patients", "cli", "rejected", "invalid_records"]
