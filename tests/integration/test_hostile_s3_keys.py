"""S3 keys that name no snapshot: each is recorded as a skipped run (not_a_snapshot_key), nothing
is read or applied, and the handler does not raise (a retry cannot make such a key valid)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from paysync.uploads import entity_of_key
from tests.conftest import TEST_BUCKET, sample_bytes, table_state
from tests.integration.test_s3_sync import s3_event

# key -> the entity recorded (the first segment when it names one exactly, else None)
HOSTILE_KEYS = {
    "Patients/x.json": None,
    "PAYMENTS/x.json": None,
    "patients/x.JSON": "patients",
    "patients/x.Json.gz": "patients",
    "payments/x.json.GZ": "payments",
    "payments/x.json.tmp": "payments",
    "payments/x.json.gz.part": "payments",
    "payments/x.json~": "payments",
    "payments/x.jsonl": "payments",
    "payments/x.csv": "payments",
    "payments/x.json.zip": "payments",
    "payments/x.json ": "payments",
    "payments/x.json\n": "payments",
    "patients/../payments/x.json": "patients",
    "patients/a/../../payments/x.json": "patients",
    "patients/./x.json": "patients",
    "patients/..": "patients",
    "patients/../x.json": "patients",
    "patients/x/..json": "patients",  # a '..json' name is fine in itself, but '/..' is not a name here? see below
    "patients//x.json": "patients",
    "patients/x.json/": "patients",
    "patients/a//b.json": "patients",
    "/patients/x.json": None,
    "./patients/x.json": None,
    "../patients/x.json": None,
    "patients/.json": "patients",
    "patients/.json.gz": "patients",
    "patients": "patients",
    "patients/": "patients",
    "patients.json": None,
    "patientsx/a.json": None,
    "patient/a.json": None,
    " patients/a.json": None,
    "patients /a.json": None,
    "x.json": None,
    "": None,
    "patients\\x.json": None,
    "patients/a\\..\\..\\payments\\x.json": "patients",
    "patients/x\x00.json": "patients",
    "patients/x\r.json": "patients",
    "patients/x\x7f.json": "patients",
    "payments/\x1b[2Jx.json": "payments",
}
# '..json' is a real file name (it ends in .json after a non-empty name), so it is a snapshot key.
HOSTILE_KEYS.pop("patients/x/..json")


@pytest.fixture
def loaded(conn, s3, invoke):
    version = s3.put_object(Bucket=TEST_BUCKET, Key="patients/base.json", Body=sample_bytes("patients"))["VersionId"]
    [result] = invoke("reconcile", s3_event("patients/base.json", version))["objects"]
    assert result["status"] == "applied"
    return conn


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_key_is_recorded_as_skipped(loaded, s3, invoke, key):
    before = table_state(loaded)

    [result] = invoke("reconcile", s3_event(key, "v1"))["objects"]

    assert (result["status"], result["code"]) == ("skipped", "not_a_snapshot_key")
    assert table_state(loaded) == before
    [[sync_id, entity, source, status, code, recorded_key, version]] = loaded.run(
        "SELECT id, entity, source, status, error->>'code', s3_key, s3_version_id FROM sync_runs"
        " ORDER BY id DESC LIMIT 1"
    )
    assert sync_id == result["syncId"]
    assert (entity, source, status, code) == (HOSTILE_KEYS[key], "s3", "skipped", "not_a_snapshot_key")
    assert (recorded_key, version) == (key.replace("\x00", "\ufffd"), "v1")  # text cannot hold NUL


@pytest.mark.parametrize(
    "encoded",
    ["patients/%2E%2E/payments/x.json", "patients/%2e/x.json", "patients/x.json%00", "patients%2Fx.JSON"],
)
def test_percent_encoded_hostile_keys_are_decoded_once_and_skipped(loaded, invoke, encoded):
    raw = s3_event("placeholder", "v1")
    raw["Records"][0]["s3"]["object"]["key"] = encoded
    before = table_state(loaded)

    [result] = invoke("reconcile", raw)["objects"]

    assert (result["status"], result["code"]) == ("skipped", "not_a_snapshot_key")
    assert table_state(loaded) == before
    assert loaded.run("SELECT count(*) FROM sync_runs WHERE status = 'skipped'") == [[1]]


@pytest.mark.parametrize(
    "key",
    [
        "patients/x.json",
        "payments/x.json.gz",
        "patients/2026/11/27/093015.250-0193b0f0a7e07000a000000000000000.json",
        "patients/..json",
        "patients/x..json",
        "patients/day one.json",
        "patients/a.b.json",
        "patients/%2E%2E.json",
        "patients/ünïcode.json",
    ],
)
def test_snapshot_keys_are_accepted(key):
    assert entity_of_key(key) == key.split("/", 1)[0]


def test_a_literal_percent_sequence_in_a_real_key_is_not_decoded_twice(conn, s3, invoke):
    key = "patients/%2E%2E.json"
    version = s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=sample_bytes("patients"))["VersionId"]
    raw = s3_event(key, version)
    assert raw["Records"][0]["s3"]["object"]["key"] == quote(key, safe="/").replace("%20", "+")

    [result] = invoke("reconcile", raw)["objects"]

    assert result["status"] == "applied"
    assert conn.run("SELECT s3_key FROM sync_runs") == [[key]]
