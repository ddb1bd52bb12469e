"""The figures a sync stores without reading payments, and the ranks it writes as a generation of its own.

Each check recounts from the payments themselves (not from the totals the figures now use),
reads the ranks the way a concurrent request does, or migrates a replica that holds data.
"""

from __future__ import annotations

from typing import Any

import pg8000.native
import pytest

from paysync import stats
from paysync.dal.db import Connection, close_quietly, connect
from paysync.reconcile import reconcile_snapshot
from tests.conftest import migrate, snapshot
from tests.integration.test_reads_during_sync import PausedSync
from tests.integration.test_stats import Replica, assert_exact, patient, payment

# The payment figures recounted from the live payments and their patients' rows.
RECOUNT_PAYMENTS = """
    SELECT count(*), coalesce(sum(pay.amount), 0),
           count(*) FILTER (WHERE pay.patient_id IS NULL),
           coalesce(sum(pay.amount) FILTER (WHERE pay.patient_id IS NULL), 0),
           count(*) FILTER (WHERE pat.deleted IS NOT NULL),
           coalesce(sum(pay.amount) FILTER (WHERE pat.deleted IS NOT NULL), 0)
    FROM payments pay LEFT JOIN patients pat ON pat.id = pay.patient_id
    WHERE pay.deleted IS NULL"""
# The patient figures recounted from the live payments (not from the stored totals).
RECOUNT_PATIENTS = """
    SELECT count(*), count(*) FILTER (WHERE paid.n IS NULL), coalesce(sum(paid.total), 0)
    FROM patients pat
    LEFT JOIN (SELECT patient_id, count(*) AS n, sum(amount) AS total FROM payments
               WHERE deleted IS NULL GROUP BY patient_id) paid ON paid.patient_id = pat.id
    WHERE pat.deleted IS NULL"""
STORED = """
    SELECT live_payments, live_payments_sum, orphan_payments, orphan_payments_sum,
           deleted_patient_payments, deleted_patient_payments_sum,
           live_patients, patients_without_payments, live_patients_total
    FROM sync_stats WHERE sync_id IS NOT NULL ORDER BY sync_id DESC LIMIT 1"""
# Every distinct live total and how many live patients are at or below it.
RECOUNT_RANKS = """
    SELECT payments_total, CAST(sum(count(*)) OVER (ORDER BY payments_total) AS bigint)
    FROM patients WHERE deleted IS NULL GROUP BY payments_total ORDER BY payments_total"""
NEWEST_GENERATION = "SELECT ranks_generation FROM sync_stats WHERE sync_id IS NOT NULL ORDER BY sync_id DESC LIMIT 1"
HISTOGRAMS = (
    {"buckets": "4"},
    {"buckets": "3", "min": "1", "max": "20"},
    {"buckets": "1", "min": "5.001", "max": "5.002"},  # no bucket: below and above only
)


# Every test of the module with several rank steps (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rank_step")


def kept_ranks(connection: pg8000.native.Connection, step: int) -> list[list[Any]]:
    """The ranks a sync keeps, recounted: the totals where the count of live patients at or below
    reaches a multiple of `step`, and the largest total."""
    ranks = connection.run(RECOUNT_RANKS)
    below = [0] + [at_or_below for _, at_or_below in ranks[:-1]]
    return [
        [total, at_or_below]
        for (total, at_or_below), before in zip(ranks, below, strict=True)
        if at_or_below // step > before // step or at_or_below == ranks[-1][1]
    ]


def recount(connection: pg8000.native.Connection) -> list[Any]:
    return connection.run(RECOUNT_PAYMENTS)[0] + connection.run(RECOUNT_PATIENTS)[0]


def stored(connection: pg8000.native.Connection) -> list[Any]:
    return connection.run(STORED)[0]


def answers(connection: Connection) -> list[dict[str, Any]]:
    """What GET /stats and a few GET /stats/histogram requests answer on `connection`."""
    return [stats.get_stats({"top": "3"}, connection)] + [stats.get_histogram(q, connection) for q in HISTOGRAMS]


def sync(entity: str, records: list[dict], connection: Connection | None = None) -> None:
    summary = reconcile_snapshot(entity, snapshot(records), source="cli", connection=connection)  # type: ignore[arg-type]
    assert summary.status == "applied"


RENAMED = patient("2") | {"firstName": "Bo"}
# Every way a payment's figures can move: inserts, amount updates, deletes and restores of
# payments and of patients, orphans, orphans linking when their patient arrives, payments
# moving between patients (live, deleted, unknown).
STEPS: list[tuple[str, list[dict]]] = [
    ("patients", [patient(str(n)) for n in range(1, 7)]),
    (
        "payments",
        [payment(f"a{n}", str(n % 6 + 1), f"{n * 7 % 23}.{n * 13 % 100:02d}") for n in range(24)]
        + [payment("o1", "50", "3.33"), payment("o2", "51", "0.01"), payment("o3", "50", "12.00")],
    ),
    # Amounts change; a1 moves from patient 2 to 3, a2 to the unknown 52 (an orphan), o1 to patient 4;
    # a20..a23 are deleted.
    (
        "payments",
        [payment(f"a{n}", str(n % 6 + 1), f"{n * 11 % 29}.{n * 17 % 100:02d}") for n in range(3, 20)]
        + [payment("a0", "1", "1.00"), payment("a1", "3", "2.50"), payment("a2", "52", "4.75")]
        + [payment("o1", "4", "3.33"), payment("o2", "51", "0.01"), payment("o3", "50", "12.00")],
    ),
    # Patients 5 and 6 deleted: their payments stay live, of deleted patients.
    ("patients", [patient(str(n)) for n in range(1, 5)]),
    # a20 and a21 come back (one with a new amount, one moved to deleted patient 6); a5 moves to deleted 5.
    (
        "payments",
        [payment(f"a{n}", str(n % 6 + 1), f"{n * 11 % 29}.{n * 17 % 100:02d}") for n in range(3, 20) if n != 5]
        + [payment("a0", "1", "1.00"), payment("a1", "3", "2.50"), payment("a2", "52", "4.75")]
        + [payment("o1", "4", "3.33"), payment("o2", "51", "0.01"), payment("o3", "50", "12.00")]
        + [payment("a5", "5", "6.00"), payment("a20", "3", "8.08"), payment("a21", "6", "0.00")],
    ),
    # Patient 50 arrives (o3 links), patient 5 is restored (its payments count again), 52 arrives
    # (a2 links), patient 2 is renamed.
    ("patients", [patient(str(n)) for n in (1, 3, 4, 5, 50, 52)] + [RENAMED]),
    # Patient 50 deleted again: o3 belongs to a deleted patient, not to the orphans.
    ("patients", [patient(str(n)) for n in (1, 3, 4, 5, 52)] + [RENAMED]),
    # Nothing changes: the previous figures (and ranks) are kept.
    ("patients", [patient(str(n)) for n in (1, 3, 4, 5, 52)] + [RENAMED]),
]


class TestFiguresWithoutReadingPayments:
    def test_every_figure_equals_a_recount_from_the_payments(self, conn):
        for entity, records in STEPS:
            sync(entity, records)
            assert stored(conn) == recount(conn), f"after the {entity} sync of {len(records)} records"

    def test_the_steps_cover_every_kind_of_change(self, conn):
        seen: dict[str, int] = {}
        for entity, records in STEPS:
            summary = reconcile_snapshot(entity, snapshot(records), source="cli")  # type: ignore[arg-type]
            for kind in ("inserted", "updated", "deleted", "restored"):
                seen[f"{entity} {kind}"] = seen.get(f"{entity} {kind}", 0) + getattr(summary, kind)
        assert all(seen.values()), seen
        # At the end, orphans and payments of deleted patients are both there to count.
        [live, _, orphans, _, of_deleted, _, *_] = stored(conn)
        assert (live, orphans, of_deleted) == (25, 1, 4)

    def test_the_api_answers_match_the_snapshots(self, conn, invoke):
        replica = Replica()
        for entity, records in STEPS:
            replica.sync(entity, records)
            assert_exact(conn, invoke, replica)


class TestRanksByGeneration:
    def test_only_the_generation_the_newest_figures_use_remains(self, conn, rank_step):
        for entity, records in STEPS[:-1]:
            sync(entity, records)
            [[run]] = conn.run("SELECT max(id) FROM sync_runs")
            assert conn.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[run]]
            assert conn.run(NEWEST_GENERATION) == [[run]]
            assert conn.run("SELECT total, patients_at_or_below FROM patient_total_ranks ORDER BY total") == (
                kept_ranks(conn, rank_step)
            )

    def test_a_sync_that_changes_nothing_keeps_the_generation(self, conn):
        for entity, records in STEPS:
            sync(entity, records)
        [[last], [before]] = conn.run("SELECT ranks_generation FROM sync_stats ORDER BY sync_id DESC LIMIT 2")
        assert last == before
        assert conn.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[last]]

    def test_reads_use_the_generation_the_figures_name(self, conn):
        for entity, records in STEPS[:3]:
            sync(entity, records)
        reader = connect()
        try:
            expected = answers(reader)
            [[generation]] = conn.run(NEWEST_GENERATION)
            # Ranks of other generations (a later one on top of the index, an earlier one below):
            # nothing reads them.
            for other in (generation - 1, generation + 1000):
                conn.run(
                    """INSERT INTO patient_total_ranks (generation, total, patients_at_or_below)
                       SELECT :other, total, patients_at_or_below * 7 + 3 FROM patient_total_ranks
                       WHERE generation = :generation""",
                    other=other,
                    generation=generation,
                )
            assert answers(reader) == expected
            # The next sync leaves only its own generation.
            sync(*STEPS[3])
            [[run]] = conn.run("SELECT max(id) FROM sync_runs")
            assert conn.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[run]]
        finally:
            close_quietly(reader)

    def test_a_read_during_an_uncommitted_sync_sees_the_committed_generation(self, conn):
        for entity, records in STEPS[:2]:
            sync(entity, records)
        reader = connect()
        try:
            before = answers(reader)
            [[committed]] = conn.run(NEWEST_GENERATION)
            # The sync stops after storing its figures: its ranks are written, the committed ones
            # deleted, nothing committed yet.
            with PausedSync("payments", STEPS[2][1], r"INSERT INTO sync_stats") as paused:
                assert answers(reader) == before
                # The reader's rows are the committed generation, marked deleted by the running sync.
                marked = reader.run("SELECT DISTINCT generation, xmax <> 0 FROM patient_total_ranks")
                assert marked == [[committed, True]]
            assert paused.error is None
            assert paused.summary is not None
            assert paused.summary.status == "applied"
            after = answers(reader)
            assert after != before
            assert after[0]["syncId"] == paused.summary.sync_id
            assert reader.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[paused.summary.sync_id]]
        finally:
            close_quietly(reader)


def test_the_migration_keeps_a_replica_answering_and_downgrades(replica_database, rank_step):
    params = replica_database
    connection = pg8000.native.Connection(**params.as_kwargs())
    try:
        for entity, records in STEPS:
            sync(entity, records, connection)
        expected = answers(connection)
        ranks = connection.run(RECOUNT_RANKS)

        # Down to the ranks keyed by total: the newest generation, rebuilt with every distinct total
        # (the code of that revision reads no other), under the unique keys.
        migrate(params, "0010", down=True)
        assert connection.run("SELECT total, patients_at_or_below FROM patient_total_ranks ORDER BY total") == ranks
        constraints = connection.run(
            """SELECT conname FROM pg_constraint
               WHERE conrelid = CAST('patient_total_ranks' AS regclass) ORDER BY conname"""
        )
        assert constraints == [["patient_total_ranks_count_key"], ["patient_total_ranks_pkey"]]
        columns = """SELECT column_name FROM information_schema.columns
                     WHERE table_name = :t AND column_name LIKE '%generation'"""
        assert connection.run(columns, t="sync_stats") == connection.run(columns, t="patient_total_ranks") == []

        # Up again, on the replica as the earlier schema left it: the same answers.
        migrate(params, "head")
        assert answers(connection) == expected
        assert connection.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[0]]
        assert connection.run("SELECT DISTINCT ranks_generation FROM sync_stats") == [[0]]

        # The next sync replaces generation 0 with its own.
        sync("payments", [payment("z1", "1", "100.00"), payment("z2", "77", "1.00")], connection)
        [[run]] = connection.run("SELECT max(id) FROM sync_runs")
        assert connection.run("SELECT DISTINCT generation FROM patient_total_ranks") == [[run]]
        assert stored(connection) == recount(connection)
        assert connection.run("SELECT total, patients_at_or_below FROM patient_total_ranks ORDER BY total") == (
            kept_ranks(connection, rank_step)
        )
    finally:
        connection.close()
