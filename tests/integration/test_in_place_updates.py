"""Updates in place (HOT) and the changes feed that makes them possible.

The live tables do not index the version columns: a sync's changed rows are named in
sync_row_changes, the rows it inserted are its id range (sync_runs.last_row_id). These tests
check that a payment's amount change, deletion and restore write no index entry, that the feed
lists exactly what each sync did (paged, per action, history kept or not), and that the
migration rebuilds the feed of every earlier sync from the rows and versions it finds.
"""

from __future__ import annotations

from typing import Any

import pg8000.native
import pytest

from paysync.dal import history
from paysync.dal.db import close_quietly
from paysync.reconcile import reconcile_snapshot
from tests.conftest import migrate, snapshot
from tests.integration.test_history import patient, payment

ACTIONS = (None, "inserted", "updated", "deleted", "restored")


def sync(connection: pg8000.native.Connection, entity: str, records: list[dict[str, Any]], **options: Any) -> int:
    summary = reconcile_snapshot(entity, snapshot(records), source="cli", force=True, connection=connection, **options)
    assert summary.status == "applied"
    return summary.sync_id


def feed(connection: pg8000.native.Connection, entity: str, sync_id: int, action: str | None) -> list[Any]:
    """Every page of the sync's changes (two rows a page), as (id, external id, action, before action)."""
    rows: list[Any] = []
    after = None
    while True:
        page = history.sync_changes(connection, entity, sync_id, action, after, 2)  # type: ignore[arg-type]
        rows += [(r["id"], r["external_id"], r["action"], r["before_action"]) for r in page]
        if len(page) < 2:
            return rows
        after = page[-1]["id"]


def every_feed(connection: pg8000.native.Connection) -> dict[tuple[int, str | None], list[Any]]:
    runs = connection.run("SELECT id, entity FROM sync_runs WHERE entity IS NOT NULL ORDER BY id")
    return {(run, action): feed(connection, entity, run, action) for run, entity in runs for action in ACTIONS}


def updates(connection: pg8000.native.Connection) -> tuple[int, int]:
    """(updates, HOT updates) of payments so far, as the statistics report them."""
    connection.run("SELECT pg_stat_clear_snapshot()")
    [[updated, hot]] = connection.run(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'payments'"
    )
    return updated, hot


@pytest.fixture
def own(database_url: str, conn: pg8000.native.Connection):
    """A connection for the syncs, whose table statistics are published on demand."""
    from paysync.dal.db import connect, parse_database_url

    connection = connect(parse_database_url(database_url))
    yield connection
    close_quietly(connection)


def test_amount_changes_deletions_and_restores_write_no_index_entry(conn, own):
    patients = [patient(str(n)) for n in range(1, 4)]
    sync(own, "patients", patients)
    base = [payment(f"p{n}", f"{n}.00", str(n % 3 + 1)) for n in range(1, 9)]
    sync(own, "payments", base)

    def counted(records: list[dict[str, Any]]) -> tuple[int, int, int]:
        """The sync's id, and how many payments it updated, in place or not."""
        before = updates(conn)
        sync_id = sync(own, "payments", records)
        own.run("SELECT pg_stat_force_next_flush()")
        own.run("SELECT 1")
        after = updates(conn)
        return sync_id, after[0] - before[0], after[1] - before[1]

    # Two amounts change and p8 goes: three updates, all in place.
    changed = [payment("p1", "1.50", "2"), payment("p2", "9.99", "3"), *base[2:7]]
    _, updated, in_place = counted(changed)
    assert (updated, in_place) == (3, 3)
    # p8 comes back (restored), unchanged otherwise: in place too.
    restore, updated, in_place = counted([*changed, base[7]])
    assert (updated, in_place) == (1, 1)
    # Moving p3 to another patient changes an indexed column: a new index entry is unavoidable.
    moved = [*changed[:2], payment("p3", "3.00", "2"), *changed[3:], base[7]]
    _, updated, in_place = counted(moved)
    assert (updated, in_place) == (1, 0)
    # The feed still names the rows of each of those syncs.
    assert feed(own, "payments", restore, None) == [(8, "p8", "restored", "deleted")]


def test_the_feed_lists_each_sync_s_rows_with_or_without_history(conn, own, settings_env):
    first = sync(own, "patients", [patient("1"), patient("2"), patient("3")])
    settings_env(KEEP_HISTORY="false")
    # The first load's rows 1 and 2 change without history: its versions of them are gone.
    unkept = sync(own, "patients", [patient("1", first="Bo"), patient("3"), patient("4")])
    settings_env(KEEP_HISTORY="true")
    dry = reconcile_snapshot("patients", snapshot([patient("9")]), source="cli", dry_run=True, connection=own)
    kept = sync(own, "patients", [patient("1", first="Cy"), patient("2"), patient("3"), patient("5")])

    assert feed(own, "patients", first, None) == [(3, "3", "inserted", None)]
    assert feed(own, "patients", unkept, None) == [
        (1, "1", "updated", None),
        (2, "2", "deleted", None),
        (4, "4", "inserted", None),
    ]
    assert feed(own, "patients", kept, None) == [
        (1, "1", "updated", "updated"),
        (2, "2", "restored", "deleted"),
        (4, "4", "deleted", "inserted"),
        (6, "5", "inserted", None),  # id 5 went to the dry run's row, rolled back
    ]
    assert feed(own, "patients", kept, "restored") == [(2, "2", "restored", "deleted")]
    assert feed(own, "patients", kept, "inserted") == [(6, "5", "inserted", None)]
    assert feed(own, "patients", unkept, "updated") == [(1, "1", "updated", None)]
    # A dry run and a sync of the other entity list nothing; the runs' recorded id ranges.
    assert feed(own, "patients", dry.sync_id, None) == feed(own, "payments", kept, None) == []
    assert own.run("SELECT id, last_row_id FROM sync_runs ORDER BY id") == [
        [first, 3],
        [unkept, 4],
        [dry.sync_id, None],
        [kept, 6],
    ]


def test_the_migration_rebuilds_the_feed_of_every_earlier_sync(replica_database, settings_env):
    params = replica_database
    connection = pg8000.native.Connection(**params.as_kwargs())
    try:
        sync(connection, "patients", [patient(str(n)) for n in range(1, 6)])
        sync(connection, "payments", [payment(f"a{n}", f"{n}.00", str(n % 5 + 1)) for n in range(10)])
        sync(connection, "patients", [patient(str(n), first="Bo" if n == 2 else "Ann") for n in (1, 2, 3, 6)])
        settings_env(KEEP_HISTORY="false")
        sync(connection, "payments", [payment(f"a{n}", f"{n}.50", "1") for n in range(2, 12)])
        settings_env(KEEP_HISTORY="true")
        reconcile_snapshot(
            "payments", snapshot([payment("x", "1.00", "1")]), source="cli", dry_run=True, connection=connection
        )
        sync(connection, "patients", [patient(str(n)) for n in range(1, 8)])
        sync(connection, "payments", [payment(f"a{n}", f"{n}.00", str(n % 5 + 1)) for n in range(12)])
        written = every_feed(connection)
        assert sum(len(rows) for rows in written.values()) > 50

        # Down to the live tables' version indexes, then up: the feed is rebuilt as the syncs wrote it.
        migrate(params, "0012", down=True)
        assert connection.run("SELECT to_regclass('sync_row_changes')") == [[None]]
        assert connection.run("SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%version_sync_idx'") == [[2]]
        migrate(params, "head")
        assert every_feed(connection) == written
        # Every applied sync has a range again (exact where its rows or their versions remain).
        assert connection.run("SELECT dry_run, last_row_id IS NULL FROM sync_runs ORDER BY id") == (
            [[False, False]] * 4 + [[True, True]] + [[False, False]] * 2
        )
    finally:
        connection.close()


def test_rows_from_before_the_history_lie_below_every_range(replica_database):
    params = replica_database
    connection = pg8000.native.Connection(**params.as_kwargs())
    try:
        first = sync(connection, "patients", [patient("1"), patient("2"), patient("3")])
        loaded = sync(connection, "payments", [payment("a", "1.00", "1")])
        later = sync(connection, "patients", [patient(str(n)) for n in range(1, 5)])
        migrate(params, "0012", down=True)
        # As if the first patients sync had run before history was kept: its rows name no sync.
        connection.run("UPDATE patients SET version_sync_id = NULL, version_action = NULL WHERE id <= 3")
        migrate(params, "head")

        assert connection.run("SELECT id, last_row_id FROM sync_runs ORDER BY id") == [
            [first, 3],
            [loaded, 1],
            [later, 4],
        ]
        assert feed(connection, "patients", first, None) == []
        assert feed(connection, "patients", later, None) == [(4, "4", "inserted", None)]
    finally:
        connection.close()


def test_a_sync_that_changed_rows_leaves_statistics_for_its_changes_pages(conn, own):
    def estimated(table: str) -> float:
        return conn.run("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)", t=table)[0][0]

    sync(own, "patients", [patient("1"), patient("2"), patient("3")])
    # Both tables were just emptied (TRUNCATE forgets their size), and a first load writes neither;
    # a dry run analyzes nothing either (its rows are rolled back).
    reconcile_snapshot("patients", snapshot([patient("1", first="Bo")]), source="cli", dry_run=True, connection=own)
    assert (estimated("sync_row_changes"), estimated("patient_versions")) == (-1, -1)
    sync(own, "patients", [patient("1", first="Bo"), patient("3")])
    # The sync's two rows (one updated, one deleted) are counted: the planner knows the newest sync.
    assert (estimated("sync_row_changes"), estimated("patient_versions")) == (2, 2)
