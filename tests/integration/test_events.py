"""The events/ files (the ones `sam local invoke -e` takes) through their handlers, against a real
PostgreSQL and moto S3: each file must still produce what it was written to show."""

from __future__ import annotations

import copy
import gzip
import json
import re
import urllib.request
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
from alembic.script import ScriptDirectory

from paysync.migrate import MIGRATIONS_DIR
from tests.conftest import EVENTS, SAMPLE_TOTALS, TEST_BUCKET, body_of, header, load_event, sample_bytes

# Which handler takes each event file (the template routes the API ones: test_template.py).
HANDLER_OF = {
    "get_patients.json": "get_patients",
    "get_patients_filtered.json": "get_patients",
    "get_patients_page.json": "get_patients",
    "get_payments.json": "get_payments",
    "get_payments_filtered.json": "get_payments",
    "post_patients.json": "post_patients",
    "post_patients_dry_run.json": "post_patients",
    "post_payments.json": "post_payments",
    "create_upload.json": "create_upload",
    "post_forced_payments_dry_run.json": "post_forced",
    "create_forced_upload.json": "create_forced_upload",
    "get_syncs.json": "get_syncs",
    "get_sync.json": "get_syncs",
    "get_patient.json": "get_patients",
    "get_patient_history.json": "get_patients",
    "get_payment.json": "get_payments",
    "get_payment_history.json": "get_payments",
    "get_sync_changes.json": "get_syncs",
    "get_stats.json": "get_stats",
    "get_stats_histogram.json": "get_stats",
    "get_stats_history.json": "get_stats",
    "s3_patients_put.json": "reconcile",
    "s3_payments_put.json": "reconcile",
    "s3_payments_gz_put.json": "reconcile",
    "migrate_create.json": "migrate",
    "purge_history_scheduled.json": "purge_history",
}


@pytest.fixture
def send(invoke):
    """send("get_patients.json") -> the handler's response to that event file (optionally edited)."""

    def call(name: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return invoke(HANDLER_OF[name], event if event is not None else load_event(name))

    return call


@pytest.fixture
def samples(conn, send):
    """The brief's samples, loaded through the POST events."""
    assert send("post_patients.json")["statusCode"] == 200
    assert send("post_payments.json")["statusCode"] == 200
    return conn


def live(conn, table: str) -> int:
    return conn.run(f"SELECT count(*) FROM {table} WHERE deleted IS NULL")[0][0]


def test_every_event_file_is_exercised():
    assert {path.name for path in EVENTS.glob("*.json")} == set(HANDLER_OF)


# ---------------------------------------------------------------- POST snapshots


def test_post_patients_inserts_the_sample(conn, send):
    response = send("post_patients.json")

    assert response["statusCode"] == 200, response["body"]
    assert header(response, "Content-Type") == "application/json"
    summary = body_of(response)
    assert (summary["status"], summary["source"], summary["received"], summary["inserted"]) == ("applied", "api", 4, 4)
    assert live(conn, "patients") == 4
    assert sorted(r[0] for r in conn.run("SELECT external_id FROM patients")) == ["15", "4", "5", "8"]


def test_post_payments_links_known_patients_and_counts_orphans(conn, send):
    send("post_patients.json")

    summary = body_of(send("post_payments.json"))

    assert (summary["inserted"], summary["orphaned"]) == (6, 2)  # 601 and 602 belong to unknown patient 6
    assert live(conn, "payments") == 6
    [[total, count]] = conn.run("SELECT payments_total, payments_count FROM patients WHERE external_id = '5'")
    assert (total, count) == (Decimal("17.22"), 3)


def test_post_patients_dry_run_previews_without_applying(conn, send):
    summary = body_of(send("post_patients_dry_run.json"))

    assert (summary["dryRun"], summary["inserted"]) == (True, 4)
    assert live(conn, "patients") == 0
    assert conn.run("SELECT dry_run, status FROM sync_runs") == [[True, "applied"]]


def test_post_forced_payments_dry_run_previews_a_forced_sync(samples, send):
    before = live(samples, "payments")

    response = send("post_forced_payments_dry_run.json")

    assert response["statusCode"] == 200, response["body"]
    summary = body_of(response)
    assert (summary["forced"], summary["dryRun"], summary["unchanged"]) == (True, True, 6)
    assert live(samples, "payments") == before
    assert samples.run("SELECT forced, dry_run FROM sync_runs ORDER BY id DESC LIMIT 1") == [[True, True]]


# ---------------------------------------------------------------- reads


def test_get_patients_lists_every_live_patient(samples, send):
    response = send("get_patients.json")

    assert response["statusCode"] == 200
    patients = body_of(response)
    assert {p["externalId"]: p["paymentsTotal"] for p in patients} == SAMPLE_TOTALS
    assert header(response, "Link") is None


def test_get_patients_filtered_is_the_briefs_query(samples, send):
    event = load_event("get_patients_filtered.json")
    assert event["queryStringParameters"] == {"payment_min": "10", "payments_max": "20"}

    response = send("get_patients_filtered.json", event)

    assert response["statusCode"] == 200, response["body"]
    assert [p["externalId"] for p in body_of(response)] == ["5"]
    assert '"paymentsTotal":17.22' in response["body"]  # a JSON number with its cents, not a string


def test_get_patients_page_links_to_the_next_page(samples, send):
    first = send("get_patients_page.json")

    assert len(body_of(first)) == 2
    link = header(first, "Link")
    assert link is not None
    match = re.fullmatch(r'<(.+)>; rel="next"', link)
    assert match, link
    url = urlsplit(match.group(1))
    # The public URL the client called: host, https and the stage prefix from the event.
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "/Prod/patients",
    )
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert query["limit"] == "2"

    following = load_event("get_patients_page.json")
    following["queryStringParameters"] = query
    following["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()}
    second = send("get_patients_page.json", following)

    assert second["statusCode"] == 200, second["body"]
    ids = [p["externalId"] for p in body_of(first) + body_of(second)]
    assert sorted(ids) == ["15", "4", "5", "8"]
    assert header(second, "Link") is None


def test_get_payments_lists_amounts_as_numbers(samples, send):
    response = send("get_payments.json")

    payments = body_of(response)
    assert sorted(p["externalId"] for p in payments) == ["501", "502", "503", "601", "602", "701"]
    assert '"amount":7.10' in response["body"]
    assert {p["patientId"] for p in payments} == {"5", "6", "8"}


def test_get_payments_filtered_by_patient(samples, send):
    response = send("get_payments_filtered.json")

    assert response["statusCode"] == 200
    assert sorted((p["externalId"], p["amount"]) for p in body_of(response)) == [
        ("501", Decimal("4.46")),
        ("502", Decimal("5.66")),
        ("503", Decimal("7.10")),
    ]


def test_get_syncs_lists_runs_newest_first(samples, send):
    response = send("get_syncs.json")

    assert response["statusCode"] == 200
    assert [(run["entity"], run["status"], run["source"]) for run in body_of(response)] == [
        ("payments", "applied", "api"),
        ("patients", "applied", "api"),
    ]


def test_get_stats_shows_the_samples_figures(samples, send):
    response = send("get_stats.json")

    assert response["statusCode"] == 200, response["body"]
    stats = body_of(response)
    assert (stats["patients"]["live"], stats["payments"]["live"], stats["payments"]["sum"]) == (4, 6, Decimal("52.12"))
    assert stats["payments"]["orphans"] == {"count": 2, "sum": Decimal("25.61")}
    assert [(p["externalId"], p["paymentsTotal"]) for p in stats["topPayers"]] == [
        ("5", Decimal("17.22")),
        ("8", Decimal("9.29")),
        ("4", Decimal("0.00")),  # ties go by id: patient 4 was inserted before patient 15
    ]


def test_get_stats_histogram_counts_every_live_patient(samples, send):
    histogram = body_of(send("get_stats_histogram.json"))

    assert [bucket["count"] for bucket in histogram["buckets"]] == [2, 0, 1, 1]
    assert (histogram["min"], histogram["max"]) == (Decimal("0.00"), Decimal("17.22"))


def test_get_stats_history_has_one_point_per_applied_sync(samples, send):
    history = body_of(send("get_stats_history.json"))

    assert [(point["syncId"], point["entity"], point["patients"]["live"]) for point in history] == [
        (2, "payments", 4),
        (1, "patients", 4),
    ]


def test_get_sync_shows_run_one(samples, send):
    run = body_of(send("get_sync.json"))

    assert (run["id"], run["entity"], run["inserted"], run["received"]) == (1, "patients", 4, 4)


def test_get_sync_of_an_empty_replica_is_404(conn, send):
    response = send("get_sync.json")

    assert response["statusCode"] == 404
    assert body_of(response)["error"]["code"] == "not_found"


def test_get_patient_shows_its_total(samples, send):
    patient = body_of(send("get_patient.json"))

    assert (patient["externalId"], patient["paymentsTotal"], patient["deleted"]) == ("5", SAMPLE_TOTALS["5"], None)


def test_get_patient_history_of_a_first_load_is_the_current_version(samples, send):
    versions = body_of(send("get_patient_history.json"))

    assert [(v["externalId"], v["action"], v["validTo"], v["syncStarted"]) for v in versions] == [
        ("5", "inserted", None, 1)
    ]


def test_get_payment_and_its_history(samples, send):
    payment = body_of(send("get_payment.json"))
    versions = body_of(send("get_payment_history.json"))

    assert (payment["externalId"], payment["amount"], payment["patientId"]) == ("501", Decimal("4.46"), "5")
    assert [(v["amount"], v["action"]) for v in versions] == [(Decimal("4.46"), "inserted")]


def test_get_sync_changes_lists_the_first_load_inserts(samples, send):
    changes = body_of(send("get_sync_changes.json"))

    assert sorted(change["externalId"] for change in changes) == ["15", "4", "5", "8"]
    assert {change["action"] for change in changes} == {"inserted"}


# ---------------------------------------------------------------- uploads and S3


def test_create_forced_upload_signs_the_force_metadata_into_the_url(conn, s3, send):
    response = send("create_forced_upload.json")

    assert response["statusCode"] == 201, response["body"]
    upload = body_of(response)
    assert (upload["entity"], upload["forced"], upload["dryRun"]) == ("patients", True, False)
    assert upload["headers"] == {"x-amz-meta-paysync-force": "true"}
    assert "x-amz-meta-paysync-force" in upload["uploadUrl"]


def test_create_upload_presigns_a_put_that_s3_accepts(conn, s3, send):
    import requests  # moto intercepts it inside mock_aws

    response = send("create_upload.json")

    assert response["statusCode"] == 201, response["body"]
    upload = body_of(response)
    assert (upload["entity"], upload["method"], upload["bucket"]) == ("patients", "PUT", TEST_BUCKET)
    assert upload["key"].startswith("patients/")
    assert upload["key"].endswith(".json")
    put = requests.put(upload["uploadUrl"], data=sample_bytes("patients"), timeout=10)
    assert put.status_code == 200
    stored = s3.get_object(Bucket=TEST_BUCKET, Key=upload["key"])["Body"].read()
    assert stored == sample_bytes("patients")


def put_object_for(s3, name: str, body: bytes) -> dict[str, Any]:
    """Put `body` at the event file's key in the test bucket, and make the event name that bucket and
    object version (the files name `make run`'s bucket and no version; everything else is kept)."""
    event = load_event(name)
    record = event["Records"][0]["s3"]
    key = unquote_plus(record["object"]["key"])
    assert "versionId" not in record["object"]  # the latest version: works against any local stack
    response = s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)
    record["bucket"]["name"] = TEST_BUCKET
    record["object"].update(versionId=response["VersionId"], eTag=response["ETag"].strip('"'), size=len(body))
    return event


def outcome(response: dict[str, Any]) -> tuple[str, str, str | None]:
    [result] = response["objects"]
    return result["key"], result["status"], result["code"]


def test_s3_patients_put_applies_then_skips_the_replay(conn, s3, send):
    event = put_object_for(s3, "s3_patients_put.json", sample_bytes("patients"))

    assert outcome(send("s3_patients_put.json", event)) == ("patients/2026/11/26/snapshot.json", "applied", None)
    assert live(conn, "patients") == 4
    [[source, key, version]] = conn.run("SELECT source, s3_key, s3_version_id FROM sync_runs")
    assert (source, key, version) == (
        "s3",
        "patients/2026/11/26/snapshot.json",
        event["Records"][0]["s3"]["object"]["versionId"],
    )

    # S3 delivers at least once: the same notification again changes nothing.
    replay = send("s3_patients_put.json", copy.deepcopy(event))

    assert outcome(replay)[1:] == ("skipped", "already_applied")
    assert live(conn, "patients") == 4
    assert conn.run("SELECT status FROM sync_runs ORDER BY id") == [["applied"], ["skipped"]]


def test_s3_payments_put_decodes_the_key(conn, s3, send):
    assert "+" in load_event("s3_payments_put.json")["Records"][0]["s3"]["object"]["key"]  # S3's encoding of " "
    event = put_object_for(s3, "s3_payments_put.json", sample_bytes("payments"))

    result = send("s3_payments_put.json", event)

    assert outcome(result) == ("payments/2026/11/26/snapshot one.json", "applied", None)
    assert live(conn, "payments") == 6


def test_s3_payments_gz_put_is_decompressed(conn, s3, send):
    send("post_patients.json")
    event = put_object_for(s3, "s3_payments_gz_put.json", gzip.compress(sample_bytes("payments")))

    result = send("s3_payments_gz_put.json", event)

    assert outcome(result)[1:] == ("applied", None)
    assert live(conn, "payments") == 6
    assert conn.run("SELECT payments_total FROM patients WHERE external_id = '8'") == [[Decimal("9.29")]]


# ---------------------------------------------------------------- deploy-time migration


@pytest.fixture
def cloudformation(monkeypatch):
    """Captures the handler's PUT to the custom resource's ResponseURL."""
    sent: list[tuple[urllib.request.Request, dict[str, Any]]] = []

    class _Answer:
        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def urlopen(request: urllib.request.Request, timeout: float | None = None) -> _Answer:
        sent.append((request, json.loads(request.data)))
        return _Answer()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return sent


def test_migrate_create_reports_success_with_the_revision(conn, send, cloudformation):
    event = load_event("migrate_create.json")

    result = send("migrate_create.json")

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    [(request, answer)] = cloudformation
    assert (request.full_url, request.get_method()) == (event["ResponseURL"], "PUT")
    assert answer["Status"] == "SUCCESS"
    assert answer["Data"] == {"Revision": head}
    assert (answer["StackId"], answer["RequestId"], answer["LogicalResourceId"]) == (
        event["StackId"],
        event["RequestId"],
        event["LogicalResourceId"],
    )
    assert answer["PhysicalResourceId"]
    assert result == {"Status": "SUCCESS", "Revision": head}
    assert conn.run("SELECT version_num FROM alembic_version") == [[head]]


def test_migrate_delete_leaves_the_data_and_keeps_the_physical_id(samples, send, cloudformation):
    event = load_event("migrate_create.json")
    event.update(RequestType="Delete", PhysicalResourceId="paysync-schema")

    send("migrate_create.json", event)

    [(_, answer)] = cloudformation
    assert (answer["Status"], answer["PhysicalResourceId"], answer["Data"]) == ("SUCCESS", "paysync-schema", {})
    assert live(samples, "patients") == 4


def test_migrate_failure_is_reported_not_left_hanging(conn, send, cloudformation, settings_env):
    settings_env(DATABASE_URL="postgresql://paysync:secret@127.0.0.1:1/paysync")

    result = send("migrate_create.json")

    [(_, answer)] = cloudformation
    assert answer["Status"] == "FAILED"
    assert "migration failed" in answer["Reason"]
    assert "secret" not in answer["Reason"]
    assert result["Status"] == "FAILED"


# ---------------------------------------------------------------- scheduled history purge


def test_the_scheduled_purge_deletes_the_history_older_than_the_retention(samples, send, settings_env):
    post = load_event("post_patients.json")
    records = json.loads(post["body"])
    post["body"] = json.dumps([{**record, "firstName": "Renamed"} for record in records])
    assert send("post_patients.json", post)["statusCode"] == 200
    versions = samples.run("SELECT count(*) FROM patient_versions")[0][0]
    assert versions == len(records)
    samples.run("UPDATE patient_versions SET valid_to = valid_to - interval '40 days'")
    settings_env(HISTORY_RETENTION_DAYS="30")

    result = send("purge_history_scheduled.json")

    assert result["retentionDays"] == 30
    assert result["purged"] == {"patients": versions, "payments": 0}
    assert samples.run("SELECT count(*) FROM patient_versions") == [[0]]
    assert live(samples, "patients") == 4


def test_the_scheduled_purge_does_nothing_without_a_retention(samples, send, settings_env, caplog):
    post = load_event("post_patients.json")
    post["body"] = json.dumps([{**record, "firstName": "Renamed"} for record in json.loads(post["body"])])
    assert send("post_patients.json", post)["statusCode"] == 200
    samples.run("UPDATE patient_versions SET valid_to = valid_to - interval '4000 days'")
    settings_env(HISTORY_RETENTION_DAYS="0")

    result = send("purge_history_scheduled.json")

    assert result == {"retentionDays": 0, "purged": {"patients": 0, "payments": 0}}
    assert "history retention is off" in caplog.text
    assert samples.run("SELECT count(*) FROM patient_versions") == [[4]]
