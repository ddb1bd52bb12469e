"""The S3 path: object -> reconcile handler, at-least-once and out-of-order delivery."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devserver import s3 as devserver_s3
from devserver.apigateway import proxy_event as api_event
from devserver.template import Function, S3Notification
from paysync.errors import DatabaseUnavailable
from paysync.uploads import snapshot_key
from tests.conftest import TEST_BUCKET, body_of, sample_bytes, table_state


def s3_event(key: str, version_id: str | None, sequencer: str | None = None) -> dict:
    """An S3 ObjectCreated:Put notification as S3 sends it (key URL-encoded)."""
    return devserver_s3.s3_event(
        bucket=TEST_BUCKET,
        region="us-east-1",
        key=key,
        size=1,
        etag="x",
        version_id=version_id,
        event_name="ObjectCreated:Put",
        sequencer=sequencer,
    )


def put(s3, key: str, body: bytes) -> str:
    return s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)["VersionId"]


def outcome(response: dict) -> tuple[str, str | None]:
    [result] = response["objects"]
    return result["status"], result["code"]


def test_snapshot_object_is_applied(conn, s3, invoke):
    version = put(s3, "patients/2026/11/26/day one.json", sample_bytes("patients"))

    response = invoke("reconcile", s3_event("patients/2026/11/26/day one.json", version))

    assert outcome(response) == ("applied", None)
    assert conn.run("SELECT count(*) FROM patients") == [[4]]
    assert conn.run("SELECT source, s3_key, s3_version_id FROM sync_runs") == [
        ["s3", "patients/2026/11/26/day one.json", version]
    ]


def test_gzip_object_is_applied(conn, s3, invoke):
    version = put(s3, "payments/snap.json.gz", gzip.compress(sample_bytes("payments")))

    assert outcome(invoke("reconcile", s3_event("payments/snap.json.gz", version))) == ("applied", None)
    assert conn.run("SELECT count(*) FROM payments") == [[6]]


def test_redelivered_event_is_skipped_and_recorded(conn, s3, invoke):
    version = put(s3, "patients/a.json", sample_bytes("patients"))
    invoke("reconcile", s3_event("patients/a.json", version))
    before = table_state(conn)

    again = invoke("reconcile", s3_event("patients/a.json", version))

    assert outcome(again) == ("skipped", "already_applied")
    assert table_state(conn) == before
    assert conn.run("SELECT status FROM sync_runs ORDER BY id") == [["applied"], ["skipped"]]


def test_older_snapshot_delivered_late_is_skipped_as_stale(conn, s3, invoke):
    old_version = put(s3, "patients/old.json", sample_bytes("patients"))
    newer = json.loads(sample_bytes("patients"))[:2]
    new_version = put(s3, "patients/new.json", json.dumps(newer).encode())
    # S3 LastModified has one-second resolution: make the first object clearly older.
    from moto.backends import get_backend

    backend = get_backend("s3")["123456789012"]["global"]
    old_object = backend.get_object(TEST_BUCKET, "patients/old.json", version_id=old_version)
    old_object.last_modified = old_object.last_modified.replace(year=2025)

    assert outcome(invoke("reconcile", s3_event("patients/new.json", new_version))) == ("applied", None)
    late = invoke("reconcile", s3_event("patients/old.json", old_version))

    assert outcome(late) == ("skipped", "stale")
    assert conn.run("SELECT count(*) FROM patients WHERE deleted IS NULL") == [[2]]


def test_invalid_snapshot_is_recorded_as_rejected_without_raising(conn, s3, invoke):
    version = put(s3, "payments/bad.json", b'[{"amount": "x", "patientId": "1", "externalId": "1"}]')

    response = invoke("reconcile", s3_event("payments/bad.json", version))

    assert outcome(response) == ("rejected", "invalid_records")
    assert conn.run("SELECT status, error->>'code' FROM sync_runs") == [["rejected", "invalid_records"]]
    assert conn.run("SELECT count(*) FROM payments") == [[0]]


def test_an_object_over_the_size_bound_is_rejected_from_its_size_unread(conn, s3, invoke, settings_env):
    sample = sample_bytes("patients")
    compressed = gzip.compress(sample)
    version = put(s3, "patients/big.json.gz", compressed)
    settings_env(MAX_SNAPSHOT_BYTES=str(len(compressed) - 1))
    before = table_state(conn)

    response = invoke("reconcile", s3_event("patients/big.json.gz", version))

    assert outcome(response) == ("rejected", "snapshot_too_large")
    assert table_state(conn) == before
    [[status, code, received, message]] = conn.run(
        "SELECT status, error->>'code', received, error->>'message' FROM sync_runs"
    )
    assert (status, code, received) == ("rejected", "snapshot_too_large", 0)
    assert f"the object is {len(compressed)} bytes" in message


def test_an_object_at_the_size_bound_is_applied(conn, s3, invoke, settings_env):
    sample = sample_bytes("patients")
    version = put(s3, "patients/exact.json", sample)
    settings_env(MAX_SNAPSHOT_BYTES=str(len(sample)))

    response = invoke("reconcile", s3_event("patients/exact.json", version))

    assert outcome(response)[0] == "applied"


def test_non_snapshot_keys_are_recorded_as_skipped(conn, s3, invoke):
    version = put(s3, "patients/readme.txt", b"hello")

    response = invoke("reconcile", s3_event("patients/readme.txt", version))

    assert outcome(response) == ("skipped", "not_a_snapshot_key")
    assert conn.run("SELECT entity, source, status, error->>'code', s3_key, s3_version_id FROM sync_runs") == [
        ["patients", "s3", "skipped", "not_a_snapshot_key", "patients/readme.txt", version]
    ]
    assert response["objects"][0]["syncId"] == conn.run("SELECT id FROM sync_runs")[0][0]


def test_a_key_naming_no_entity_is_recorded_without_one_and_shown_as_null(conn, s3, invoke):
    response = invoke("reconcile", s3_event("Patients/x.json", "v1"))

    [[sync_id, entity]] = conn.run("SELECT id, entity FROM sync_runs")
    assert outcome(response) == ("skipped", "not_a_snapshot_key")
    assert entity is None
    shown = body_of(
        invoke(
            "get_syncs",
            api_event("GET", f"/syncs/{sync_id}", resource="/syncs/{id}", path_parameters={"id": str(sync_id)}),
        )
    )
    assert (shown["entity"], shown["status"], shown["error"]["code"]) == (None, "skipped", "not_a_snapshot_key")


def test_skipped_key_with_the_database_down_raises_so_lambda_retries(conn, s3, invoke, settings_env):
    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

    with pytest.raises(DatabaseUnavailable):
        invoke("reconcile", s3_event("payments/x.json.tmp", "v1"))


def test_the_event_sequencer_and_the_issued_keys_order_are_recorded(conn, s3, invoke):
    issued = datetime(2026, 11, 27, 12, 0, 0, 250_000, tzinfo=UTC)
    key = snapshot_key("patients", now=issued)
    version = put(s3, key, sample_bytes("patients"))
    event = s3_event(key, version)
    event["Records"][0]["s3"]["object"]["sequencer"] = "00a1b2"

    assert outcome(invoke("reconcile", event)) == ("applied", None)

    [[sequencer, seq]] = conn.run("SELECT s3_sequencer, snapshot_seq FROM sync_runs")
    assert sequencer == "00A1B2"
    assert seq == f"{int(issued.timestamp() * 1000)}-{key.rsplit('-', 1)[1].split('.')[0]}"


def test_database_outage_raises_so_lambda_retries(conn, s3, invoke, settings_env):
    version = put(s3, "patients/a.json", sample_bytes("patients"))
    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

    with pytest.raises(DatabaseUnavailable):
        invoke("reconcile", s3_event("patients/a.json", version))


def test_local_s3_events_carry_sequencers_in_write_order_and_keep_them_on_retry(s3):
    class Recorder:
        """A runtime that fails the first delivery of every object version, then records events."""

        def __init__(self) -> None:
            self.failed: set[tuple[str, str]] = set()
            self.events: list[dict] = []

        def invoke(self, name: str, event: dict) -> dict:
            obj = event["Records"][0]["s3"]["object"]
            self.events.append(obj)
            if (obj["key"], obj["versionId"]) not in self.failed:
                self.failed.add((obj["key"], obj["versionId"]))
                raise RuntimeError("first attempt fails")
            return {"objects": []}

    function = Function(name="ReconcileFunction", module_path=Path("functions/reconcile/app.py"), handler_name="lh")
    runtime = Recorder()
    poller = devserver_s3.NotificationPoller(TEST_BUCKET, "us-east-1", [S3Notification(function)], runtime)
    first = put(s3, "patients/same.json", b"[]")
    second = put(s3, "patients/same.json", b"[ ]")  # same key, most likely the same second

    # Deliveries run on worker threads: poll until both versions failed once and were delivered again.
    deadline = time.monotonic() + 30
    while len(runtime.events) < 4 and time.monotonic() < deadline:
        poller.poll()
        time.sleep(0.05)
    poller.stop()

    sequencers = {(e["versionId"], n): e["sequencer"] for n, e in enumerate(runtime.events)}
    by_version: dict[str, set[str]] = {}
    for (version, _), sequencer in sequencers.items():
        by_version.setdefault(version, set()).add(sequencer)
    assert all(len(values) == 1 for values in by_version.values())  # a retry keeps its sequencer
    [older], [newer] = by_version[first], by_version[second]
    assert int(older, 16) < int(newer, 16)
    assert len(older) == len(newer) == 18
    assert older == older.upper()
