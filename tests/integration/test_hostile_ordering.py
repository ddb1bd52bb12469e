"""An older snapshot never wins: every delivery order of S3 objects stored in the same second,
S3 against API syncs around one second, and client-stated snapshot times (stale, forced, hostile).

Each case checks the outcome, that refused or skipped snapshots leave the replica
unchanged, and that every delivery or request left a sync run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest
from moto.backends import get_backend

from devserver.apigateway import proxy_event as api_event
from paysync.cli import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, main
from paysync.uploads import snapshot_key
from tests.conftest import TEST_BUCKET, body_of, table_state
from tests.integration.test_s3_sync import s3_event

OLDER = [
    {"firstName": "Old", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "1"},
    {"firstName": "Bo", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "2"},
    {"firstName": "Cy", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "3"},
]
NEWER = [
    {"firstName": "New", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "1"},
    {"firstName": "Bo", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": "2"},
]
SECOND = datetime(2026, 11, 27, 9, 30, 15, tzinfo=UTC)  # the second both objects are stored in


def live(conn) -> list[list[Any]]:
    return conn.run("SELECT external_id, first_name FROM patients WHERE deleted IS NULL ORDER BY external_id")


def content_of(records: list[dict]) -> list[list[str]]:
    return [[r["externalId"], r["firstName"]] for r in records]


def put(s3, key: str, records: list[dict] | bytes, last_modified: datetime) -> str:
    body = records if isinstance(records, bytes) else json.dumps(records).encode()
    version = s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)["VersionId"]
    # S3 reports LastModified in whole seconds; the stored instant has more.
    backend = get_backend("s3")["123456789012"]["global"]
    backend.get_object(TEST_BUCKET, key, version_id=version).last_modified = last_modified.replace(tzinfo=None)
    return version


def deliver(invoke, key: str, version: str, sequencer: str | None = None) -> tuple[str, str | None]:
    [result] = invoke("reconcile", s3_event(key, version, sequencer))["objects"]
    return result["status"], result["code"]


def runs(conn) -> list[list[Any]]:
    return conn.run("SELECT source, status, error->>'code' FROM sync_runs ORDER BY id")


# Two objects stored in the same LastModified second; "old" was written first.
# kind -> ((old key, old sequencer), (new key, new sequencer))
def _issued(offset_us: int) -> str:
    return snapshot_key("patients", now=SECOND + timedelta(microseconds=offset_us))


PAIRS: dict[str, tuple[tuple[str, str | None], tuple[str, str | None]]] = {
    "issued keys, different milliseconds": ((_issued(100_000), None), (_issued(101_000), None)),
    "issued keys, same millisecond": ((_issued(100_100), None), (_issued(100_900), None)),
    "issued keys, newer issued in the next second": ((_issued(999_999), None), (_issued(1_000_000), None)),
    "one key, sequencers of different lengths": (("patients/same.json", "FF"), ("patients/same.json", "0100")),
    "one key, lower-case sequencers": (("patients/same.json", "0a"), ("patients/same.json", "0B")),
    "one key, S3-like sequencers": (
        ("patients/same.json", "0055AED6DCD90281E5"),
        ("patients/same.json", "0055AED6DCD90281E6"),
    ),
}
APPLIED, STALE, ALREADY = ("applied", None), ("skipped", "stale"), ("skipped", "already_applied")


def _expected(order: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """What each delivery must do: the rule, written out independently of the implementation."""
    applied: set[str] = set()
    outcomes = []
    for name in order:
        if name in applied:
            outcomes.append(ALREADY)
        elif name == "old" and "new" in applied:
            outcomes.append(STALE)
        else:
            applied.add(name)
            outcomes.append(APPLIED)
    return outcomes


ORDERS = [order for n in (2, 3) for order in product(("old", "new"), repeat=n) if {"old", "new"} <= set(order)]


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
@pytest.mark.parametrize("kind", PAIRS)
def test_same_second_objects_in_every_delivery_order(conn, s3, invoke, kind, order):
    (old_key, old_seq), (new_key, new_seq) = PAIRS[kind]
    # The newer object is written second; LastModified values share one second.
    objects = {
        "old": (old_key, put(s3, old_key, OLDER, SECOND + timedelta(milliseconds=200)), old_seq),
        "new": (new_key, put(s3, new_key, NEWER, SECOND + timedelta(milliseconds=700)), new_seq),
    }
    outcomes = []
    for name in order:
        before = table_state(conn)
        outcomes.append(deliver(invoke, *objects[name]))
        if outcomes[-1][0] == "skipped":
            assert table_state(conn) == before

    assert outcomes == _expected(order)
    assert live(conn) == content_of(NEWER)
    assert runs(conn) == [["s3", status, code] for status, code in outcomes]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_unordered_keys_in_one_second_are_both_applied_in_delivery_order(conn, s3, invoke, order):
    """Keys not issued by POST /uploads carry no order of their own: neither is provably older."""
    records = {"a": OLDER, "b": NEWER}
    versions = {name: put(s3, f"patients/{name}.json", records[name], SECOND) for name in "ab"}

    outcomes = [deliver(invoke, f"patients/{name}.json", versions[name]) for name in order]

    assert outcomes == [APPLIED, APPLIED]
    assert live(conn) == content_of(records[order[-1]])


def post(invoke, records: list[dict] | str, **query: str) -> dict:
    body = records if isinstance(records, str) else json.dumps(records)
    return invoke("post_patients", api_event("POST", "/patients", body=body, query=query or None))


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# An API sync (snapshot time: its own, microseconds), then an S3 object whose LastModified second
# is placed relative to that time.
API_THEN_S3 = {
    "same second": (timedelta(0), NEWER, APPLIED),
    "next second": (timedelta(seconds=1), NEWER, APPLIED),
    "previous second": (timedelta(seconds=-1), NEWER, STALE),
    "same second, corrupt object": (timedelta(0), b"[{not json", ("rejected", "malformed_snapshot")),
    "previous second, corrupt object": (timedelta(seconds=-1), b"[{not json", STALE),
}


@pytest.mark.parametrize("case", API_THEN_S3)
def test_api_sync_then_s3_object(conn, s3, invoke, case):
    shift, body, expected = API_THEN_S3[case]
    assert post(invoke, OLDER)["statusCode"] == 200
    [[api_time]] = conn.run("SELECT snapshot_at FROM sync_runs")
    key = "patients/after-api.json"
    version = put(s3, key, body, api_time.replace(microsecond=0) + shift + timedelta(milliseconds=999))
    before = table_state(conn)

    assert deliver(invoke, key, version) == expected

    if expected == APPLIED:
        assert live(conn) == content_of(NEWER)
    else:
        assert table_state(conn) == before
    assert runs(conn) == [["api", "applied", None], ["s3", *expected]]


# An S3 object stored in second S, then an API sync stating its snapshot time relative to S.
S3_THEN_API = {
    "half a second later": ({"snapshot_at": "+0.5"}, 200, None),
    "the same instant as the second": ({"snapshot_at": "+0"}, 200, None),
    "a microsecond before the second": ({"snapshot_at": "-0.000001"}, 409, "stale_snapshot"),
    "an hour before": ({"snapshot_at": "-3600"}, 409, "stale_snapshot"),
    "an hour before, dry run": ({"snapshot_at": "-3600", "dry_run": "true"}, 409, "stale_snapshot"),
    "an hour before, forced": ({"snapshot_at": "-3600", "force": "true"}, 200, None),
    "no snapshot time": ({}, 200, None),
}


@pytest.mark.parametrize("case", S3_THEN_API)
def test_s3_object_then_api_sync(conn, s3, invoke, case):
    query, status, code = S3_THEN_API[case]
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    key = "patients/before-api.json"
    assert deliver(invoke, key, put(s3, key, OLDER, second + timedelta(milliseconds=600))) == APPLIED
    if "snapshot_at" in query:
        query = {**query, "snapshot_at": rfc3339(second + timedelta(seconds=float(query["snapshot_at"])))}
    before = table_state(conn)

    response = post(invoke, NEWER, **query)

    assert response["statusCode"] == status
    [[status_recorded, code_recorded, snapshot_at, forced]] = conn.run(
        "SELECT status, error->>'code', snapshot_at, forced FROM sync_runs WHERE source = 'api'"
    )
    if status == 409:
        error = body_of(response)["error"]
        assert error["code"] == code
        assert error["syncId"] is not None
        assert table_state(conn) == before
        assert (status_recorded, code_recorded) == ("rejected", "stale_snapshot")
    else:
        assert body_of(response)["status"] == "applied"
        assert (status_recorded, code_recorded) == ("applied", None)
        assert live(conn) == content_of(OLDER if query.get("dry_run") else NEWER)
        assert forced == (query.get("force") == "true")
    if "snapshot_at" in query:
        assert rfc3339(snapshot_at) == query["snapshot_at"]  # the stated time is the run's


def test_a_forced_old_snapshot_does_not_lower_the_bar(conn, invoke):
    now = datetime.now(UTC)
    assert post(invoke, NEWER, snapshot_at=rfc3339(now - timedelta(minutes=1)))["statusCode"] == 200
    assert post(invoke, OLDER, snapshot_at=rfc3339(now - timedelta(minutes=10)), force="true")["statusCode"] == 200
    before = table_state(conn)

    response = post(invoke, NEWER, snapshot_at=rfc3339(now - timedelta(minutes=5)))

    assert response["statusCode"] == 409
    assert body_of(response)["error"]["code"] == "stale_snapshot"
    assert table_state(conn) == before


def test_stale_check_is_per_entity(conn, invoke):
    now = datetime.now(UTC)
    payments = json.dumps([{"amount": 1.5, "patientId": "1", "externalId": "p1"}])
    response = invoke(
        "post_payments", api_event("POST", "/payments", body=payments, query={"snapshot_at": rfc3339(now)})
    )
    assert response["statusCode"] == 200

    assert post(invoke, OLDER, snapshot_at=rfc3339(now - timedelta(hours=1)))["statusCode"] == 200


def _future() -> str:
    return rfc3339(datetime.now(UTC) + timedelta(days=1))


HOSTILE_SNAPSHOT_AT = [
    "",
    "now",
    "yesterday",
    "2026-11-27",
    "12:00:00Z",
    "2026-11-27T12:00:00",
    "2026-11-27 12:00:00Z",
    "2026-11-27T12:00:00 01:00",  # an unencoded + arrives as a space
    "2026-11-27T12:00:00+0100",
    "2026-11-27T12:00:00+01",
    "2026-11-27T12:00Z",
    "2026-11-27T12:00:00.Z",
    "2026-11-27T12:00:00.1234567890Z",
    "2026-11-27T12:00:00,5Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-11-27T24:00:00Z",
    "2026-11-27T12:60:00Z",
    "2025-12-31T23:59:60Z",
    "1969-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-11-27T12:00:00+24:00",
    "2026-11-27T12:00:00+05:60",
    "2026-11-27T12:00:00UTC",
    "2026-11-27T12:00:00GMT+1",
    "+2026-11-27T12:00:00Z",
    "-2026-11-27T12:00:00Z",
    "20261-11-27T12:00:00Z",
    "2026-W48-5T12:00:00Z",
    "2026-331T12:00:00Z",
    "\uff12\uff10\uff12\uff16-11-27T12:00:00Z"  # full-width digits,
    "\u0662\u0660\u0662\u0666-11-27T12:00:00Z"  # Arabic-Indic digits,
    "2026-11-27T12:00:00Z\n",
    " 2026-11-27T12:00:00Z",
    "2026-11-27T12:00:00Z\x00",
    "2026-11-27T12:00:00ZZ",
    "2026-11-27T12:00:00Z; DROP TABLE patients",
    "1795780800",
    "1e10",
    "NaN",
    "2999-01-01T00:00:00Z",
    "future",
]


@pytest.mark.parametrize("raw", HOSTILE_SNAPSHOT_AT)
def test_hostile_snapshot_at_is_400(conn, invoke, raw):
    assert post(invoke, OLDER)["statusCode"] == 200
    before, runs_before = table_state(conn), runs(conn)
    raw = _future() if raw == "future" else raw

    response = post(invoke, NEWER, snapshot_at=raw)

    assert response["statusCode"] == 400
    error = body_of(response)["error"]
    assert error["code"] == "invalid_request"
    assert "snapshot_at" in error["message"]
    assert table_state(conn) == before
    assert runs(conn) == runs_before  # refused before any sync started, like every bad parameter


def test_snapshot_at_given_twice_is_400(conn, invoke):
    event = api_event("POST", "/patients", body=json.dumps(NEWER))
    event["multiValueQueryStringParameters"] = {"snapshot_at": ["2026-11-27T12:00:00Z", "2026-11-27T12:00:01Z"]}
    event["queryStringParameters"] = {"snapshot_at": "2026-11-27T12:00:01Z"}

    response = invoke("post_patients", event)

    assert response["statusCode"] == 400
    assert live(conn) == []
    assert runs(conn) == []


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("2025-11-27t10:00:00z", "2025-11-27T10:00:00Z"),
        ("2025-11-27T10:00:00-00:00", "2025-11-27T10:00:00Z"),
        ("2025-11-27T11:00:00+01:00", "2025-11-27T10:00:00Z"),
        ("2025-11-27T10:00:00.123456789Z", "2025-11-27T10:00:00.123456Z"),
        ("2025-11-28T09:59:00+23:59", "2025-11-27T10:00:00Z"),
    ],
)
def test_valid_snapshot_times_are_stored_exactly(conn, invoke, raw, stored):
    assert post(invoke, NEWER, snapshot_at=raw)["statusCode"] == 200

    [[snapshot_at]] = conn.run("SELECT snapshot_at FROM sync_runs")
    assert rfc3339(snapshot_at) == stored


def test_cli_snapshot_at(conn, tmp_path, capsys):
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    older.write_text(json.dumps(OLDER))
    newer.write_text(json.dumps(NEWER))
    cli = ["import", "patients", "--no-progress", "--snapshot-at"]

    assert main([*cli, "2025-11-27T10:00:00Z", str(newer)]) == EXIT_OK
    before = table_state(conn)
    assert main([*cli, "2025-11-27T09:00:00+00:00", str(older)]) == EXIT_REJECTED
    assert "older than the newest applied" in capsys.readouterr().err
    assert table_state(conn) == before
    assert main([*cli, "2025-11-27 09:00", str(older)]) == EXIT_USAGE
    assert "--snapshot-at must be an RFC 3339 time" in capsys.readouterr().err
    assert table_state(conn) == before
    assert main([*cli, "2025-11-27T09:00:00Z", "--force", str(older)]) == EXIT_OK
    assert live(conn) == content_of(OLDER)
    assert runs(conn) == [["cli", "applied", None], ["cli", "rejected", "stale_snapshot"], ["cli", "applied", None]]


def test_forced_route_applies_a_stale_snapshot_and_records_its_time(conn, invoke, settings_env):
    settings_env(ALLOW_FORCE_PARAMETER="false")
    now = datetime.now(UTC)
    assert post(invoke, NEWER, snapshot_at=rfc3339(now - timedelta(minutes=1)))["statusCode"] == 200
    old = rfc3339(now - timedelta(hours=1))
    assert post(invoke, OLDER, snapshot_at=old, force="true")["statusCode"] == 403

    response = invoke(
        "post_forced", api_event("POST", "/forced/patients", body=json.dumps(OLDER), query={"snapshot_at": old})
    )

    assert response["statusCode"] == 200
    assert live(conn) == content_of(OLDER)
    [[status, forced, snapshot_at]] = conn.run(
        "SELECT status, forced, snapshot_at FROM sync_runs ORDER BY id DESC LIMIT 1"
    )
    assert (status, forced, rfc3339(snapshot_at)) == ("applied", True, old)
