"""The HTTP API through its Lambda handlers, with real API Gateway proxy events."""

from __future__ import annotations

import base64
import gzip
import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from devserver.apigateway import proxy_event as api_event
from tests.conftest import body_of, header, sample_bytes, table_state


def post_snapshot(invoke, entity: str, body: bytes | str, query: dict | None = None, **kwargs) -> dict:
    text = body.decode() if isinstance(body, bytes) else body
    return invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=text, query=query, **kwargs))


@pytest.fixture
def samples(conn, invoke):
    for entity in ("patients", "payments"):
        assert post_snapshot(invoke, entity, sample_bytes(entity))["statusCode"] == 200
    return conn


def assert_error(response: dict, status: int, code: str) -> dict:
    assert response["statusCode"] == status
    assert header(response, "Content-Type") == "application/json"
    error = body_of(response)["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], list)
    return error


class TestGetPatients:
    def test_the_briefs_exact_query(self, samples, invoke):
        response = invoke(
            "get_patients", api_event("GET", "/patients", query={"payment_min": "10", "payments_max": "20"})
        )

        assert response["statusCode"] == 200
        assert header(response, "Content-Type") == "application/json"
        patients = body_of(response)
        assert [p["externalId"] for p in patients] == ["5"]
        assert '"paymentsTotal":17.22' in response["body"]
        assert patients[0] | {"id": 0, "created": "", "updated": ""} == {
            "id": 0,
            "externalId": "5",
            "firstName": "Rick",
            "lastName": "Deckard",
            "middleName": None,
            "dateOfBirth": "2094-02-01",
            "paymentsTotal": Decimal("17.22"),
            "paymentsCount": 3,
            "created": "",
            "updated": "",
        }
        assert patients[0]["created"].endswith("Z")
        assert header(response, "Link") is None

    def test_unfiltered_lists_every_live_patient_with_zero_totals(self, samples, invoke):
        response = invoke("get_patients", api_event("GET", "/patients"))

        patients = body_of(response)
        assert {p["externalId"]: p["paymentsTotal"] for p in patients} == {
            "4": Decimal("0.00"),
            "15": Decimal("0.00"),
            "8": Decimal("9.29"),
            "5": Decimal("17.22"),
        }
        assert '"paymentsTotal":0.00' in response["body"]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"payment_min": "9.29"}, {"8", "5"}),
            ({"payment_max": "9.29"}, {"4", "15", "8"}),
            ({"payments_max": "9.28"}, {"4", "15"}),
            ({"payment_min": "0", "payment_max": "0"}, {"4", "15"}),
            ({"payment_min": "17.22", "payment_max": "17.22"}, {"5"}),
            ({"payment_min": "100"}, set()),
        ],
    )
    def test_bounds_are_inclusive(self, samples, invoke, query, expected):
        response = invoke("get_patients", api_event("GET", "/patients", query=query))

        assert {p["externalId"] for p in body_of(response)} == expected

    def test_deleted_patients_are_hidden(self, samples, invoke):
        post_snapshot(invoke, "patients", json.dumps(json.loads(sample_bytes("patients"))[:3]))

        response = invoke("get_patients", api_event("GET", "/patients"))

        assert {p["externalId"] for p in body_of(response)} == {"5", "4", "8"}

    def test_keyset_pagination_walks_every_row_once_with_link_headers(self, samples, invoke):
        seen, query, pages = [], {"limit": "1", "payment_min": "0"}, 0
        while True:
            response = invoke("get_patients", api_event("GET", "/patients", query=query))
            assert response["statusCode"] == 200
            seen += [p["externalId"] for p in body_of(response)]
            pages += 1
            link = header(response, "Link")
            if link is None:
                break
            url = link[1 : link.index(">")]
            assert link.endswith('>; rel="next"')
            assert url.startswith("https://abc123.execute-api.us-east-1.amazonaws.com/Prod/patients?")
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            assert query["payment_min"] == "0"
        assert pages == 4
        assert sorted(seen[:2]) == ["15", "4"]  # both 0.00: ordered by id
        assert seen[2:] == ["8", "5"]

    @pytest.mark.parametrize(
        "query",
        [
            {"payment_min": "abc"},
            {"payment_max": "NaN"},
            {"payments_max": "Infinity"},
            {"payment_min": "20", "payment_max": "10"},
            {"payment_max": "10", "payments_max": "11"},
            {"limit": "0"},
            {"limit": "1001"},
            {"limit": "ten"},
            {"cursor": "not-a-cursor"},
            {"cursor": "WyJwYXltZW50cyIsMV0"},  # a /payments cursor
        ],
    )
    def test_bad_parameters_are_400(self, samples, invoke, query):
        response = invoke("get_patients", api_event("GET", "/patients", query=query))

        assert_error(response, 400, "invalid_request")

    def test_unknown_parameter_is_400_naming_the_accepted_ones(self, samples, invoke):
        response = invoke("get_patients", api_event("GET", "/patients", query={"min": "10"}))

        error = assert_error(response, 400, "invalid_request")
        assert "min" in error["message"]
        for accepted in ("payment_min", "payment_max", "payments_max", "limit", "cursor"):
            assert accepted in error["message"]

    def test_repeated_parameter_is_400(self, samples, invoke):
        event = api_event("GET", "/patients", query={"payment_min": "1"})
        event["multiValueQueryStringParameters"] = {"payment_min": ["1", "2"]}

        assert_error(invoke("get_patients", event), 400, "invalid_request")


class TestGetPayments:
    def test_filter_by_patient_external_id(self, samples, invoke):
        response = invoke("get_payments", api_event("GET", "/payments", query={"external_id": "5"}))

        payments = body_of(response)
        assert [p["id"] for p in payments] == sorted(p["id"] for p in payments)
        assert sorted((p["externalId"], p["amount"], p["patientId"]) for p in payments) == [
            ("501", Decimal("4.46"), "5"),
            ("502", Decimal("5.66"), "5"),
            ("503", Decimal("7.10"), "5"),
        ]
        assert '"amount":7.10' in response["body"]
        assert set(payments[0]) == {"id", "externalId", "amount", "patientId", "created", "updated"}

    def test_orphans_are_listed_under_their_upstream_patient(self, samples, invoke):
        response = invoke("get_payments", api_event("GET", "/payments", query={"external_id": "6"}))

        assert sorted(p["externalId"] for p in body_of(response)) == ["601", "602"]

    def test_unknown_patient_gives_an_empty_list(self, samples, invoke):
        response = invoke("get_payments", api_event("GET", "/payments", query={"external_id": "nope"}))

        assert response["statusCode"] == 200
        assert body_of(response) == []

    def test_unfiltered_pages_through_all_live_payments(self, samples, invoke):
        first = invoke("get_payments", api_event("GET", "/payments", query={"limit": "4"}))
        link = header(first, "Link")
        cursor = parse_qs(urlsplit(link[1 : link.index(">")]).query)["cursor"][0]
        second = invoke("get_payments", api_event("GET", "/payments", query={"limit": "4", "cursor": cursor}))

        ids = [p["externalId"] for p in body_of(first) + body_of(second)]
        assert sorted(ids) == ["501", "502", "503", "601", "602", "701"]
        assert len(body_of(first)) == 4
        assert header(second, "Link") is None

    def test_unknown_parameter_is_400(self, samples, invoke):
        error = assert_error(
            invoke("get_payments", api_event("GET", "/payments", query={"patient": "5"})), 400, "invalid_request"
        )
        assert "external_id" in error["message"]


class TestPostSnapshots:
    def test_post_returns_the_summary(self, conn, invoke):
        response = post_snapshot(invoke, "patients", sample_bytes("patients"))

        assert response["statusCode"] == 200
        summary = body_of(response)
        assert summary | {"syncId": 0, "durationMs": 0} == {
            "syncId": 0,
            "entity": "patients",
            "source": "api",
            "status": "applied",
            "dryRun": False,
            "forced": False,
            "received": 4,
            "inserted": 4,
            "updated": 0,
            "deleted": 0,
            "restored": 0,
            "unchanged": 0,
            "orphaned": 0,
            "durationMs": 0,
        }
        assert conn.run("SELECT count(*) FROM patients") == [[4]]

    def test_dry_run_previews(self, conn, invoke):
        response = post_snapshot(invoke, "patients", sample_bytes("patients"), query={"dry_run": "true"})

        assert body_of(response)["inserted"] == 4
        assert body_of(response)["dryRun"] is True
        assert conn.run("SELECT count(*) FROM patients") == [[0]]

    def test_base64_gzip_body(self, conn, invoke):
        body = base64.b64encode(gzip.compress(sample_bytes("payments"))).decode()

        response = post_snapshot(invoke, "payments", body, base64=True)

        assert body_of(response)["inserted"] == 6

    def test_force_overrides_the_guard(self, conn, invoke):
        many = json.dumps(
            [{"firstName": "A", "lastName": "B", "dateOfBirth": "2000-01-01", "externalId": i} for i in range(100)]
        )
        post_snapshot(invoke, "patients", many)

        refused = post_snapshot(invoke, "patients", "[]")
        forced = post_snapshot(invoke, "patients", "[]", query={"force": "true"})

        assert_error(refused, 409, "deletion_guard")
        assert body_of(forced)["deleted"] == 100

    @pytest.mark.parametrize(
        ("body", "kwargs", "status", "code"),
        [
            ("[{", {}, 400, "malformed_snapshot"),
            ('{"externalId": "1"}', {}, 400, "malformed_snapshot"),
            ("", {}, 400, "malformed_snapshot"),
            ("[]", {"query": {"dry_run": "maybe"}}, 400, "invalid_request"),
            ("[]", {"query": {"dryrun": "true"}}, 400, "invalid_request"),
            ("[]", {"headers": {"Content-Type": "text/csv"}}, 415, "unsupported_media_type"),
            ("[]", {"headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
            ('[{"firstName": "A", "externalId": "9"}]', {}, 422, "invalid_records"),
            (
                '[{"firstName":"A","lastName":"B","dateOfBirth":"2000-01-01","externalId":"1"},'
                '{"firstName":"A","lastName":"B","dateOfBirth":"2000-01-01","externalId":1}]',
                {},
                422,
                "invalid_records",
            ),
        ],
    )
    def test_bad_input_is_refused_and_changes_nothing(self, samples, invoke, body, kwargs, status, code):
        before = table_state(samples)

        response = post_snapshot(invoke, "patients", body, **kwargs)

        assert_error(response, status, code)
        assert table_state(samples) == before

    def test_invalid_records_are_listed(self, samples, invoke):
        body = '[{"amount": 1.001, "patientId": "5", "externalId": "x"}, {"amount": 2, "externalId": "y"}]'

        error = assert_error(post_snapshot(invoke, "payments", body), 422, "invalid_records")

        assert error["details"] == [
            {"index": 0, "externalId": "x", "field": "amount", "message": "must have at most 2 decimal places"},
            {"index": 1, "externalId": "y", "field": "patientId", "message": "is required"},
        ]
        assert error["total"] == 2

    def test_too_large_body_is_413_pointing_to_uploads(self, samples, invoke, settings_env):
        settings_env(MAX_INLINE_SNAPSHOT_BYTES="100")
        before = table_state(samples)

        error = assert_error(post_snapshot(invoke, "patients", sample_bytes("patients")), 413, "payload_too_large")

        assert "/uploads" in error["message"]
        assert table_state(samples) == before


class TestSyncsAndRouting:
    def test_syncs_list_newest_first_and_get_one(self, samples, invoke):
        listing = body_of(invoke("get_syncs", api_event("GET", "/syncs")))

        assert [(s["entity"], s["status"], s["source"]) for s in listing] == [
            ("payments", "applied", "api"),
            ("patients", "applied", "api"),
        ]
        one = invoke(
            "get_syncs",
            api_event(
                "GET",
                f"/syncs/{listing[1]['id']}",
                resource="/syncs/{id}",
                path_parameters={"id": str(listing[1]["id"])},
            ),
        )
        assert body_of(one)["inserted"] == 4

    def test_unknown_sync_is_404_and_bad_id_400(self, samples, invoke):
        missing = invoke(
            "get_syncs", api_event("GET", "/syncs/999", resource="/syncs/{id}", path_parameters={"id": "999"})
        )
        bad = invoke("get_syncs", api_event("GET", "/syncs/abc", resource="/syncs/{id}", path_parameters={"id": "abc"}))

        assert_error(missing, 404, "not_found")
        assert_error(bad, 400, "invalid_request")

    def test_unrouted_path_is_a_json_404(self, conn, invoke):
        assert_error(invoke("get_patients", api_event("GET", "/nope")), 404, "not_found")

    def test_database_down_is_503_not_500(self, conn, invoke, settings_env, monkeypatch):
        from paysync.dal import db

        monkeypatch.setattr(db, "_shared", None)
        settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

        assert_error(invoke("get_patients", api_event("GET", "/patients")), 503, "database_unavailable")


class TestUploads:
    def test_upload_url_for_an_entity(self, conn, invoke, s3):
        response = invoke("create_upload", api_event("POST", "/uploads", body='{"entity": "payments"}'))

        assert response["statusCode"] == 201
        upload = body_of(response)
        assert upload["key"].startswith("payments/")
        assert upload["key"].endswith(".json")
        assert upload["method"] == "PUT"
        assert "X-Amz-Signature=" in upload["uploadUrl"]

    @pytest.mark.parametrize("body", ['{"entity": "doctors"}', "[]", "nope", '{"entity": "patients", "x": 1}'])
    def test_bad_upload_request_is_400(self, conn, invoke, s3, body):
        assert_error(invoke("create_upload", api_event("POST", "/uploads", body=body)), 400, "invalid_request")
