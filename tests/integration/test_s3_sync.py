"""The S3 path: object -> reconcile handler, at-least-once and out-of-order delivery."""

from __future__ import annotations

import gzip
import json

import pytest

from devserver import s3 as devserver_s3
from paysync.errors import DatabaseUnavailable
from tests.conftest import TEST_BUCKET, sample_bytes, table_state


def s3_event(key: str, version_id: str | None) -> dict:
    """An S3 ObjectCreated:Put notification as S3 sends it (key URL-encoded)."""
    return devserver_s3.s3_event(
        bucket=TEST_BUCKET,
        region="us-east-1",
        key=key,
        size=1,
        etag="x",
        version_id=version_id,
        event_name="ObjectCreated:Put",
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


def test_non_snapshot_keys_are_ignored(conn, s3, invoke):
    version = put(s3, "patients/readme.txt", b"hello")

    assert outcome(invoke("reconcile", s3_event("patients/readme.txt", version))) == ("ignored", "not_a_snapshot_key")
    assert conn.run("SELECT count(*) FROM sync_runs") == [[0]]


def test_database_outage_raises_so_lambda_retries(conn, s3, invoke, settings_env):
    version = put(s3, "patients/a.json", sample_bytes("patients"))
    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

    with pytest.raises(DatabaseUnavailable):
        invoke("reconcile", s3_event("patients/a.json", version))
