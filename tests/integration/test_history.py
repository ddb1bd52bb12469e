"""Single rows and row history against a real PostgreSQL: what each sync writes to the version
tables (in its own transaction, nothing for a first load or an identical re-sync), and the read
routes GET /{entity}/{externalId}, GET /{entity}/{externalId}/history and GET /syncs/{id}/changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devserver.apigateway import proxy_event
from paysync.errors import SnapshotRejected
from paysync.reconcile import reconcile_snapshot
from tests.conftest import body_of, header, snapshot


def patient(eid: str, first: str = "Ann", last: str = "Lee", middle: str | None = None, dob: str = "1990-01-02"):
    return {"externalId": eid, "firstName": first, "lastName": last, "middleName": middle, "dateOfBirth": dob}


def payment(eid: str, amount: str, patient_id: str):
    return {"externalId": eid, "amount": Decimal(amount), "patientId": patient_id}


def sync(entity: str, records: list[dict[str, Any]], **options: Any) -> int:
    """Apply a snapshot; returns its sync id."""
    summary = reconcile_snapshot(entity, snapshot(records), source="cli", force=True, **options)
    return summary.sync_id


def history_counts(conn) -> tuple[int, int]:
    return (
        conn.run("SELECT count(*) FROM patient_versions")[0][0],
        conn.run("SELECT count(*) FROM payment_versions")[0][0],
    )


def get(invoke, path: str, resource: str, query: dict[str, str] | None = None, **path_parameters: str):
    function = {"patients": "get_patients", "payments": "get_payments", "syncs": "get_syncs"}[path.split("/")[1]]
    event = proxy_event("GET", path, query=query, resource=resource, path_parameters=path_parameters or None)
    return invoke(function, event)


def get_row(invoke, entity: str, eid: str, query: dict[str, str] | None = None):
    return get(invoke, f"/{entity}/{eid}", f"/{entity}/{{externalId}}", query, externalId=eid)


def get_history(invoke, entity: str, eid: str, query: dict[str, str] | None = None):
    return get(invoke, f"/{entity}/{eid}/history", f"/{entity}/{{externalId}}/history", query, externalId=eid)


def get_changes(invoke, sync_id: int, query: dict[str, str] | None = None):
    return get(invoke, f"/syncs/{sync_id}/changes", "/syncs/{id}/changes", query, id=str(sync_id))


def ok(response: dict[str, Any]) -> Any:
    assert response["statusCode"] == 200, response["body"]
    return body_of(response)


def not_found(response: dict[str, Any]) -> None:
    assert response["statusCode"] == 404, response["body"]
    assert body_of(response)["error"]["code"] == "not_found"


# ---------------------------------------------------------------- what a sync writes


def test_first_load_and_identical_resync_write_no_history(conn):
    first = sync("patients", [patient("1"), patient("2")])
    sync("payments", [payment("p1", "10.00", "1")])
    sync("patients", [patient("1"), patient("2")])
    sync("payments", [payment("p1", "10.00", "1")])

    assert history_counts(conn) == (0, 0)
    # The live rows name the sync that inserted them.
    assert conn.run("SELECT version_sync_id, version_action FROM patients ORDER BY id") == [
        [first, "inserted"],
        [first, "inserted"],
    ]


def test_update_stores_one_version_with_the_old_values(conn):
    first = sync("patients", [patient("1", first="Ann"), patient("2")])
    second = sync("patients", [patient("1", first="Anne"), patient("2")])

    rows = conn.run(
        """SELECT p.id, v.external_id, v.first_name, v.sync_started, v.sync_ended, v.action,
                  v.valid_from = p.created, v.valid_to = p.updated
           FROM patient_versions v JOIN patients p ON p.id = v.patient_id"""
    )
    assert rows == [[1, "1", "Ann", first, second, "inserted", True, True]]
    assert conn.run("SELECT first_name, version_sync_id, version_action FROM patients WHERE id = 1") == [
        ["Anne", second, "updated"]
    ]


def test_delete_and_restore_are_versions(conn):
    first = sync("patients", [patient("1"), patient("2")])
    deleting = sync("patients", [patient("2")])
    restoring = sync("patients", [patient("1", last="Long"), patient("2")])

    rows = conn.run(
        "SELECT last_name, sync_started, sync_ended, action FROM patient_versions WHERE patient_id = 1 ORDER BY id"
    )
    assert rows == [["Lee", first, deleting, "inserted"], ["Lee", deleting, restoring, "deleted"]]
    assert conn.run("SELECT last_name, deleted, version_action FROM patients WHERE id = 1") == [
        ["Long", None, "restored"]
    ]


def test_payment_history_keeps_old_amount_and_patient(conn):
    sync("patients", [patient("1"), patient("2")])
    first = sync("payments", [payment("p1", "10.00", "1")])
    second = sync("payments", [payment("p1", "12.50", "2")])

    assert conn.run(
        "SELECT payment_id, amount, patient_external_id, sync_started, sync_ended FROM payment_versions"
    ) == [[1, Decimal("10.00"), "1", first, second]]


def test_keep_history_off_writes_no_versions_but_the_changes_feed_lists_the_sync(conn, invoke, settings_env):
    sync("patients", [patient("1"), patient("2"), patient("3")])
    sync("payments", [payment("p1", "10.00", "1"), payment("p2", "5.00", "2")])
    settings_env(KEEP_HISTORY="false")

    n = sync("patients", [patient("1", first="Zoe"), patient("3"), patient("4")])
    m = sync("payments", [payment("p1", "12.50", "1")])

    assert history_counts(conn) == (0, 0)
    assert [(c["externalId"], c["action"], c["before"]) for c in ok(get_changes(invoke, n))] == [
        ("1", "updated", None),
        ("2", "deleted", None),
        ("4", "inserted", None),
    ]
    assert [(c["externalId"], c["action"]) for c in ok(get_changes(invoke, m))] == [
        ("p1", "updated"),
        ("p2", "deleted"),
    ]
    # Back on, the next sync writes the versions it supersedes again.
    settings_env(KEEP_HISTORY="true")
    sync("patients", [patient("1", first="Ann"), patient("3"), patient("4")])
    sync("payments", [payment("p1", "1.00", "1")])
    assert history_counts(conn) == (1, 1)


def test_dry_run_writes_no_history_and_no_sync_id_is_shared(conn):
    sync("patients", [patient("1")])
    summary = reconcile_snapshot("patients", snapshot([patient("1", first="Zed")]), source="cli", dry_run=True)

    assert history_counts(conn) == (0, 0)
    assert conn.run("SELECT first_name, version_action FROM patients") == [["Ann", "inserted"]]
    # The dry run's record is a run of its own, not the id the merge had reserved.
    assert conn.run("SELECT dry_run FROM sync_runs WHERE id = :id", id=summary.sync_id) == [[True]]


def test_rejected_sync_writes_no_history(conn, settings_env):
    sync("patients", [patient("1"), patient("2"), patient("3"), patient("4")])
    settings_env(DELETE_GUARD_MIN_ROWS="1")  # deleting 3 of 4 trips the guard
    with pytest.raises(SnapshotRejected):
        reconcile_snapshot("patients", snapshot([patient("1", first="Zed")]), source="cli")
    with pytest.raises(SnapshotRejected):
        reconcile_snapshot("patients", snapshot([patient("1", first="Zed"), {"externalId": "x"}]), source="cli")

    assert history_counts(conn) == (0, 0)
    assert conn.run("SELECT DISTINCT first_name FROM patients") == [["Ann"]]


def test_applied_sync_run_keeps_the_reserved_id(conn):
    first = sync("patients", [patient("1")])
    second = sync("patients", [patient("1", first="B")])

    assert conn.run("SELECT id, status FROM sync_runs ORDER BY id") == [[first, "applied"], [second, "applied"]]
    assert conn.run("SELECT sync_ended FROM patient_versions") == [[second]]


# ---------------------------------------------------------------- GET one row


def test_get_patient_has_totals_and_deleted(conn, invoke):
    sync("patients", [patient("1"), patient("2")])
    sync("payments", [payment("p1", "10.00", "1"), payment("p2", "0.25", "1")])

    body = ok(get_row(invoke, "patients", "1"))
    assert (body["externalId"], body["paymentsTotal"], body["paymentsCount"], body["deleted"]) == (
        "1",
        Decimal("10.25"),
        2,
        None,
    )
    assert set(body) >= {"id", "firstName", "lastName", "middleName", "dateOfBirth", "created", "updated"}


def test_deleted_row_is_404_unless_included(conn, invoke):
    sync("patients", [patient("1"), patient("2")])
    sync("payments", [payment("p1", "10.00", "1"), payment("p2", "5.00", "2")])
    sync("patients", [patient("2")])
    sync("payments", [payment("p2", "5.00", "2")])

    not_found(get_row(invoke, "patients", "1"))
    not_found(get_row(invoke, "payments", "p1"))
    shown = ok(get_row(invoke, "patients", "1", {"include_deleted": "true"}))
    assert shown["deleted"] is not None
    assert ok(get_row(invoke, "payments", "p1", {"include_deleted": "true"}))["amount"] == Decimal("10.00")
    assert ok(get_row(invoke, "payments", "p2"))["patientId"] == "2"


def test_unknown_row_is_404(conn, invoke):
    sync("patients", [patient("1")])
    not_found(get_row(invoke, "patients", "nope"))
    not_found(get_row(invoke, "payments", "1"))
    not_found(get_history(invoke, "patients", "nope"))


def test_id_with_slash_and_quote_is_found(conn, invoke):
    eid = 'a/b"c\\d history'
    sync("patients", [patient(eid)])
    assert ok(get_row(invoke, "patients", eid))["externalId"] == eid
    assert [v["externalId"] for v in ok(get_history(invoke, "patients", eid))] == [eid]


def test_unknown_query_parameter_names_the_accepted_ones(conn, invoke):
    sync("patients", [patient("1")])
    response = get_row(invoke, "patients", "1", {"limit": "1"})
    assert response["statusCode"] == 400
    assert "include_deleted" in body_of(response)["error"]["message"]


# ---------------------------------------------------------------- as_of


def at(moment: datetime) -> dict[str, str]:
    return {"as_of": moment.isoformat()}


def test_as_of_returns_the_version_of_that_time(conn, invoke):
    sync("patients", [patient("1", first="Ann"), patient("2")])
    [[created]] = conn.run("SELECT created FROM patients WHERE id = 1")
    sync("patients", [patient("1", first="Anne"), patient("2")])
    [[updated]] = conn.run("SELECT updated FROM patients WHERE id = 1")
    sync("patients", [patient("2")])
    [[deleted]] = conn.run("SELECT deleted FROM patients WHERE id = 1")

    not_found(get_row(invoke, "patients", "1", at(created - timedelta(microseconds=1))))
    assert ok(get_row(invoke, "patients", "1", at(created)))["firstName"] == "Ann"
    assert ok(get_row(invoke, "patients", "1", at(updated - timedelta(microseconds=1))))["firstName"] == "Ann"
    version = ok(get_row(invoke, "patients", "1", at(updated)))
    assert (version["firstName"], version["action"]) == ("Anne", "updated")
    not_found(get_row(invoke, "patients", "1", at(deleted)))
    assert ok(get_row(invoke, "patients", "1", {**at(deleted), "include_deleted": "true"}))["action"] == "deleted"
    not_found(get_row(invoke, "patients", "1", at(datetime.now(UTC))))


def test_as_of_before_creation_is_404_for_payments(conn, invoke):
    sync("patients", [patient("1")])
    sync("payments", [payment("p1", "1.00", "1")])
    not_found(get_row(invoke, "payments", "p1", {"as_of": "2000-01-01T00:00:00Z"}))
    assert ok(get_row(invoke, "payments", "p1", at(datetime.now(UTC))))["amount"] == Decimal("1.00")


# ---------------------------------------------------------------- history


def test_history_is_newest_first_and_paginated(conn, invoke):
    ids = [sync("patients", [patient("1", first=name), patient("2")]) for name in ("A", "B", "C", "D")]

    versions = ok(get_history(invoke, "patients", "1"))
    assert [v["firstName"] for v in versions] == ["D", "C", "B", "A"]
    assert versions[0]["validTo"] is None
    assert versions[0]["syncStarted"] == ids[3]
    assert [(v["syncStarted"], v["syncEnded"]) for v in versions[1:]] == [
        (ids[2], ids[3]),
        (ids[1], ids[2]),
        (ids[0], ids[1]),
    ]
    assert [v["action"] for v in versions] == ["updated", "updated", "updated", "inserted"]
    assert all(v["validFrom"] < v["validTo"] for v in versions[1:])

    seen, query = [], {"limit": "1"}
    while True:
        response = get_history(invoke, "patients", "1", query)
        seen += [v["firstName"] for v in ok(response)]
        link = header(response, "Link")
        if link is None:
            break
        query = {k: v[0] for k, v in parse_qs(urlsplit(link[1 : link.index(">")]).query).items()}
    assert seen == ["D", "C", "B", "A"]


def test_payment_history(conn, invoke):
    sync("patients", [patient("1")])
    sync("payments", [payment("p1", "1.00", "1")])
    sync("payments", [])
    versions = ok(get_history(invoke, "payments", "p1"))
    assert [(v["action"], v["amount"]) for v in versions] == [
        ("deleted", Decimal("1.00")),
        ("inserted", Decimal("1.00")),
    ]


# ---------------------------------------------------------------- a sync's changes


def test_changes_of_a_sync_are_exactly_its_diff(conn, invoke):
    sync("patients", [patient("1"), patient("2"), patient("3"), patient("4")])
    sync("patients", [patient("1"), patient("2"), patient("3")])  # 4 deleted
    n = sync("patients", [patient("1", first="Zoe"), patient("2"), patient("4"), patient("5")])

    changes = ok(get_changes(invoke, n))
    assert [(c["externalId"], c["action"], c["changed"]) for c in changes] == [
        ("1", "updated", ["firstName"]),
        ("3", "deleted", ["deleted"]),
        ("4", "restored", ["deleted"]),
        ("5", "inserted", []),
    ]
    assert changes[0]["before"]["firstName"] == "Ann"
    assert changes[0]["after"]["firstName"] == "Zoe"
    assert changes[3]["before"] is None
    [[summary]] = conn.run("SELECT inserted + updated + deleted + restored FROM sync_runs WHERE id = :id", id=n)
    assert summary == len(changes)

    assert [c["externalId"] for c in ok(get_changes(invoke, n, {"action": "deleted"}))] == ["3"]
    assert ok(get_changes(invoke, n, {"entity": "payments"})) == []
    page = get_changes(invoke, n, {"limit": "3"})
    assert len(ok(page)) == 3
    assert header(page, "Link") is not None


def test_changes_survive_later_syncs_and_first_load_lists_inserts(conn, invoke):
    first = sync("patients", [patient("1"), patient("2")])
    second = sync("patients", [patient("1", first="B"), patient("2")])
    sync("patients", [patient("1", first="C"), patient("2")])

    assert [(c["externalId"], c["action"]) for c in ok(get_changes(invoke, first))] == [
        ("1", "inserted"),
        ("2", "inserted"),
    ]
    [change] = ok(get_changes(invoke, second))
    assert (change["before"]["firstName"], change["after"]["firstName"]) == ("Ann", "B")


def test_changes_pages_merge_live_rows_and_later_superseded_versions_in_id_order(conn, invoke):
    sync("patients", [patient(str(n)) for n in range(1, 9)])
    n = sync("patients", [patient(str(n), first="New") for n in range(1, 7)])  # 1-6 updated, 7-8 deleted
    # A later sync supersedes the versions sync n started for 2, 5 and 8: those now live in history.
    sync("patients", [patient(str(k), first="Newer" if k in (2, 5) else "New") for k in range(1, 7)] + [patient("8")])

    whole = ok(get_changes(invoke, n))
    pages, query = [], {"limit": "2"}
    while True:
        page = get_changes(invoke, n, query)
        pages += ok(page)
        link = header(page, "Link")
        if link is None:
            break
        query = {k: v[0] for k, v in parse_qs(urlsplit(link[1 : link.index(">")]).query).items()}

    expected = [(str(k), "updated") for k in range(1, 7)] + [("7", "deleted"), ("8", "deleted")]
    assert [(c["externalId"], c["action"]) for c in whole] == expected
    assert pages == whole
    assert [c["after"]["firstName"] for c in whole[:6]] == ["New"] * 6  # what sync n wrote, not the later value
    assert [c["externalId"] for c in ok(get_changes(invoke, n, {"action": "deleted", "limit": "1"}))] == ["7"]


def test_changes_of_unknown_sync_is_404_and_dry_run_has_none(conn, invoke):
    sync("patients", [patient("1")])
    dry = reconcile_snapshot("patients", snapshot([patient("1", first="X")]), source="cli", dry_run=True)
    not_found(get_changes(invoke, 999))
    assert ok(get_changes(invoke, dry.sync_id)) == []


# ---------------------------------------------------------------- the documented shapes


def test_responses_match_openapi(conn, invoke):
    from tests.integration.test_openapi import check

    sync("patients", [patient("1"), patient("2")])
    sync("payments", [payment("p1", "1.00", "1")])
    sync("patients", [patient("1", middle="M")])
    n = sync("payments", [payment("p1", "2.00", "2")])
    now = datetime.now(UTC).isoformat()
    for entity, eid in (("patients", "2"), ("payments", "p1")):
        one, history = f"/{entity}/{{externalId}}", f"/{entity}/{{externalId}}/history"
        check(get_row(invoke, entity, eid, {"include_deleted": "true"}), "get", one)
        check(get_row(invoke, entity, eid, {"as_of": now, "include_deleted": "true"}), "get", one)
        check(get_row(invoke, entity, "missing"), "get", one)
        check(get_row(invoke, entity, eid, {"as_of": "yesterday"}), "get", one)
        assert len(check(get_history(invoke, entity, eid), "get", history)) == 2
        check(get_history(invoke, entity, eid, {"cursor": "x"}), "get", history)
    assert len(check(get_changes(invoke, n), "get", "/syncs/{id}/changes")) == 1
    check(get_changes(invoke, 999), "get", "/syncs/{id}/changes")
    check(get_changes(invoke, n, {"action": "moved"}), "get", "/syncs/{id}/changes")


def test_bulk_first_load_names_its_sync_and_keeps_the_bulk_path(conn, invoke, monkeypatch):
    from paysync.dal import merge

    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 1)
    built = []
    original = merge._can_build_beside
    monkeypatch.setattr(merge, "_can_build_beside", lambda c, t: built.append((t, original(c, t))) or built[-1][1])

    first = sync("patients", [patient("1"), patient("2")])
    loaded = sync("payments", [payment("p1", "1.00", "1")])

    # No fallback to the plain insert; the payments load rebuilds patients beside with their totals.
    assert built == [("patients", True), ("payments", True), ("patients", True)]
    assert history_counts(conn) == (0, 0)
    # Totals are derived: the rebuilt patients keep the version the patients sync started.
    assert conn.run("SELECT external_id, payments_total, version_sync_id FROM patients ORDER BY id") == [
        ["1", Decimal("1.00"), first],
        ["2", Decimal("0.00"), first],
    ]
    assert [c["externalId"] for c in ok(get_changes(invoke, first))] == ["1", "2"]
    assert [c["externalId"] for c in ok(get_changes(invoke, loaded))] == ["p1"]
    # The swapped-in table keeps the free space left on its pages for in-place updates.
    assert conn.run("SELECT reloptions FROM pg_class WHERE oid = CAST('patients' AS regclass)") == [[["fillfactor=90"]]]
    later = sync("patients", [patient("1", first="Bo"), patient("2")])
    assert conn.run("SELECT first_name, sync_started, sync_ended FROM patient_versions") == [["Ann", first, later]]


# ---------------------------------------------------------------- retention


def test_purge_deletes_only_versions_ended_before_the_retention(conn, database_url, capsys):
    from paysync import cli

    sync("patients", [patient("1", first="A"), patient("2")])
    sync("patients", [patient("1", first="B"), patient("2")])
    sync("patients", [patient("1", first="C")])
    sync("patients", [patient("1", first="C")])
    sync("payments", [payment("p1", "1.00", "1")])
    sync("payments", [payment("p1", "2.00", "1")])
    # The first version of patient 1 ended 40 days ago.
    conn.run("UPDATE patient_versions SET valid_to = valid_to - interval '40 days' WHERE first_name = 'A'")
    live_before = conn.run("SELECT * FROM patients ORDER BY id")

    code = cli.main(["--database-url", database_url, "purge-history", "--days", "30", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["purged"] == {"patients": 1, "payments": 0}
    assert conn.run("SELECT first_name, action FROM patient_versions ORDER BY first_name") == [
        ["Ann", "inserted"],
        ["B", "updated"],
    ]
    assert conn.run("SELECT * FROM patients ORDER BY id") == live_before
    assert history_counts(conn) == (2, 1)
    # The sync login may purge; the read login may only read.
    assert conn.run(
        """SELECT has_table_privilege('paysync_sync', 'patient_versions', 'DELETE'),
                  has_table_privilege('paysync_read', 'payment_versions', 'SELECT'),
                  has_table_privilege('paysync_read', 'payment_versions', 'DELETE')"""
    ) == [[True, True, False]]


@pytest.mark.parametrize("days", ["0", "-1", "36501", "x"])
def test_purge_refuses_a_bad_retention(conn, database_url, days):
    from paysync import cli

    sync("patients", [patient("1", first="A")])
    sync("patients", [patient("1", first="B")])
    conn.run("UPDATE patient_versions SET valid_to = valid_to - interval '400 days'")

    assert cli.main(["--database-url", database_url, "purge-history", "--days", days]) == 2
    assert history_counts(conn) == (1, 0)


def test_purge_without_retention_is_a_usage_error(conn, database_url, settings_env):
    from paysync import cli

    settings_env(HISTORY_RETENTION_DAYS="0")
    assert cli.main(["--database-url", database_url, "purge-history"]) == 2
    settings_env(HISTORY_RETENTION_DAYS="7")
    assert cli.main(["--database-url", database_url, "purge-history"]) == 0


def _aged_history(conn) -> None:
    """Five patients at their third version: the first versions ended 40 days ago, except patient 3's;
    patient 3's second version ended 40 days ago too (an old version at a high id)."""
    for first in ("A", "B", "C"):
        sync("patients", [patient(str(n), first=first) for n in range(1, 6)])
    sync("payments", [payment("p1", "1.00", "1")])
    sync("payments", [payment("p1", "2.00", "1")])
    conn.run(
        """UPDATE patient_versions v SET valid_to = v.valid_to - interval '40 days'
           FROM patients p WHERE p.id = v.patient_id
             AND ((v.first_name = 'A' AND p.external_id <> '3') OR (v.first_name = 'B' AND p.external_id = '3'))"""
    )


def _remaining(conn) -> list[list[Any]]:
    return conn.run(
        """SELECT p.external_id, v.first_name FROM patient_versions v JOIN patients p ON p.id = v.patient_id
           ORDER BY 1, 2"""
    )


def test_the_purge_deletes_old_versions_batch_by_batch_and_keeps_newer_ones(conn, monkeypatch):
    from paysync import retention
    from paysync.dal import history
    from paysync.dal.db import connect

    _aged_history(conn)
    live_before = conn.run("SELECT * FROM patients ORDER BY id")
    calls = []
    original = history.purge_versions
    monkeypatch.setattr(retention, "BATCH_ROWS", 2)
    monkeypatch.setattr(history, "purge_versions", lambda *a: calls.append(a[1]) or original(*a))

    connection = connect()
    try:
        purge = retention.purge_history(connection, 30)
    finally:
        connection.close()

    assert purge.purged == {"patients": 5, "payments": 0}
    assert calls == ["patients", "patients", "patients", "payments"]  # 2 + 2 + 1, then none
    assert purge.batches == 4
    assert _remaining(conn) == [["1", "B"], ["2", "B"], ["3", "A"], ["4", "B"], ["5", "B"]]
    assert conn.run("SELECT * FROM patients ORDER BY id") == live_before
    assert history_counts(conn) == (5, 1)


def test_each_purge_batch_commits_on_its_own(conn, monkeypatch):
    from paysync import retention
    from paysync.dal import history
    from paysync.dal.db import connect

    _aged_history(conn)
    original = history.purge_versions
    calls = []

    def fail_on_the_third(*args):
        calls.append(args[1])
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(retention, "BATCH_ROWS", 2)
    monkeypatch.setattr(history, "purge_versions", fail_on_the_third)
    connection = connect()
    try:
        with pytest.raises(RuntimeError):
            retention.purge_history(connection, 30)
    finally:
        connection.close()

    # The two finished batches stay deleted: an interrupted purge loses at most one batch of work.
    assert history_counts(conn) == (10 - 4, 1)


def test_the_purge_refuses_no_retention(conn):
    from paysync import retention
    from paysync.dal.db import connect

    _aged_history(conn)
    connection = connect()
    try:
        with pytest.raises(ValueError, match="at least one day"):
            retention.purge_history(connection, 0)
    finally:
        connection.close()
    assert history_counts(conn) == (10, 1)
