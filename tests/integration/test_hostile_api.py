"""Hostile requests against every route: each is refused with the right status and error code,
never a 500, and the replica (patients, payments, sync_runs) is exactly as before.

The handlers get real API Gateway proxy events, so values HTTP clients rarely send (NUL, lone
surrogates, other scripts' digits, repeated parameters) arrive as API Gateway would pass them; a
few cases go over real HTTP through the devserver for what only a raw request can carry.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from devserver.apigateway import proxy_event as api_event
from paysync.dal.db import parse_database_url
from paysync.reconcile import reconcile_snapshot
from tests.conftest import TABLES, body_of, database_state, header, sample_bytes
from tests.integration.test_devserver import Devserver, call
from tests.integration.test_devserver import devserver as shared_devserver  # noqa: F401 (the fixture)

BIGINT_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def replica(database_url: str) -> Iterator[pg8000.native.Connection]:
    """The samples loaded once for the module (every case here must leave them untouched)."""
    connection = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    connection.run(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    for entity in ("patients", "payments"):
        reconcile_snapshot(entity, io.BytesIO(sample_bytes(entity)), source="cli")
    yield connection
    connection.close()


def assert_refused(response: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    """The documented error shape with `status` and `code`."""
    assert response["statusCode"] == status, response["body"]
    assert header(response, "Content-Type") == "application/json"
    error = body_of(response)["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], list)
    return error


def cursor(*values: Any) -> str:
    """A forged cursor: these JSON values, encoded the way the API encodes its cursors."""
    return raw_cursor(json.dumps(list(values)))


def raw_cursor(text: str, encoding: str = "utf-8") -> str:
    return base64.urlsafe_b64encode(text.encode(encoding, "surrogatepass")).decode().rstrip("=")


def get_event(path: str, query: dict[str, str] | None = None, repeated: dict[str, list[str]] | None = None) -> dict:
    event = api_event("GET", path, query=query)
    if repeated:
        event["queryStringParameters"] = {name: values[-1] for name, values in repeated.items()}
        event["multiValueQueryStringParameters"] = repeated
    return event


# Values that are not integers in ASCII digits, or out of range, for any integer parameter.
BAD_INTEGERS = [
    pytest.param("\u00b2", id="superscript-two"),
    pytest.param("\u0663", id="arabic-indic-three"),
    pytest.param("\uff13", id="fullwidth-three"),
    pytest.param("\u07c1", id="nko-one"),
    pytest.param("0", id="zero"),
    pytest.param("-1", id="negative"),
    pytest.param("+1", id="plus-sign"),
    pytest.param(" 1", id="leading-space"),
    pytest.param("1 ", id="trailing-space"),
    pytest.param("1.0", id="decimal"),
    pytest.param("1e2", id="exponent"),
    pytest.param("0x10", id="hex"),
    pytest.param("1_0", id="underscore"),
    pytest.param("", id="empty"),
    pytest.param("1\x00", id="nul"),
    pytest.param("9" * 30, id="thirty-digits"),
    pytest.param("9" * 5000, id="five-thousand-digits"),
]

# Decimal bounds that are not plain decimals within the totals' range.
BAD_BOUNDS = [
    pytest.param("1e-16384", id="tiny-exponent"),
    pytest.param("1E+400", id="huge-exponent"),
    pytest.param("1" * 17000, id="17000-digits"),
    pytest.param("1" * 1000, id="1000-digits"),
    pytest.param("100000000000000000000", id="1e20"),
    pytest.param("-100000000000000000000", id="minus-1e20"),
    pytest.param("0." + "1" * 21, id="21-decimals"),
    pytest.param("NaN", id="nan"),
    pytest.param("sNaN", id="snan"),
    pytest.param("Infinity", id="infinity"),
    pytest.param("-inf", id="minus-inf"),
    pytest.param("\u0661\u0660", id="arabic-indic"),
    pytest.param("\uff11\uff10", id="fullwidth"),
    pytest.param("\u00b2", id="superscript"),
    pytest.param(" 10", id="leading-space"),
    pytest.param("10\x00", id="nul"),
    pytest.param("", id="empty"),
    pytest.param(".", id="lone-point"),
    pytest.param("10.5.5", id="two-points"),
    pytest.param("1_000", id="underscore"),
    pytest.param("0x10", id="hex"),
    pytest.param("ten", id="word"),
    pytest.param("10\ud800", id="lone-surrogate"),
]


def bad_id_cursors(kind: str) -> list[Any]:
    """Cursors this API never returned, for the id-keyed listing `kind` (/payments, /syncs)."""
    return [
        pytest.param("%%%", id="not-base64"),
        pytest.param("A" * 2000, id="over-1kb"),
        pytest.param("QQ", id="not-json"),
        pytest.param(raw_cursor("[" * 5000 + "]" * 5000), id="5000-deep"),
        pytest.param(raw_cursor("[" * 600 + "]" * 600), id="600-deep"),
        pytest.param(cursor(kind, BIGINT_MAX + 1), id="beyond-bigint"),
        pytest.param(cursor(kind, 10**600), id="600-digit-id"),
        pytest.param(cursor(kind, -1), id="negative-id"),
        pytest.param(cursor(kind, 0), id="zero-id"),
        pytest.param(cursor(kind, "1"), id="string-id"),
        pytest.param(cursor(kind, 1.0), id="float-id"),
        pytest.param(cursor(kind, True), id="bool-id"),
        pytest.param(cursor(kind, None), id="null-id"),
        pytest.param(cursor(kind, [1]), id="list-id"),
        pytest.param(cursor(kind), id="no-id"),
        pytest.param(cursor(kind, 1, 2), id="extra-value"),
        pytest.param(raw_cursor(f'["{kind}", NaN]'), id="nan-constant"),
        pytest.param(raw_cursor(f'["{kind}", -Infinity]'), id="infinity-constant"),
        pytest.param(raw_cursor(f'{{"{kind}": 1}}'), id="object"),
        pytest.param(raw_cursor(f'["{kind}", 1]', "utf-16"), id="utf-16"),
        pytest.param(base64.urlsafe_b64encode(f'["{kind}", "\xff"]'.encode("latin-1")).decode(), id="invalid-utf-8"),
        pytest.param(cursor("patients", "1.00", 1), id="other-listing"),
    ]


BAD_PATIENT_CURSORS = [
    pytest.param(cursor("patients", "1.00", BIGINT_MAX + 1), id="beyond-bigint"),
    pytest.param(cursor("patients", "Infinity", 1), id="infinite-total"),
    pytest.param(cursor("patients", "NaN", 1), id="nan-total"),
    pytest.param(raw_cursor('["patients", NaN, 1]'), id="nan-constant"),
    pytest.param(cursor("patients", "1e-16384", 1), id="tiny-exponent-total"),
    pytest.param(cursor("patients", "1" * 500, 1), id="500-digit-total"),
    pytest.param(cursor("patients", 1.5, 1), id="number-total"),
    pytest.param(cursor("patients", "\u0661", 1), id="arabic-indic-total"),
    pytest.param(cursor("patients", "1.00", "1"), id="string-id"),
    pytest.param(cursor("patients", "1.00", False), id="bool-id"),
    pytest.param(cursor("patients", "1.00"), id="short"),
    pytest.param(cursor("patients", "1.00", 1, 1), id="long"),
    pytest.param(cursor("payments", 1), id="payments-cursor"),
    pytest.param(raw_cursor("[" * 5000 + "]" * 5000), id="5000-deep"),
    pytest.param("=" * 10, id="padding-only"),
    pytest.param("A" * 1025, id="over-1kb"),
]


@pytest.fixture
def unchanged(replica: pg8000.native.Connection) -> Iterator[None]:
    """Asserts, after the test, that no row of the replica changed."""
    before = database_state(replica)
    yield
    assert database_state(replica) == before


pytestmark = pytest.mark.usefixtures("unchanged")


class TestGetPatients:
    @pytest.mark.parametrize("name", ["payment_min", "payment_max", "payments_max"])
    @pytest.mark.parametrize("value", BAD_BOUNDS)
    def test_bad_bound(self, invoke, name, value):
        response = invoke("get_patients", get_event("/patients", {name: value}))

        assert_refused(response, 400, "invalid_request")

    @pytest.mark.parametrize("value", BAD_INTEGERS)
    def test_bad_limit(self, invoke, value):
        assert_refused(invoke("get_patients", get_event("/patients", {"limit": value})), 400, "invalid_request")

    @pytest.mark.parametrize("value", BAD_PATIENT_CURSORS)
    def test_forged_cursor(self, invoke, value):
        assert_refused(invoke("get_patients", get_event("/patients", {"cursor": value})), 400, "invalid_request")

    @pytest.mark.parametrize(
        "query",
        [
            pytest.param({"payment_min": "20", "payment_max": "10"}, id="min-above-max"),
            pytest.param({"payment_max": "10", "payments_max": "11"}, id="both-spellings-disagree"),
            pytest.param({"bogus": "1"}, id="unknown"),
            pytest.param({"Limit": "1"}, id="wrong-case"),
            pytest.param({"a\x00": "1"}, id="nul-in-name"),
            pytest.param({"x" * 5000: "1"}, id="long-name"),
            pytest.param({"\ud800": "1"}, id="surrogate-name"),
            pytest.param({"": "1"}, id="empty-name"),
            pytest.param({"cursor": "A" * 100_000}, id="100k-cursor"),
        ],
    )
    def test_bad_query(self, invoke, query):
        assert_refused(invoke("get_patients", get_event("/patients", query)), 400, "invalid_request")

    @pytest.mark.parametrize("name", ["limit", "payment_min", "cursor", "bogus"])
    def test_repeated_parameter(self, invoke, name):
        response = invoke("get_patients", get_event("/patients", repeated={name: ["1", "2"]}))

        error = assert_refused(response, 400, "invalid_request")
        assert name in error["message"]

    def test_unknown_parameter_names_the_accepted_ones(self, invoke):
        error = assert_refused(invoke("get_patients", get_event("/patients", {"min": "1"})), 400, "invalid_request")

        assert "payment_min" in error["message"]
        assert error["details"] == [{"parameter": "min", "message": "unknown parameter"}]

    def test_extremes_within_range_are_answered(self, invoke):
        # The edges of the accepted range reach the database and are compared exactly.
        query = {"payment_min": "-99999999999999999999.99999999999999999999", "payment_max": "17.221"}
        response = invoke("get_patients", get_event("/patients", query))

        assert response["statusCode"] == 200
        assert {p["externalId"] for p in body_of(response)} == {"4", "15", "8", "5"}


class TestGetPayments:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("5\x00", id="nul"),
            pytest.param("\x00", id="only-nul"),
            pytest.param("", id="empty"),
            pytest.param("   ", id="blank"),
            pytest.param("x" * 256, id="256-chars"),
            pytest.param("x" * 100_000, id="100k-chars"),
            pytest.param("5\ud800", id="lone-surrogate"),
            pytest.param("\udfff", id="low-surrogate"),
        ],
    )
    def test_bad_external_id(self, invoke, value):
        response = invoke("get_payments", get_event("/payments", {"external_id": value}))

        assert_refused(response, 400, "invalid_request")

    @pytest.mark.parametrize("value", BAD_INTEGERS)
    def test_bad_limit(self, invoke, value):
        assert_refused(invoke("get_payments", get_event("/payments", {"limit": value})), 400, "invalid_request")

    @pytest.mark.parametrize("value", bad_id_cursors("payments"))
    def test_forged_cursor(self, invoke, value):
        query = {"cursor": value}

        assert_refused(invoke("get_payments", get_event("/payments", query)), 400, "invalid_request")

    def test_repeated_external_id(self, invoke):
        response = invoke("get_payments", get_event("/payments", repeated={"external_id": ["5", "8"]}))

        assert_refused(response, 400, "invalid_request")

    @pytest.mark.parametrize("value", ["x" * 255, "'; DROP TABLE payments; --", "%00", "5 ", "\t5"])
    def test_odd_but_valid_external_id_finds_nothing(self, invoke, value):
        response = invoke("get_payments", get_event("/payments", {"external_id": value}))

        assert response["statusCode"] == 200
        assert body_of(response) == []


class TestGetSyncs:
    @pytest.mark.parametrize("value", BAD_INTEGERS)
    def test_bad_limit(self, invoke, value):
        assert_refused(invoke("get_syncs", get_event("/syncs", {"limit": value})), 400, "invalid_request")

    @pytest.mark.parametrize("value", bad_id_cursors("syncs"))
    def test_forged_cursor(self, invoke, value):
        query = {"cursor": value}

        assert_refused(invoke("get_syncs", get_event("/syncs", query)), 400, "invalid_request")

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param("-1", id="negative"),
            pytest.param("0", id="zero"),
            pytest.param("+1", id="plus-sign"),
            pytest.param(" 1", id="leading-space"),
            pytest.param("1.0", id="decimal"),
            pytest.param("1e0", id="exponent"),
            pytest.param(str(BIGINT_MAX + 1), id="beyond-bigint"),
            pytest.param("9" * 5000, id="five-thousand-digits"),
            pytest.param("\u0663", id="arabic-indic"),
            pytest.param("\uff13", id="fullwidth"),
            pytest.param("\u00b2", id="superscript"),
            pytest.param("0x1", id="hex"),
            pytest.param("one", id="word"),
            pytest.param("1_0", id="underscore"),
        ],
    )
    def test_bad_id(self, invoke, raw):
        event = api_event("GET", f"/syncs/{raw}", resource="/syncs/{id}", path_parameters={"id": raw})

        assert_refused(invoke("get_syncs", event), 400, "invalid_request")

    @pytest.mark.parametrize("raw", ["\x00", "1\x00", "1\n2"])
    def test_id_no_route_can_match(self, invoke, raw):
        event = api_event("GET", f"/syncs/{raw}", resource="/syncs/{id}", path_parameters={"id": raw})

        assert_refused(invoke("get_syncs", event), 404, "not_found")

    def test_id_beyond_every_run_is_404(self, invoke):
        raw = str(BIGINT_MAX)
        event = api_event("GET", f"/syncs/{raw}", resource="/syncs/{id}", path_parameters={"id": raw})

        assert_refused(invoke("get_syncs", event), 404, "not_found")

    def test_one_run_takes_no_query_parameters(self, invoke):
        event = api_event("GET", "/syncs/1", query={"limit": "1"}, resource="/syncs/{id}", path_parameters={"id": "1"})

        error = assert_refused(invoke("get_syncs", event), 400, "invalid_request")
        assert "limit" in error["message"]


class TestPostSnapshotParameters:
    """A sync's parameters are checked before the body is read: nothing runs, nothing is recorded."""

    @pytest.mark.parametrize("entity", ["patients", "payments"])
    @pytest.mark.parametrize(
        "query",
        [
            pytest.param({"dry_run": "maybe"}, id="dry_run-word"),
            pytest.param({"dry_run": "2"}, id="dry_run-two"),
            pytest.param({"dry_run": "true "}, id="dry_run-trailing-space"),
            pytest.param({"dry_run": "\uff54\uff52\uff55\uff45"}, id="dry_run-fullwidth"),
            pytest.param({"dry_run": "\u0661"}, id="dry_run-arabic-indic-one"),
            pytest.param({"dry_run": "true\x00"}, id="dry_run-nul"),
            pytest.param({"dry_run": "\ud800"}, id="dry_run-surrogate"),
            pytest.param({"force": "yes please"}, id="force-phrase"),
            pytest.param({"force": ""}, id="force-empty"),
            pytest.param({"dry_run": ""}, id="dry_run-empty"),
            pytest.param({"force": "İ"}, id="force-dotted-capital-i"),
            pytest.param({"force": "x" * 5000}, id="force-long"),
            pytest.param({"dryRun": "true"}, id="camel-case-name"),
            pytest.param({"dry_run": "true", "bogus": ""}, id="unknown"),
        ],
    )
    def test_bad_flag(self, invoke, entity, query):
        event = api_event("POST", f"/{entity}", body="[]", query=query)

        assert_refused(invoke(f"post_{entity}", event), 400, "invalid_request")

    @pytest.mark.parametrize("name", ["dry_run", "force"])
    def test_repeated_flag(self, invoke, name):
        event = api_event("POST", "/payments", body="[]")
        event["queryStringParameters"] = {name: "true"}
        event["multiValueQueryStringParameters"] = {name: ["false", "true"]}

        assert_refused(invoke("post_payments", event), 400, "invalid_request")


UPLOAD_BODIES = [
    pytest.param("", id="empty"),
    pytest.param("{", id="truncated"),
    pytest.param("null", id="null"),
    pytest.param("[]", id="array"),
    pytest.param('"patients"', id="string"),
    pytest.param("{}", id="no-entity"),
    pytest.param('{"entity": "Patients"}', id="wrong-case"),
    pytest.param('{"entity": "patients "}', id="trailing-space"),
    pytest.param('{"entity": "patients\\u0000"}', id="nul"),
    pytest.param('{"entity": ["patients"]}', id="entity-list"),
    pytest.param('{"entity": {"patients": 1}}', id="entity-object"),
    pytest.param('{"entity": 1}', id="entity-number"),
    pytest.param('{"entity": null}', id="entity-null"),
    pytest.param('{"entity": "patients", "entity": "payments"}', id="repeated-key"),
    pytest.param('{"entity": "patients", "compressed": "true"}', id="compressed-string"),
    pytest.param('{"entity": "patients", "compressed": 1}', id="compressed-number"),
    pytest.param('{"entity": "patients", "compressed": NaN}', id="nan"),
    pytest.param('{"entity": "patients", "compressed": Infinity}', id="infinity"),
    pytest.param('{"entity": "patients", "bucket": "other"}', id="unknown-field"),
    pytest.param('{"entity": "patients"} {}', id="trailing-data"),
    pytest.param("\ufeff" + '{"entity": "patients"}', id="byte-order-mark"),
    pytest.param('{"entity": ' + "[" * 1990 + "]" * 1990 + "}", id="nested-1990-deep"),
    pytest.param('{"entity": "patients", "x": ' + "9" * 4000 + "}", id="4000-digit-number"),
    pytest.param('{"entity": "\ud800"}', id="lone-surrogate"),
]


class TestPostUploads:
    @pytest.mark.parametrize("body", UPLOAD_BODIES)
    def test_bad_body(self, invoke, s3, body):
        response = invoke("create_upload", api_event("POST", "/uploads", body=body))

        assert_refused(response, 400, "invalid_request")

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            pytest.param("application/x-www-form-urlencoded", "entity=patients", id="form"),
            pytest.param(
                "multipart/form-data; boundary=x", '--x\r\n\r\n{"entity":"patients"}\r\n--x--', id="multipart"
            ),
            pytest.param("text/plain", '{"entity": "patients"}', id="text"),
            pytest.param("application/xml", "<entity>patients</entity>", id="xml"),
            pytest.param("application/jsonx", '{"entity": "patients"}', id="json-lookalike"),
        ],
    )
    def test_not_json_is_415(self, invoke, s3, content_type, body):
        event = api_event("POST", "/uploads", body=body, headers={"Content-Type": content_type})

        assert_refused(invoke("create_upload", event), 415, "unsupported_media_type")

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param('{"entity": "patients", "pad": "' + "x" * 5000 + '"}', id="5kb"),
            pytest.param('{"entity": "patients"}' + " " * 5000, id="whitespace-padded"),
            pytest.param("[" * 5000 + "]" * 5000, id="5000-deep"),
        ],
    )
    def test_over_4kb_is_413(self, invoke, s3, body):
        response = invoke("create_upload", api_event("POST", "/uploads", body=body))

        assert_refused(response, 413, "payload_too_large")

    @pytest.mark.parametrize(
        ("body", "encoded"),
        [
            pytest.param("not base64!", True, id="bad-base64"),
            pytest.param(base64.b64encode(b'{"entity": "\xff"}').decode(), True, id="invalid-utf-8"),
            pytest.param(base64.b64encode('{"entity": "patients"}'.encode("utf-16")).decode(), True, id="utf-16"),
        ],
    )
    def test_bad_encoding(self, invoke, s3, body, encoded):
        response = invoke("create_upload", api_event("POST", "/uploads", body=body, base64=encoded))

        assert_refused(response, 400, "invalid_request")

    def test_query_parameters_are_refused(self, invoke, s3):
        event = api_event("POST", "/uploads", body='{"entity": "patients"}', query={"entity": "patients"})

        assert_refused(invoke("create_upload", event), 400, "invalid_request")

    def test_json_with_charset_is_accepted(self, invoke, s3):
        headers = {"Content-Type": "application/json; charset=utf-8"}
        event = api_event("POST", "/uploads", body='{"entity": "payments"}', headers=headers)

        response = invoke("create_upload", event)

        assert response["statusCode"] == 201
        assert body_of(response)["key"].startswith("payments/")


class TestDatabaseErrors:
    def test_unreachable_database_is_503_without_the_host(self, invoke, settings_env):
        settings_env(DATABASE_URL="postgresql://paysync@127.0.0.1:1/paysync")
        from paysync.dal import db

        shared, db._shared = db._shared, None
        try:
            response = invoke("get_patients", get_event("/patients"))
        finally:
            db._shared = shared

        error = assert_refused(response, 503, "database_unavailable")
        assert "127.0.0.1" not in response["body"]
        assert error["message"] == "the database is unreachable; retry later"

    @pytest.mark.parametrize(
        ("sqlstate", "status", "code"),
        [
            ("22P02", 400, "invalid_request"),  # invalid text representation
            ("22021", 400, "invalid_request"),  # invalid byte sequence (NUL)
            ("08006", 503, "database_unavailable"),  # connection failure
            ("57P01", 503, "database_unavailable"),  # admin shutdown
            ("42P01", 500, "internal_error"),  # undefined table: a bug
        ],
    )
    def test_database_errors_map_by_sqlstate(self, invoke, monkeypatch, sqlstate, status, code):
        from pg8000.exceptions import DatabaseError

        from paysync.dal import queries

        def fail(connection, **_: Any) -> list[dict[str, Any]]:
            raise DatabaseError({"S": "ERROR", "C": sqlstate, "M": "secret detail"})

        monkeypatch.setattr(queries, "list_patients", fail)

        response = invoke("get_patients", get_event("/patients"))

        assert_refused(response, status, code)
        assert "secret detail" not in response["body"]

    def test_data_error_from_postgresql_is_400(self, invoke, monkeypatch):
        # A value the parameter checks let through but PostgreSQL refuses (SQLSTATE class 22).
        from paysync.dal import queries

        def overflow(connection, **_: Any) -> list[dict[str, Any]]:
            connection.run("SELECT CAST(:v AS numeric(4,2))", v="1e300")
            return []

        monkeypatch.setattr(queries, "list_payments", overflow)

        response = invoke("get_payments", get_event("/payments"))

        error = assert_refused(response, 400, "invalid_request")
        assert "numeric" not in error["message"]


class TestOverHttp:
    """What only a raw HTTP request can carry, through the devserver (API Gateway's stand-in)."""

    @pytest.fixture
    def stack(self, request: pytest.FixtureRequest) -> Devserver:
        # test_devserver's module-wide devserver, on the test database.
        return request.getfixturevalue("shared_devserver")

    @pytest.mark.parametrize(
        ("target", "status", "code"),
        [
            pytest.param("/patients?limit=%zz", 400, "invalid_request", id="invalid-percent-escape"),
            pytest.param("/patients?limit=%", 400, "invalid_request", id="lone-percent"),
            pytest.param("/patients?limit=%C2%B2", 400, "invalid_request", id="encoded-superscript"),
            pytest.param("/patients?payment_min=1e-16384", 400, "invalid_request", id="tiny-exponent"),
            pytest.param("/patients?limit=1&limit=2", 400, "invalid_request", id="repeated"),
            pytest.param("/payments?external_id=%00", 400, "invalid_request", id="encoded-nul"),
            pytest.param("/payments?external_id=", 400, "invalid_request", id="empty-value"),
            pytest.param("/payments?external_id", 400, "invalid_request", id="bare-name"),
            pytest.param("/syncs?cursor=%FF%FE", 400, "invalid_request", id="invalid-utf-8-cursor"),
            pytest.param("/syncs/%D9%A3", 400, "invalid_request", id="encoded-arabic-indic-id"),
            pytest.param("/syncs/-1", 400, "invalid_request", id="negative-id"),
            pytest.param("/syncs/%00", 404, "not_found", id="encoded-nul-id"),
        ],
    )
    def test_raw_request(self, stack: Devserver, replica, target, status, code):
        response = call("GET", f"{stack.base}{target}")

        assert response.status == status, response.body
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == code

    def test_form_encoded_upload_is_415(self, stack: Devserver, replica):
        # What `curl -d entity=patients` sends.
        response = call(
            "POST",
            f"{stack.base}/uploads",
            b"entity=patients",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

        assert response.status == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
