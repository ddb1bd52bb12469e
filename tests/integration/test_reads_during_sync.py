"""Reads never wait for a sync, first loads included: proven with locks, not timings.

A sync runs in a thread on its own connection and is stopped right after one of
its statements; meanwhile another connection, with a short lock_timeout, runs
the read API's queries. A read that had to wait for the sync's locks would fail
with lock_not_available instead of answering.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from types import TracebackType
from typing import Any

import pg8000.native
import pytest

from paysync.dal import merge, queries, sync_runs
from paysync.dal.db import Connection, close_quietly, connect
from paysync.models import SyncSummary
from paysync.reconcile import reconcile_snapshot
from tests.conftest import snapshot

PATIENTS = 40
PAYMENTS = 120
BULK_MIN_ROWS = 20  # first loads of this test's size take the bulk path
READ_LOCK_TIMEOUT = "200ms"
PAUSE_LIMIT_SECONDS = 60


def patients(count: int, *, prefix: str = "") -> list[dict[str, Any]]:
    return [
        {"externalId": f"p{i}", "firstName": f"{prefix}F{i}", "lastName": "L", "dateOfBirth": "1980-01-02"}
        for i in range(count)
    ]


def payments(count: int, *, amount: str = "10.00") -> list[dict[str, Any]]:
    # The payments of p40 to p43 (4 in every 44) wait for their patient: orphans.
    return [
        {"externalId": f"pay{i}", "amount": Decimal(amount), "patientId": f"p{i % (PATIENTS + 4)}"}
        for i in range(count)
    ]


def sync(entity: str, records: list[dict[str, Any]]) -> SyncSummary:
    return reconcile_snapshot(entity, snapshot(records), source="cli")  # type: ignore[arg-type]


class PausedSync:
    """A sync in a thread on its own connection, held right after its first statement
    matching `pattern` until the block ends (it then runs to its commit)."""

    def __init__(self, entity: str, records: list[dict[str, Any]], pattern: str) -> None:
        self.connection = connect()
        self.pid = self.connection.run("SELECT pg_backend_pid()")[0][0]
        self.paused, self.resume = threading.Event(), threading.Event()
        self.summary: SyncSummary | None = None
        self.error: BaseException | None = None
        run = self.connection.run

        def pausing_run(sql: str, *args: Any, **kwargs: Any) -> Any:
            result = run(sql, *args, **kwargs)
            if not self.paused.is_set() and re.search(pattern, sql):
                self.paused.set()
                self.resume.wait(PAUSE_LIMIT_SECONDS)
            return result

        self.connection.run = pausing_run  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._sync, args=(entity, records))

    def _sync(self, entity: str, records: list[dict[str, Any]]) -> None:
        try:
            self.summary = reconcile_snapshot(
                entity,  # type: ignore[arg-type]
                snapshot(records),
                source="cli",
                connection=self.connection,
            )
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.paused.set()

    def __enter__(self) -> PausedSync:
        self.thread.start()
        assert self.paused.wait(PAUSE_LIMIT_SECONDS)
        assert self.error is None, "the sync failed before reaching the pause"
        assert self.summary is None, "the sync ended before reaching the pause"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.resume.set()
        self.thread.join(PAUSE_LIMIT_SECONDS)
        close_quietly(self.connection)


@pytest.fixture
def reader(conn: pg8000.native.Connection) -> Iterator[Connection]:
    """A read API connection (on the emptied replica) that gives up instead of waiting for any lock."""
    connection = connect()
    connection.run(f"SET lock_timeout = '{READ_LOCK_TIMEOUT}'")
    yield connection
    close_quietly(connection)


def read_api(connection: Connection) -> dict[str, Any]:
    """What GET /patients, GET /payments (all, and one patient's) and GET /syncs query."""
    return {
        "patients": queries.list_patients(connection, total_min=None, total_max=None, after=None, limit=100),
        "wide range": queries.list_patients(
            connection, total_min=Decimal("0"), total_max=Decimal("1000000"), after=None, limit=100
        ),
        "payments": queries.list_payments(connection, patient_external_id=None, after_id=None, limit=100),
        "payments of p1": queries.list_payments(connection, patient_external_id="p1", after_id=None, limit=100),
        "syncs": sync_runs.list_runs(connection, 100, None),
    }


def blocking_locks(connection: pg8000.native.Connection, pid: int) -> list[list[str]]:
    """Locks `pid` holds on the read API's tables that a read (ACCESS SHARE) would wait for."""
    return connection.run(
        """SELECT relation::regclass::text, mode FROM pg_locks
           WHERE pid = :pid AND locktype = 'relation' AND granted AND mode = 'AccessExclusiveLock'
             AND relation IN (CAST('public.patients' AS regclass), CAST('public.payments' AS regclass),
                              CAST('public.sync_runs' AS regclass))""",
        pid=pid,
    )


def assert_reads_unblocked(
    conn: pg8000.native.Connection, reader: Connection, entity: str, records: list[dict[str, Any]], pattern: str
) -> SyncSummary:
    """Pause a sync after `pattern`; the reads answer with the committed state, and the sync
    holds no lock they would wait for. Returns the sync's summary once it committed."""
    before = read_api(reader)
    with PausedSync(entity, records, pattern) as paused:
        assert blocking_locks(conn, paused.pid) == []
        assert read_api(reader) == before
    assert paused.error is None
    assert paused.summary is not None
    assert paused.summary.status == "applied"
    return paused.summary


# Statements of a bulk first load, each a pause point: staging (a first load makes no diff),
# the insert into the new table, its index and key builds, orphans, totals, statistics.
FIRST_LOAD_PATIENTS = [
    r"COPY stage_patients",
    r"INSERT INTO patients \(",
    r"CREATE INDEX",
    r"PRIMARY KEY",
    r"UNIQUE \(external_id\)",
    r"UPDATE payments pay SET patient_id",
    r"UPDATE patients p SET payments_total",
    r"ANALYZE patients",
]
FIRST_LOAD_PAYMENTS = [
    r"COPY stage_payments",
    r"INSERT INTO payments \(",
    r"CREATE INDEX",
    r"PRIMARY KEY",
    r"UNIQUE \(external_id\)",
    r"FOREIGN KEY",
    r"OVERRIDING SYSTEM VALUE",  # patients rebuilt beside with their totals
    r"ANALYZE patients",
    r"ANALYZE payments",
]


@pytest.mark.parametrize("pattern", FIRST_LOAD_PATIENTS)
def test_reads_answer_during_a_bulk_first_load_of_patients(
    conn: pg8000.native.Connection, reader: Connection, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)

    summary = assert_reads_unblocked(conn, reader, "patients", patients(PATIENTS), pattern)

    assert summary.inserted == PATIENTS
    assert len(read_api(reader)["patients"]) == PATIENTS


@pytest.mark.parametrize("pattern", FIRST_LOAD_PAYMENTS)
def test_reads_answer_during_a_bulk_first_load_of_payments(
    conn: pg8000.native.Connection, reader: Connection, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    # Given patients already loaded (the foreign key's target is the busy table)
    sync("patients", patients(PATIENTS))
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)

    summary = assert_reads_unblocked(conn, reader, "payments", payments(PAYMENTS), pattern)

    assert summary.inserted == PAYMENTS
    after = read_api(reader)
    assert len(after["payments"]) == 100
    assert [row["external_id"] for row in after["payments of p1"]] == ["pay1", "pay45", "pay89"]
    assert all(row["payments_total"] > 0 for row in after["patients"])


NEXT_DAY_PAYMENTS = [
    r"COPY stage_payments",
    r"CREATE TEMP TABLE diff_payments",
    r"UPDATE payments t\s+SET amount",
    r"INSERT INTO payments \(",
    r"UPDATE patients p SET payments_total",
    r"ANALYZE payments",
]
NEXT_DAY_PATIENTS = [
    r"COPY stage_patients",
    r"UPDATE patients t\s+SET first_name",
    r"INSERT INTO patients \(",
    r"UPDATE payments pay SET patient_id",
    r"UPDATE patients p SET payments_total",
]


@pytest.mark.parametrize("pattern", NEXT_DAY_PAYMENTS)
def test_reads_answer_during_a_next_day_sync_of_payments(
    conn: pg8000.native.Connection, reader: Connection, pattern: str
) -> None:
    sync("patients", patients(PATIENTS))
    sync("payments", payments(PAYMENTS))
    # The next day: every amount changed, the last 10 payments gone, 10 new ones
    next_day = payments(PAYMENTS - 10, amount="11.00") + [
        {"externalId": f"new{i}", "amount": Decimal("1.00"), "patientId": "p1"} for i in range(10)
    ]

    summary = assert_reads_unblocked(conn, reader, "payments", next_day, pattern)

    assert (summary.inserted, summary.updated, summary.deleted) == (10, PAYMENTS - 10, 10)


@pytest.mark.parametrize("pattern", NEXT_DAY_PATIENTS)
def test_reads_answer_during_a_next_day_sync_of_patients(
    conn: pg8000.native.Connection, reader: Connection, pattern: str
) -> None:
    sync("patients", patients(PATIENTS))
    sync("payments", payments(PAYMENTS))
    # The next day: every name changed, the last 2 patients gone, the 4 orphans' patients arrive
    next_day = patients(PATIENTS - 2, prefix="N") + [
        {"externalId": f"p{i}", "firstName": "F", "lastName": "L", "dateOfBirth": "1990-01-01"}
        for i in range(PATIENTS, PATIENTS + 4)
    ]

    summary = assert_reads_unblocked(conn, reader, "patients", next_day, pattern)

    assert (summary.inserted, summary.updated, summary.deleted, summary.orphaned) == (4, PATIENTS - 2, 2, 0)


def test_the_swap_lets_reads_pass_while_a_long_read_holds_the_table(
    conn: pg8000.native.Connection, reader: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap's exclusive lock waits for reads in flight; its request gives up every
    few milliseconds, so reads arriving meanwhile do not queue behind it."""
    sync("patients", patients(PATIENTS))
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)
    monkeypatch.setattr(merge, "SWAP_LOCK_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(merge, "SWAP_LOCK_TRIES", 100_000)
    # Given a long read transaction holding payments
    long_read = connect()
    long_read.run("BEGIN")
    long_read.run("SELECT count(*) FROM payments")
    try:
        # when a first load reaches the swap and its first try to lock gives up
        paused = PausedSync("payments", payments(PAYMENTS), r"ROLLBACK TO SAVEPOINT swap_lock")
        with paused:
            assert blocking_locks(conn, paused.pid) == []
            paused.resume.set()  # and goes on trying
            # then reads arriving meanwhile find the tables free between two tries
            for _ in range(20):
                assert read_api(reader)["payments"] == []
            assert paused.thread.is_alive()
            # and once the long read ends, the sync swaps and commits
            long_read.run("COMMIT")
    finally:
        close_quietly(long_read)
    assert paused.error is None
    assert paused.summary is not None
    assert paused.summary.inserted == PAYMENTS
    assert len(read_api(reader)["payments"]) == 100


@pytest.mark.parametrize("pattern", [r"INSERT INTO patients \(", r"UPDATE payments pay SET patient_id"])
def test_a_first_load_of_patients_after_their_payments_inserts_in_place(
    conn: pg8000.native.Connection, reader: Connection, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    """Payments waiting for their patients keep the patients table in place (its
    replacement could not take their foreign key at once); reads still never wait."""
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)
    sync("payments", payments(PAYMENTS))
    table = conn.run("SELECT CAST('public.patients' AS regclass)::oid")

    summary = assert_reads_unblocked(conn, reader, "patients", patients(PATIENTS), pattern)

    assert (summary.inserted, summary.orphaned) == (PATIENTS, 8)
    assert conn.run("SELECT CAST('public.patients' AS regclass)::oid") == table
    assert all(row["payments_total"] > 0 for row in read_api(reader)["patients"])


def _build_schema_holds_tables(conn: pg8000.native.Connection) -> bool:
    return conn.run(
        """SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = :name)""",
        name=merge.BUILD_SCHEMA,
    )[0][0]


def test_a_bulk_first_load_as_a_dry_run_leaves_the_table_as_it_was(
    conn: pg8000.native.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync("patients", patients(PATIENTS))
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)
    table = conn.run("SELECT CAST('public.payments' AS regclass)::oid")

    summary = reconcile_snapshot("payments", snapshot(payments(PAYMENTS)), source="cli", dry_run=True)

    assert (summary.status, summary.inserted) == ("applied", PAYMENTS)
    assert conn.run("SELECT count(*) FROM payments") == [[0]]
    assert conn.run("SELECT CAST('public.payments' AS regclass)::oid") == table
    assert not _build_schema_holds_tables(conn)


def test_a_bulk_first_load_that_fails_late_leaves_the_table_as_it_was(
    conn: pg8000.native.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync("patients", patients(PATIENTS))
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", BULK_MIN_ROWS)
    table = conn.run("SELECT CAST('public.payments' AS regclass)::oid")
    before = conn.run("SELECT external_id, payments_total FROM patients ORDER BY id")

    def broken(connection: Connection) -> int:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(merge, "refresh_totals", broken)
        with pytest.raises(RuntimeError):
            sync("payments", payments(PAYMENTS))

    assert conn.run("SELECT count(*) FROM payments") == [[0]]
    assert conn.run("SELECT CAST('public.payments' AS regclass)::oid") == table
    assert conn.run("SELECT external_id, payments_total FROM patients ORDER BY id") == before
    assert not _build_schema_holds_tables(conn)
    assert conn.run("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1") == [["failed"]]
    # and the next attempt loads it
    assert sync("payments", payments(PAYMENTS)).inserted == PAYMENTS
