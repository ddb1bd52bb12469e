"""Hostile requests against the single-row, history and sync-changes routes: each is refused with
the right status and error code, never a 500, and the replica (live rows, their versions and the
sync runs) is exactly as before."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from devserver.apigateway import proxy_event
from paysync.dal.db import parse_database_url
from paysync.reconcile import reconcile_snapshot
from tests.conftest import TABLES, body_of, database_state, header, sample_bytes, snapshot
from tests.integration.test_devserver import Devserver, call
from tests.integration.test_devserver import devserver as shared_devserver  # noqa: F401 (the fixture)

BIGINT_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def replica(database_url: str) -> Iterator[pg8000.native.Connection]:
    """The samples, then patient 5 renamed and patient 4 deleted: rows with a history."""
    connection = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    connection.run(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    for entity in ("patients", "payments"):
        reconcile_snapshot(entity, io.BytesIO(sample_bytes(entity)), source="cli")
    patients = [r for r in json.loads(sample_bytes("patients")) if r["externalId"] != "4"]
    for record in patients:
        if record["externalId"] == "5":
            record["firstName"] = "Richard"
    reconcile_snapshot("patients", snapshot(patients), source="cli", force=True)
    yield connection
    connection.close()


@pytest.fixture(autouse=True)
def unchanged(replica: pg8000.native.Connection) -> Iterator[None]:
    """Asserts, after each case, that nothing in the replica changed."""
    assert replica.run("SELECT count(*) FROM patient_versions")[0][0] == 2  # the fixture's history
    before = database_state(replica)
    yield
    assert database_state(replica) == before


def refused(response: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    assert response["statusCode"] == status, response["body"]
    assert header(response, "Content-Type") == "application/json"
    error = body_of(response)["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def row_event(entity: str, eid: str, query: dict[str, str] | None = None, history: bool = False) -> dict:
    suffix = "/history" if history else ""
    return proxy_event(
        "GET",
        f"/{entity}/{eid}{suffix}",
        query=query,
        resource=f"/{entity}/{{externalId}}{suffix}",
        path_parameters={"externalId": eid},
    )


def changes_event(raw_id: str, query: dict[str, str] | None = None) -> dict:
    return proxy_event(
        "GET", f"/syncs/{raw_id}/changes", query=query, resource="/syncs/{id}/changes", path_parameters={"id": raw_id}
    )


def handler(entity: str) -> str:
    return f"get_{entity}"


ENTITIES = pytest.mark.parametrize("entity", ["patients", "payments"])
BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param(" ", id="space"),
    pytest.param("\t\n ", id="whitespace"),
    pytest.param("x" * 256, id="256-chars"),
    pytest.param("9" * 5000, id="5000-chars"),
    pytest.param("\x00", id="nul"),
    pytest.param("5\x00", id="trailing-nul"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param("5\udfff", id="trailing-lone-surrogate"),
]
ODD_IDS = [
    pytest.param("'; DROP TABLE patients; --", id="sql"),
    pytest.param("../../etc/passwd", id="traversal"),
    pytest.param("%00", id="percent-nul-text"),
    pytest.param("5 ", id="trailing-space"),
    pytest.param(" 5", id="leading-space"),
    pytest.param("05", id="leading-zero"),
    pytest.param("\uff15", id="fullwidth-five"),
    pytest.param("5/history", id="slash-history"),
    pytest.param("\u202e5", id="rtl-override"),
    pytest.param("a\nb", id="newline"),
    pytest.param("x" * 255, id="255-chars"),
    pytest.param("\U0001f600", id="emoji"),
    pytest.param("*", id="star"),
    pytest.param("%", id="percent"),
]


class TestPathIds:
    @ENTITIES
    @pytest.mark.parametrize("eid", BAD_IDS)
    def test_bad_id_is_400(self, invoke, entity, eid):
        refused(invoke(handler(entity), row_event(entity, eid)), 400, "invalid_request")

    @ENTITIES
    @pytest.mark.parametrize("eid", BAD_IDS)
    def test_bad_id_history_is_400(self, invoke, entity, eid):
        refused(invoke(handler(entity), row_event(entity, eid, history=True)), 400, "invalid_request")

    @ENTITIES
    @pytest.mark.parametrize("eid", ODD_IDS)
    def test_odd_id_finds_nothing(self, invoke, entity, eid):
        refused(invoke(handler(entity), row_event(entity, eid)), 404, "not_found")
        refused(invoke(handler(entity), row_event(entity, eid, history=True)), 404, "not_found")

    def test_deleted_row_is_404_and_its_history_is_shown(self, invoke):
        refused(invoke("get_patients", row_event("patients", "4")), 404, "not_found")
        response = invoke("get_patients", row_event("patients", "4", history=True))
        assert [v["action"] for v in body_of(response)] == ["deleted", "inserted"]

    @ENTITIES
    def test_missing_path_parameter_is_404(self, invoke, entity):
        event = row_event(entity, "5")
        event["pathParameters"] = None
        refused(invoke(handler(entity), event), 404, "not_found")


class TestRowQuery:
    @pytest.mark.parametrize(
        "query",
        [
            pytest.param({"include_deleted": ""}, id="empty-flag"),
            pytest.param({"include_deleted": "maybe"}, id="word-flag"),
            pytest.param({"include_deleted": "2"}, id="two-flag"),
            pytest.param({"include_deleted": "true "}, id="padded-flag"),
            pytest.param({"include_deleted": "\u0661"}, id="arabic-one-flag"),
            pytest.param({"as_of": ""}, id="empty-time"),
            pytest.param({"as_of": "yesterday"}, id="word-time"),
            pytest.param({"as_of": "2026-11-27"}, id="date-only"),
            pytest.param({"as_of": "2026-11-27T12:00:00"}, id="no-offset"),
            pytest.param({"as_of": "2026-11-27 12:00:00Z"}, id="space-separator"),
            pytest.param({"as_of": "2026-13-01T00:00:00Z"}, id="month-13"),
            pytest.param({"as_of": "2026-02-30T00:00:00Z"}, id="february-30"),
            pytest.param({"as_of": "2026-11-27T24:00:00Z"}, id="hour-24"),
            pytest.param({"as_of": "2026-11-27T12:00:60Z"}, id="leap-second"),
            pytest.param({"as_of": "2026-11-27T12:00:00+24:00"}, id="offset-24h"),
            pytest.param({"as_of": "1969-12-31T23:59:59Z"}, id="before-1970"),
            pytest.param({"as_of": "9999-12-31T23:59:59Z"}, id="far-future"),
            pytest.param({"as_of": "\uff12\uff10\uff12\uff16-11-27T12:00:00Z"}, id="fullwidth-year"),
            pytest.param({"as_of": "2026-11-27T12:00:00.1234567890Z"}, id="ten-fraction-digits"),
            pytest.param({"as_of": "1764244800"}, id="epoch-seconds"),
            pytest.param({"as_of": "2026-11-27T12:00:00Z\x00"}, id="nul"),
            pytest.param({"as_of": "x" * 5000}, id="5000-chars"),
            pytest.param({"limit": "1"}, id="list-parameter"),
            pytest.param({"AS_OF": "2026-11-27T12:00:00Z"}, id="upper-case-name"),
            pytest.param({"as-of": "2026-11-27T12:00:00Z"}, id="dashed-name"),
            pytest.param({"": "1"}, id="empty-name"),
            pytest.param({"\x00": "1"}, id="nul-name"),
        ],
    )
    @ENTITIES
    def test_bad_query_is_400(self, invoke, entity, query):
        eid = "5" if entity == "patients" else "501"
        refused(invoke(handler(entity), row_event(entity, eid, query)), 400, "invalid_request")

    def test_unknown_parameter_names_the_accepted_ones(self, invoke):
        error = refused(invoke("get_patients", row_event("patients", "5", {"bogus": "1"})), 400, "invalid_request")
        assert "include_deleted" in error["message"]
        assert "as_of" in error["message"]

    def test_repeated_parameter_is_400(self, invoke):
        event = row_event("patients", "5", {"include_deleted": "true"})
        event["multiValueQueryStringParameters"] = {"include_deleted": ["true", "false"]}
        refused(invoke("get_patients", event), 400, "invalid_request")

    def test_before_the_first_sync_is_404(self, invoke):
        refused(invoke("get_patients", row_event("patients", "5", {"as_of": "1970-01-01T00:00:00Z"})), 404, "not_found")


BAD_HISTORY_QUERIES = [
    pytest.param({"limit": "0"}, id="limit-0"),
    pytest.param({"limit": "-1"}, id="limit-negative"),
    pytest.param({"limit": "1001"}, id="limit-1001"),
    pytest.param({"limit": "1.5"}, id="limit-decimal"),
    pytest.param({"limit": "\u0661"}, id="limit-arabic-one"),
    pytest.param({"limit": ""}, id="limit-empty"),
    pytest.param({"cursor": "!!"}, id="cursor-not-base64"),
    pytest.param({"cursor": cursor("patients", "1.00", 1)}, id="cursor-of-the-list"),
    pytest.param({"cursor": cursor("patients_history", 1)}, id="cursor-short"),
    pytest.param({"cursor": cursor("patients_history", 1, 1, 1)}, id="cursor-long"),
    pytest.param({"cursor": cursor("patients_history", -1, 1)}, id="cursor-negative-time"),
    pytest.param({"cursor": cursor("patients_history", 10**20, 1)}, id="cursor-huge-time"),
    pytest.param({"cursor": cursor("patients_history", 1.5, 1)}, id="cursor-float-time"),
    pytest.param({"cursor": cursor("patients_history", "1", 1)}, id="cursor-string-time"),
    pytest.param({"cursor": cursor("patients_history", True, 1)}, id="cursor-bool-time"),
    pytest.param({"cursor": cursor("patients_history", 1, 0)}, id="cursor-id-0"),
    pytest.param({"cursor": cursor("patients_history", 1, BIGINT_MAX + 1)}, id="cursor-id-beyond-bigint"),
    pytest.param({"cursor": cursor("patients_history", 1, None)}, id="cursor-null-id"),
    pytest.param({"cursor": "A" * 1025}, id="cursor-over-1kb"),
    pytest.param({"as_of": "2026-11-27T12:00:00Z"}, id="as-of-on-history"),
    pytest.param({"include_deleted": "true"}, id="include-deleted-on-history"),
]


class TestHistoryQuery:
    @pytest.mark.parametrize("query", BAD_HISTORY_QUERIES)
    def test_bad_query_is_400(self, invoke, query):
        refused(invoke("get_patients", row_event("patients", "5", query, history=True)), 400, "invalid_request")

    def test_payments_cursor_on_patients_history_is_400(self, invoke):
        query = {"cursor": cursor("payments_history", 1, 1)}
        refused(invoke("get_patients", row_event("patients", "5", query, history=True)), 400, "invalid_request")


class TestChanges:
    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param("0", id="zero"),
            pytest.param("-1", id="negative"),
            pytest.param("+1", id="plus"),
            pytest.param("1.0", id="decimal"),
            pytest.param("1e0", id="exponent"),
            pytest.param("abc", id="word"),
            pytest.param(str(BIGINT_MAX + 1), id="beyond-bigint"),
            pytest.param("\u0661", id="arabic-indic"),
            pytest.param("\uff11", id="fullwidth"),
            pytest.param(" 1", id="leading-space"),
        ],
    )
    def test_bad_id_is_400(self, invoke, raw):
        refused(invoke("get_syncs", changes_event(raw)), 400, "invalid_request")

    def test_unknown_sync_is_404(self, invoke):
        refused(invoke("get_syncs", changes_event(str(BIGINT_MAX))), 404, "not_found")

    @pytest.mark.parametrize(
        "query",
        [
            pytest.param({"entity": "patient"}, id="entity-singular"),
            pytest.param({"entity": "PATIENTS"}, id="entity-upper"),
            pytest.param({"entity": ""}, id="entity-empty"),
            pytest.param({"entity": "patients\x00"}, id="entity-nul"),
            pytest.param({"action": "insert"}, id="action-verb"),
            pytest.param({"action": "Inserted"}, id="action-capital"),
            pytest.param({"action": ""}, id="action-empty"),
            pytest.param({"action": "i"}, id="action-diff-letter"),
            pytest.param({"limit": "0"}, id="limit-0"),
            pytest.param({"limit": "99999"}, id="limit-huge"),
            pytest.param({"cursor": cursor("changes", "1")}, id="cursor-string-id"),
            pytest.param({"cursor": cursor("syncs", 1)}, id="cursor-of-syncs"),
            pytest.param({"cursor": cursor("changes", 0)}, id="cursor-id-0"),
            pytest.param({"since": "1"}, id="unknown-parameter"),
        ],
    )
    def test_bad_query_is_400(self, invoke, query):
        refused(invoke("get_syncs", changes_event("3", query)), 400, "invalid_request")

    def test_changes_of_the_rename_and_delete(self, invoke):
        response = invoke("get_syncs", changes_event("3"))
        assert response["statusCode"] == 200
        assert [(c["externalId"], c["action"]) for c in body_of(response)] == [("5", "updated"), ("4", "deleted")]


class TestOverHttp:
    """What only a raw HTTP request can carry, through the devserver (API Gateway's stand-in)."""

    @pytest.fixture
    def stack(self, request: pytest.FixtureRequest) -> Devserver:
        return request.getfixturevalue("shared_devserver")

    @pytest.mark.parametrize(
        ("target", "status", "code"),
        [
            pytest.param("/patients/%00", 400, "invalid_request", id="encoded-nul-id"),
            pytest.param("/patients/%00/history", 400, "invalid_request", id="encoded-nul-id-history"),
            pytest.param("/payments/%20", 400, "invalid_request", id="encoded-space-id"),
            pytest.param("/patients/%2F", 404, "not_found", id="encoded-slash-id"),
            pytest.param("/patients/5%2Fhistory", 404, "not_found", id="slash-history-in-id"),
            pytest.param("/patients/%2E%2E", 404, "not_found", id="encoded-dot-dot"),
            pytest.param("/patients/5?as_of=2026-11-27T12:00:00+01:00", 400, "invalid_request", id="raw-plus-offset"),
            pytest.param("/patients/5?as_of=%zz", 400, "invalid_request", id="bad-escape"),
            pytest.param("/patients/5?include_deleted", 400, "invalid_request", id="bare-flag"),
            pytest.param("/payments/501/history?limit=1&limit=2", 400, "invalid_request", id="repeated-limit"),
            pytest.param("/syncs/3/changes?action=%00", 400, "invalid_request", id="encoded-nul-action"),
            pytest.param("/syncs/%D9%A3/changes", 400, "invalid_request", id="arabic-indic-sync-id"),
            pytest.param("/patients/4", 404, "not_found", id="deleted"),
        ],
    )
    def test_raw_request(self, stack: Devserver, replica, target, status, code):
        response = call("GET", f"{stack.base}{target}")

        assert response.status == status, response.body
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == code

    def test_encoded_id_is_found(self, stack: Devserver, replica):
        response = call("GET", f"{stack.base}/patients/5?as_of=2100-01-01T00:00:00%2B01:00")
        assert response.status == 400  # in the future

        response = call("GET", f"{stack.base}/patients/%35/history")
        assert response.status == 200, response.body
        assert [v["firstName"] for v in response.json()] == ["Richard", "Rick"]
