"""Hostile inputs against the deletion guard and the ways to force it: one case per input.

Every case checks the status / error code and that the replica is unchanged; a refused sync
is recorded as a run, a request refused before any sync began (403, a bad upload request)
records none.
"""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from devserver.apigateway import proxy_event as api_event
from paysync.errors import DeletionGuardTriggered
from paysync.reconcile import reconcile_snapshot
from tests.conftest import TEST_BUCKET, body_of, snapshot, table_state
from tests.integration.test_s3_sync import s3_event


def patient(external_id: int) -> dict:
    return {"firstName": "Ann", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": external_id}


def payment(external_id: int) -> dict:
    return {"amount": 10, "patientId": 1, "externalId": external_id}


RECORD = {"patients": patient, "payments": payment}


def records(entity: str, ids) -> list[dict]:
    return [RECORD[entity](i) for i in ids]


def seed(entity: str, count: int) -> None:
    reconcile_snapshot(entity, snapshot(records(entity, range(count))), source="cli")


def runs(conn) -> list[list]:
    return conn.run("SELECT status, error->>'code', forced, dry_run FROM sync_runs ORDER BY id")


def error_code(response: dict) -> str:
    return body_of(response)["error"]["code"]


def gzip_b64(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode())).decode()


# ---------------------------------------------------------------- empty-looking snapshots, small tables


@pytest.mark.parametrize(
    ("entity", "body", "is_base64", "status", "code"),
    [
        ("payments", "[]", False, 409, "deletion_guard"),
        ("payments", "[ ]", False, 409, "deletion_guard"),
        ("payments", " \n\t[\r\n\t]\n ", False, 409, "deletion_guard"),
        ("payments", "[]\n\n", False, 409, "deletion_guard"),
        ("payments", gzip_b64("[]"), True, 409, "deletion_guard"),
        ("payments", gzip_b64("  [\n]  "), True, 409, "deletion_guard"),
        ("payments", base64.b64encode(b"[]").decode(), True, 409, "deletion_guard"),
        ("patients", "[]", False, 409, "deletion_guard"),
        ("patients", gzip_b64("[]"), True, 409, "deletion_guard"),
        ("payments", "[] []", False, 400, "malformed_snapshot"),
        ("payments", "null", False, 400, "malformed_snapshot"),
        ("payments", "{}", False, 400, "malformed_snapshot"),
        ("payments", "[", False, 400, "malformed_snapshot"),
        ("payments", base64.b64encode(gzip.compress(gzip.compress(b"[]"))).decode(), True, 400, "malformed_snapshot"),
    ],
)
def test_empty_looking_snapshot_never_wipes_a_small_table(conn, invoke, entity, body, is_base64, status, code):
    seed(entity, 6)
    before, runs_before = table_state(conn), runs(conn)

    response = invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=body, base64=is_base64))

    assert (response["statusCode"], error_code(response)) == (status, code)
    assert table_state(conn) == before
    assert runs(conn) == [*runs_before, ["rejected", code, False, False]]


# ---------------------------------------------------------------- one sync around the thresholds


@pytest.mark.parametrize(
    ("live", "keep", "extra", "applies"),
    [
        (100, 50, 0, True),  # exactly half
        (100, 49, 0, False),  # one over half
        (101, 51, 0, True),  # 50 of 101
        (101, 50, 0, False),  # 51 of 101
        (200, 100, 0, True),
        (200, 99, 0, False),
        (100, 49, 60, False),  # new records do not offset deletions
        (99, 1, 0, True),  # below the minimum size the ratio does not apply
        (99, 0, 0, False),  # ... but an empty snapshot never applies
        (99, 0, 5, True),  # replacing every record of a small table does
        (2, 1, 0, True),
        (1, 0, 1, True),
        (1, 0, 0, False),
        (0, 0, 0, True),  # an empty snapshot over an empty table
    ],
)
def test_single_sync_thresholds(conn, live, keep, extra, applies):
    seed("patients", live)
    before, runs_before = table_state(conn), runs(conn)
    ids = [*range(keep), *range(10_000, 10_000 + extra)]

    if applies:
        summary = reconcile_snapshot("patients", snapshot(records("patients", ids)), source="cli")
        assert (summary.status, summary.deleted) == ("applied", live - keep)
        assert runs(conn) == [*runs_before, ["applied", None, False, False]]
    else:
        with pytest.raises(DeletionGuardTriggered):
            reconcile_snapshot("patients", snapshot(records("patients", ids)), source="cli")
        assert table_state(conn) == before
        assert runs(conn) == [*runs_before, ["rejected", "deletion_guard", False, False]]


# ---------------------------------------------------------------- rolling sequences

FORCE, DRY = {"force": True}, {"dry_run": True}


@pytest.mark.parametrize(
    ("steps", "last_applies"),
    [
        ([range(200), range(160), range(120), range(90)], False),
        ([range(200), range(150), range(100)], True),  # exactly half of 200 over the window
        ([range(200), range(150), range(99)], False),
        ([range(200), *[range(200 - 10 * n) for n in range(1, 11)]], True),  # ten steps of 10: 100 of 200
        ([range(200), *[range(200 - 10 * n) for n in range(1, 11)], range(99)], False),
        ([range(200), range(150), range(200), range(150)], True),  # churn: 100 of 200
        ([range(200), range(150), range(200), range(150), range(149)], False),
        ([range(150), range(3000), range(1600)], False),  # grown in the window: 1400 > half of the 150 before
        ([range(3000), range(1600), range(800)], False),  # loaded in the window, then cut by half twice
        ([range(200), [*range(200), *range(1000, 1400)], range(1000, 1400)], False),  # inflate, then swap out
        ([range(200), (range(120), FORCE), range(100)], True),  # forced sync: a new window
        ([range(200), range(120), (range(100), FORCE), range(60)], True),
        ([range(200), range(120), (range(100), FORCE), range(60), range(40)], False),
        ([range(200), (range(100), DRY), range(100)], True),  # dry runs delete nothing
        ([range(200), (range(120), DRY), range(120), (range(100), DRY), range(60)], False),
    ],
)
def test_rolling_sequences(conn, steps, last_applies):
    *earlier, last = [step if isinstance(step, tuple) else (step, {}) for step in steps]
    for ids, options in earlier:
        summary = reconcile_snapshot("patients", snapshot(records("patients", ids)), source="api", **options)
        assert summary.status == "applied"
    before, runs_before = table_state(conn), runs(conn)
    ids, options = last

    if last_applies:
        summary = reconcile_snapshot("patients", snapshot(records("patients", ids)), source="api", **options)
        assert summary.status == "applied"
    else:
        with pytest.raises(DeletionGuardTriggered) as caught:
            reconcile_snapshot("patients", snapshot(records("patients", ids)), source="api", **options)
        assert "POST /forced/patients" in caught.value.message
        assert table_state(conn) == before
        assert runs(conn) == [*runs_before, ["rejected", "deletion_guard", False, False]]


# ---------------------------------------------------------------- forged upload metadata


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({"paysync-force": "TRUE"}, "invalid_upload_metadata"),
        ({"paysync-force": "True"}, "invalid_upload_metadata"),
        ({"paysync-force": "1"}, "invalid_upload_metadata"),
        ({"paysync-force": "yes"}, "invalid_upload_metadata"),
        ({"paysync-force": "on"}, "invalid_upload_metadata"),
        ({"paysync-force": "t"}, "invalid_upload_metadata"),
        ({"paysync-force": "truee"}, "invalid_upload_metadata"),
        ({"paysync-force": "false"}, "invalid_upload_metadata"),
        ({"paysync-force": "true,true"}, "invalid_upload_metadata"),
        ({"paysync-dry-run": "YES"}, "invalid_upload_metadata"),
        ({"paysync-dry-run": "1"}, "invalid_upload_metadata"),
        ({"paysync-forced": "true"}, "invalid_upload_metadata"),
        ({"paysync-override": "true"}, "invalid_upload_metadata"),
        ({"paysync-force": "true", "paysync-dryrun": "true"}, "invalid_upload_metadata"),
        ({"Paysync-Force": "True"}, "invalid_upload_metadata"),
        ({"force": "true"}, "deletion_guard"),  # not paysync's: ignored, the guard applies
        ({"x-paysync-force": "true"}, "deletion_guard"),
        ({}, "deletion_guard"),
    ],
)
def test_forged_upload_metadata_never_forces(conn, s3, invoke, metadata, code):
    seed("patients", 100)
    conn.run("UPDATE sync_runs SET snapshot_at = snapshot_at - interval '1 minute'")
    before, runs_before = table_state(conn), runs(conn)
    version = s3.put_object(Bucket=TEST_BUCKET, Key="patients/forged.json", Body=b"[]", Metadata=metadata)["VersionId"]

    [result] = invoke("reconcile", s3_event("patients/forged.json", version))["objects"]

    assert (result["status"], result["code"]) == ("rejected", code)
    assert table_state(conn) == before
    assert runs(conn) == [*runs_before, ["rejected", code, False, False]]
    [[message]] = conn.run("SELECT error->>'message' FROM sync_runs ORDER BY id DESC LIMIT 1")
    assert "POST /forced/uploads" in message


# ---------------------------------------------------------------- force on a plain route where it is disallowed


@pytest.mark.parametrize(
    ("entity", "query", "status", "code"),
    [
        ("patients", {"force": "true"}, 403, "force_not_allowed"),
        ("patients", {"force": "TRUE"}, 403, "force_not_allowed"),
        ("patients", {"force": "1"}, 403, "force_not_allowed"),
        ("patients", {"force": "yes"}, 403, "force_not_allowed"),
        ("patients", {"force": ""}, 403, "force_not_allowed"),
        ("payments", {"force": "true"}, 403, "force_not_allowed"),
        ("payments", {"force": "true", "dry_run": "true"}, 403, "force_not_allowed"),
        ("patients", {"force": "maybe"}, 400, "invalid_request"),
        ("patients", {"Force": "true"}, 400, "invalid_request"),
        ("patients", {"forced": "true"}, 400, "invalid_request"),
        ("patients", {"force": "false"}, 409, "deletion_guard"),
        ("patients", {"force": "0"}, 409, "deletion_guard"),
    ],
)
def test_force_parameter_where_disallowed(conn, invoke, settings_env, entity, query, status, code):
    settings_env(ALLOW_FORCE_PARAMETER="false")
    seed(entity, 100)
    before, runs_before = table_state(conn), runs(conn)

    response = invoke(f"post_{entity}", api_event("POST", f"/{entity}", body="[]", query=query))

    assert (response["statusCode"], error_code(response)) == (status, code)
    assert table_state(conn) == before
    if status == 409:
        assert runs(conn) == [*runs_before, ["rejected", code, False, query.get("dry_run") == "true"]]
    else:
        assert runs(conn) == runs_before
    if status == 403:
        assert f"POST /forced/{entity}" in body_of(response)["error"]["message"]


# ---------------------------------------------------------------- forced routes with bad input


@pytest.mark.parametrize(
    ("body", "query", "headers", "status", "code", "recorded"),
    [
        ("[]", {"force": "true"}, None, 400, "invalid_request", False),
        ("[]", {"dry_run": "perhaps"}, None, 400, "invalid_request", False),
        ("[", None, None, 400, "malformed_snapshot", True),
        ('{"externalId": 1}', None, None, 400, "malformed_snapshot", True),
        ('[{"externalId": 1}]', None, None, 422, "invalid_records", True),
        ("[]", None, {"Content-Type": "text/plain"}, 415, "unsupported_media_type", False),
    ],
)
def test_forced_route_rejects_bad_input(conn, invoke, body, query, headers, status, code, recorded):
    seed("patients", 100)
    before, runs_before = table_state(conn), runs(conn)

    response = invoke("post_forced", api_event("POST", "/forced/patients", body=body, query=query, headers=headers))

    assert (response["statusCode"], error_code(response)) == (status, code)
    assert table_state(conn) == before
    assert runs(conn) == ([*runs_before, ["rejected", code, True, False]] if recorded else runs_before)


# ---------------------------------------------------------------- upload requests


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/uploads", {"entity": "patients", "force": True}, 403, "force_not_allowed"),
        ("/uploads", {"entity": "patients", "force": False}, 403, "force_not_allowed"),
        ("/uploads", {"entity": "payments", "force": "true"}, 403, "force_not_allowed"),
        ("/uploads", {"entity": "patients", "dryRun": "true"}, 400, "invalid_request"),
        ("/uploads", {"entity": "patients", "dryRun": 1}, 400, "invalid_request"),
        ("/uploads", {"entity": "patients", "dryRun": None}, 400, "invalid_request"),
        ("/uploads", {"entity": "patients", "dryRun": [True]}, 400, "invalid_request"),
        ("/uploads", {"entity": "patients", "dryrun": True}, 400, "invalid_request"),
        ("/uploads", {"entity": "patients", "forced": True}, 400, "invalid_request"),
        ("/forced/uploads", {"entity": "patients", "force": True}, 400, "invalid_request"),
        ("/forced/uploads", {"entity": "patients", "dryRun": "yes"}, 400, "invalid_request"),
        ("/forced/uploads", {"entity": "doctors"}, 400, "invalid_request"),
        ("/forced/uploads", [], 400, "invalid_request"),
        ("/forced/uploads", {}, 400, "invalid_request"),
    ],
)
def test_bad_upload_requests(conn, s3, invoke, path, body, status, code):
    seed("patients", 6)
    before, runs_before = table_state(conn), runs(conn)
    handler = "create_upload" if path == "/uploads" else "create_forced_upload"

    response = invoke(handler, api_event("POST", path, body=json.dumps(body)))

    assert (response["statusCode"], error_code(response)) == (status, code)
    assert table_state(conn) == before
    assert runs(conn) == runs_before
    assert "Contents" not in s3.list_objects_v2(Bucket=TEST_BUCKET)


# ---------------------------------------------------------------- empty-looking S3 snapshots, small tables


@pytest.mark.parametrize(
    ("key", "body", "code"),
    [
        ("payments/empty.json", b"[]", "deletion_guard"),
        ("payments/spaces.json", b" \n [ \t ] \n", "deletion_guard"),
        ("payments/empty.json.gz", gzip.compress(b"[]"), "deletion_guard"),
        ("payments/gz-named-plain.json.gz", b"[]", "deletion_guard"),
        ("payments/plain-named-gz.json", gzip.compress(b" [ ] "), "deletion_guard"),
        ("payments/bom.json", b"\xef\xbb\xbf[]", "deletion_guard"),
        ("payments/nothing.json", b"", "malformed_snapshot"),
    ],
)
def test_empty_looking_s3_snapshot_never_wipes_a_small_table(conn, s3, invoke, key, body, code):
    seed("payments", 6)
    conn.run("UPDATE sync_runs SET snapshot_at = snapshot_at - interval '1 minute'")
    before, runs_before = table_state(conn), runs(conn)
    version = s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)["VersionId"]

    [result] = invoke("reconcile", s3_event(key, version))["objects"]

    assert (result["status"], result["code"]) == ("rejected", code)
    assert table_state(conn) == before
    assert runs(conn) == [*runs_before, ["rejected", code, False, False]]
    if code == "deletion_guard":
        [[message]] = conn.run("SELECT error->>'message' FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert message.endswith("upload it again through POST /forced/uploads to apply it.")
