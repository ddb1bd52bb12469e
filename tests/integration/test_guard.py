"""The deletion guard: every rule (empty, ratio, rolling window), forced routes and forced or
dry-run uploads through S3, with the replica unchanged on refusal and every sync recorded."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from devserver.apigateway import proxy_event as api_event
from paysync.errors import DeletionGuardTriggered
from paysync.reconcile import reconcile_snapshot
from tests.conftest import TEST_BUCKET, body_of, snapshot, table_state
from tests.integration.test_openapi import check
from tests.integration.test_s3_sync import s3_event


def patient(external_id: int) -> dict:
    return {"firstName": "Ann", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": external_id}


def patients(ids) -> list[dict]:
    return [patient(i) for i in ids]


def payment(external_id: int) -> dict:
    return {"amount": Decimal("10.00"), "patientId": 1, "externalId": external_id}


def sync(entity: str, records: list, **options: object):
    return reconcile_snapshot(entity, snapshot(records), source="cli", **options)


def refused(entity: str, records: list, **options: object) -> DeletionGuardTriggered:
    with pytest.raises(DeletionGuardTriggered) as caught:
        sync(entity, records, **options)
    return caught.value


def live(conn, table: str = "patients") -> int:
    return conn.run(f"SELECT count(*) FROM {table} WHERE deleted IS NULL")[0][0]


def last_run(conn) -> dict:
    [[status, code, forced, dry_run, deleted, live_before]] = conn.run(
        "SELECT status, error->>'code', forced, dry_run, deleted, live_before FROM sync_runs ORDER BY id DESC LIMIT 1"
    )
    return {
        "status": status,
        "code": code,
        "forced": forced,
        "dry_run": dry_run,
        "deleted": deleted,
        "live_before": live_before,
    }


def post(invoke, path: str, body: str, query: dict | None = None) -> dict:
    handler = {"/patients": "post_patients", "/payments": "post_payments"}.get(path, "post_forced")
    return invoke(handler, api_event("POST", path, body=body, query=query))


def error_of(response: dict) -> dict:
    return body_of(response)["error"]


class TestEmptyRule:
    def test_empty_snapshot_over_a_small_table_is_refused(self, conn, invoke):
        sync("payments", [payment(i) for i in range(6)])
        before = table_state(conn)

        response = post(invoke, "/payments", "[]")

        assert response["statusCode"] == 409
        error = error_of(response)
        assert error["code"] == "deletion_guard"
        assert "the snapshot is empty: it would delete 6 of 6 live payments" in error["message"]
        assert error["details"][0]["rule"] == "empty"
        assert table_state(conn) == before
        assert last_run(conn) | {"live_before": None} == {
            "status": "rejected",
            "code": "deletion_guard",
            "forced": False,
            "dry_run": False,
            "deleted": 6,
            "live_before": None,
        }
        check(response, "post", "/payments")

    def test_a_non_empty_snapshot_may_replace_every_record_of_a_small_table(self, conn):
        sync("patients", patients([1, 2]))

        summary = sync("patients", patients([3]))

        assert (summary.deleted, summary.inserted) == (2, 1)
        assert live(conn) == 1

    def test_a_small_table_may_shrink_to_one_row(self, conn):
        sync("patients", patients(range(6)))

        assert sync("patients", patients([0])).deleted == 5

    def test_empty_snapshot_over_an_empty_or_fully_deleted_table_applies(self, conn):
        assert sync("patients", []).status == "applied"
        sync("patients", patients([1]))
        sync("patients", [], force=True)

        assert (sync("patients", []).status, sync("patients", []).deleted) == ("applied", 0)

    def test_an_empty_snapshot_is_refused_even_when_rows_were_restored_before(self, conn):
        sync("patients", patients([1, 2]))
        sync("patients", patients([1]))  # 2 is soft-deleted
        sync("patients", patients([2]))  # 2 restored, 1 deleted

        refused("patients", [])

        assert live(conn) == 1


class TestRatioRule:
    def test_large_table_refusal_states_the_figures_and_records_live_before(self, conn):
        sync("patients", patients(range(200)))
        before = table_state(conn)

        error = refused("patients", patients(range(99)))

        assert "would delete 101 of 200 live patients (more than 50%)" in error.message
        assert error.details == [
            {"rule": "ratio", "deleted": 101, "liveBefore": 200, "maxRatio": "0.5", "override": "repeat with --force"}
        ]
        assert table_state(conn) == before
        assert last_run(conn)["live_before"] == 200


class TestRollingWindow:
    def test_small_deletions_add_up_to_a_refusal(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(160)))  # 40
        sync("patients", patients(range(120)))  # 80 of 200 so far
        before = table_state(conn)

        error = refused("patients", patients(range(90)))  # 110 > 100, though 30 of 120 alone is fine

        assert "with the 80 deleted by the 2 sync(s) applied since " in error.message
        assert "(within the last 24 hours) that makes 110 of the 200 live before them (more than 50%)" in error.message
        assert error.details[0] | {"override": "", "windowStart": ""} == {
            "rule": "window",
            "deleted": 30,
            "liveBefore": 120,
            "maxRatio": "0.5",
            "windowHours": 24,
            "windowSyncs": 2,
            "windowDeleted": 80,
            "windowLiveBefore": 200,
            "windowStart": "",
            "override": "",
        }
        assert table_state(conn) == before
        assert last_run(conn) | {"live_before": 120} == {
            "status": "rejected",
            "code": "deletion_guard",
            "forced": False,
            "dry_run": False,
            "deleted": 30,
            "live_before": 120,
        }

    def test_six_posts_under_half_each_cannot_wipe_the_table(self, conn, invoke):
        sync("patients", patients(range(3000)))
        keep = 3000
        statuses = []
        for _ in range(6):
            keep = keep * 6 // 10  # each deletes 40% of what is left
            statuses.append(post(invoke, "/patients", json.dumps(patients(range(keep))))["statusCode"])

        assert statuses == [200, 409, 409, 409, 409, 409]
        assert live(conn) == 1800

    def test_up_to_the_ratio_within_the_window_is_allowed(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(150)))

        assert sync("patients", patients(range(100))).deleted == 50  # 100 of 200: exactly half

    def test_runs_older_than_the_window_do_not_count(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))
        conn.run("UPDATE sync_runs SET finished = finished - interval '25 hours'")

        assert sync("patients", patients(range(70))).deleted == 50

    def test_window_length_comes_from_settings(self, conn, settings_env):
        settings_env(DELETE_GUARD_WINDOW_HOURS="48")
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))
        conn.run("UPDATE sync_runs SET finished = finished - interval '25 hours'")

        assert "within the last 48 hours" in refused("patients", patients(range(70))).message

    def test_zero_hours_turns_the_window_off(self, conn, settings_env):
        settings_env(DELETE_GUARD_WINDOW_HOURS="0")
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))

        assert sync("patients", patients(range(70))).deleted == 50

    def test_dry_runs_and_rejected_syncs_do_not_count(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)), dry_run=True)
        refused("patients", patients(range(60)))

        assert sync("patients", patients(range(120))).deleted == 80

    def test_a_dry_run_is_refused_like_the_real_sync(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))

        error = refused("patients", patients(range(90)), dry_run=True)

        assert error.details[0]["rule"] == "window"
        assert last_run(conn)["dry_run"] is True

    def test_a_forced_sync_starts_a_new_window(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))
        forced = sync("patients", patients(range(100)), force=True)
        assert (forced.deleted, forced.forced) == (20, True)

        # Measured from the forced sync on: 40 of 100 is fine, 60 of 100 is not.
        assert sync("patients", patients(range(60))).deleted == 40
        error = refused("patients", patients(range(40)))
        assert "that makes 60 of the 100 live before them" in error.message

    def test_runs_recorded_without_live_before_still_give_the_window_start(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(150)))
        sync("patients", patients(range(200)))  # restores 50
        sync("patients", patients(range(150)))  # deletes them again
        conn.run("UPDATE sync_runs SET live_before = NULL")

        # 200 live when the window began (rebuilt from the runs' counts): 100 deleted so far.
        error = refused("patients", patients(range(140)))
        assert "that makes 110 of the 200 live before them" in error.message

    def test_rolling_guard_counts_per_entity(self, conn):
        sync("patients", patients(range(200)))
        sync("patients", patients(range(120)))

        sync("payments", [payment(i) for i in range(200)])
        assert sync("payments", [payment(i) for i in range(150)]).deleted == 50


class TestForcedRoutes:
    @pytest.fixture
    def loaded(self, conn):
        sync("patients", patients(range(100)))
        return conn

    def test_forced_route_applies_past_the_guard(self, loaded, invoke):
        response = post(invoke, "/forced/patients", "[]")

        assert response["statusCode"] == 200
        summary = check(response, "post", "/forced/patients")
        assert (summary["forced"], summary["deleted"], summary["source"]) == (True, 100, "api")
        assert live(loaded) == 0
        assert last_run(loaded)["forced"] is True

    def test_forced_route_dry_run_applies_nothing(self, loaded, invoke):
        before = table_state(loaded)

        response = post(invoke, "/forced/patients", "[]", query={"dry_run": "true"})

        assert (body_of(response)["dryRun"], body_of(response)["forced"], body_of(response)["deleted"]) == (
            True,
            True,
            100,
        )
        assert table_state(loaded) == before

    def test_forced_payments_route(self, conn, invoke):
        sync("payments", [payment(i) for i in range(3)])

        response = post(invoke, "/forced/payments", "[]")

        assert body_of(response)["deleted"] == 3
        assert live(conn, "payments") == 0

    def test_forced_route_takes_no_force_parameter(self, loaded, invoke):
        response = post(invoke, "/forced/patients", "[]", query={"force": "true"})

        assert response["statusCode"] == 400
        assert "accepted: dry_run" in error_of(response)["message"]
        assert live(loaded) == 100

    def test_force_parameter_works_where_allowed(self, loaded, invoke):
        refusal = post(invoke, "/patients", "[]")
        assert "repeat through POST /forced/patients (or with ?force=true)" in error_of(refusal)["message"]

        response = post(invoke, "/patients", "[]", query={"force": "true"})

        assert (response["statusCode"], body_of(response)["forced"]) == (200, True)

    def test_force_parameter_is_403_where_disallowed(self, loaded, invoke, settings_env):
        settings_env(ALLOW_FORCE_PARAMETER="false")
        before = table_state(loaded)
        runs = loaded.run("SELECT count(*) FROM sync_runs")

        response = post(invoke, "/patients", "[]", query={"force": "true"})

        assert response["statusCode"] == 403
        error = check(response, "post", "/patients")["error"]
        assert error["code"] == "force_not_allowed"
        assert "POST /forced/patients" in error["message"]
        assert table_state(loaded) == before
        assert loaded.run("SELECT count(*) FROM sync_runs") == runs

    def test_refusal_names_only_the_forced_route_where_the_parameter_is_disallowed(self, loaded, invoke, settings_env):
        settings_env(ALLOW_FORCE_PARAMETER="false")

        error = error_of(post(invoke, "/patients", "[]"))

        assert error["message"].endswith("Check the snapshot, or repeat through POST /forced/patients to apply it.")
        assert error["details"][0]["override"] == "repeat through POST /forced/patients"

    def test_plain_route_still_syncs_and_dry_runs_where_force_is_disallowed(self, loaded, invoke, settings_env):
        settings_env(ALLOW_FORCE_PARAMETER="false")

        preview = post(invoke, "/patients", json.dumps(patients(range(60))), query={"dry_run": "1", "force": "false"})
        applied = post(invoke, "/patients", json.dumps(patients(range(60))))

        assert (body_of(preview)["dryRun"], body_of(preview)["deleted"]) == (True, 40)
        assert (applied["statusCode"], body_of(applied)["deleted"]) == (200, 40)


def put_with(url: str, body: bytes, headers: dict[str, str]):
    import requests  # moto intercepts it inside mock_aws

    return requests.put(url, data=body, headers=headers, timeout=10)


def upload(invoke, path: str, request: dict) -> dict:
    handler = "create_upload" if path == "/uploads" else "create_forced_upload"
    response = invoke(handler, api_event("POST", path, body=json.dumps(request)))
    assert response["statusCode"] == 201, response["body"]
    return check(response, "post", path)


def deliver(s3, invoke, key: str) -> dict:
    version = s3.head_object(Bucket=TEST_BUCKET, Key=key)["VersionId"]
    [result] = invoke("reconcile", s3_event(key, version))["objects"]
    return result


class TestUploads:
    @pytest.fixture
    def loaded(self, conn):
        sync("patients", patients(range(100)))
        # S3 LastModified has one-second resolution: keep the uploads newer than this load.
        conn.run("UPDATE sync_runs SET snapshot_at = snapshot_at - interval '1 minute'")
        return conn

    def test_forced_upload_round_trip(self, loaded, invoke, s3):
        ticket = upload(invoke, "/forced/uploads", {"entity": "patients"})

        assert ticket["headers"] == {"x-amz-meta-paysync-force": "true"}
        assert (ticket["forced"], ticket["dryRun"]) == (True, False)
        signed = parse_qs(urlsplit(ticket["uploadUrl"]).query)["X-Amz-SignedHeaders"][0].split(";")
        assert "x-amz-meta-paysync-force" in signed
        assert put_with(ticket["uploadUrl"], b"[]", ticket["headers"]).status_code == 200
        assert s3.head_object(Bucket=TEST_BUCKET, Key=ticket["key"])["Metadata"] == {"paysync-force": "true"}

        result = deliver(s3, invoke, ticket["key"])

        assert (result["status"], result["code"]) == ("applied", None)
        assert live(loaded) == 0
        assert last_run(loaded) | {"live_before": 0} == {
            "status": "applied",
            "code": None,
            "forced": True,
            "dry_run": False,
            "deleted": 100,
            "live_before": 0,
        }

    def test_dry_run_upload_round_trip(self, loaded, invoke, s3):
        before = table_state(loaded)
        ticket = upload(invoke, "/uploads", {"entity": "patients", "dryRun": True})
        assert ticket["headers"] == {"x-amz-meta-paysync-dry-run": "true"}
        put_with(ticket["uploadUrl"], json.dumps(patients(range(80))).encode(), ticket["headers"])

        result = deliver(s3, invoke, ticket["key"])

        assert result["status"] == "applied"
        assert table_state(loaded) == before
        run = last_run(loaded)
        assert (run["dry_run"], run["forced"], run["deleted"]) == (True, False, 20)

    def test_forced_dry_run_upload(self, loaded, invoke, s3):
        ticket = upload(invoke, "/forced/uploads", {"entity": "patients", "dryRun": True, "compressed": False})
        assert ticket["headers"] == {"x-amz-meta-paysync-force": "true", "x-amz-meta-paysync-dry-run": "true"}
        put_with(ticket["uploadUrl"], b"[]", ticket["headers"])

        deliver(s3, invoke, ticket["key"])

        assert live(loaded) == 100
        assert (last_run(loaded)["dry_run"], last_run(loaded)["forced"]) == (True, True)

    def test_plain_upload_has_no_headers_and_is_guarded(self, loaded, invoke, s3):
        before = table_state(loaded)
        ticket = upload(invoke, "/uploads", {"entity": "patients"})
        assert (ticket["headers"], ticket["forced"], ticket["dryRun"]) == ({}, False, False)
        put_with(ticket["uploadUrl"], b"[]", {})

        result = deliver(s3, invoke, ticket["key"])

        assert (result["status"], result["code"]) == ("rejected", "deletion_guard")
        assert table_state(loaded) == before
        [[message]] = loaded.run("SELECT error->>'message' FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert message.endswith("Check the snapshot, or upload it again through POST /forced/uploads to apply it.")

    def test_forced_upload_put_without_its_header_is_not_forced(self, loaded, invoke, s3):
        # Real S3 refuses this PUT (signature mismatch); should an object arrive without the
        # header anyway, the guard applies to it.
        before = table_state(loaded)
        ticket = upload(invoke, "/forced/uploads", {"entity": "patients"})
        put_with(ticket["uploadUrl"], b"[]", {})

        result = deliver(s3, invoke, ticket["key"])

        assert (result["status"], result["code"]) == ("rejected", "deletion_guard")
        assert table_state(loaded) == before

    def test_plain_upload_cannot_ask_to_force(self, loaded, invoke, s3):
        response = invoke("create_upload", api_event("POST", "/uploads", body='{"entity": "patients", "force": true}'))

        assert response["statusCode"] == 403
        error = check(response, "post", "/uploads")["error"]
        assert (error["code"], "POST /forced/uploads" in error["message"]) == ("force_not_allowed", True)
