"""Hostile requests against GET /stats, /stats/histogram and /stats/history: each is refused with
400 invalid_request (never a 500), and nothing in the replica or the stored figures changes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pg8000.native
import pytest

from devserver.apigateway import proxy_event as api_event
from paysync.dal.db import parse_database_url
from paysync.reconcile import reconcile_snapshot
from tests.conftest import TABLES, body_of, database_state, sample_bytes
from tests.integration.test_hostile_api import (
    BAD_BOUNDS,
    BAD_INTEGERS,
    assert_refused,
    bad_id_cursors,
    cursor,
    get_event,
)

STATS_TABLES = ("sync_stats", "patient_total_ranks")


@pytest.fixture(scope="module")
def replica(database_url: str) -> Iterator[pg8000.native.Connection]:
    """The samples loaded once for the module (every case here must leave them untouched)."""
    connection = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    connection.run(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    for entity in ("patients", "payments"):
        reconcile_snapshot(entity, io.BytesIO(sample_bytes(entity)), source="cli")
    yield connection
    connection.close()


def state(connection: pg8000.native.Connection) -> dict[str, list[list[Any]]]:
    rows = database_state(connection)
    rows["sync_stats"] = connection.run("SELECT * FROM sync_stats ORDER BY sync_id")
    rows["patient_total_ranks"] = connection.run("SELECT * FROM patient_total_ranks ORDER BY total")
    return rows


@pytest.fixture(autouse=True)
def unchanged(replica: pg8000.native.Connection) -> Iterator[None]:
    before = state(replica)
    yield
    assert state(replica) == before


OUT_OF_RANGE = [
    pytest.param("101", id="101"),
    pytest.param("1000", id="1000"),
    pytest.param("00", id="double-zero"),
    pytest.param("0101", id="padded-101"),
    pytest.param("0" * 21 + "1", id="22-digits"),
    pytest.param("2147483648", id="beyond-int32"),
    pytest.param(str(2**64), id="beyond-int64"),
]


class TestGetStats:
    @pytest.mark.parametrize("value", BAD_INTEGERS + OUT_OF_RANGE)
    def test_bad_top(self, invoke, value):
        error = assert_refused(invoke("get_stats", get_event("/stats", {"top": value})), 400, "invalid_request")
        assert "top" in error["message"]

    @pytest.mark.parametrize(
        "query",
        [
            {"limit": "1"},
            {"Top": "1"},
            {"top ": "1"},
            {"buckets": "3"},
            {"cursor": cursor("stats", 1)},
            {"top[]": "1"},
            {"\u0074op": "1", "x": ""},
            {"top\x00": "1"},
            {"": "1"},
            {"t" * 65: "1"},
        ],
    )
    def test_unknown_or_malformed_parameter(self, invoke, query):
        assert_refused(invoke("get_stats", get_event("/stats", query)), 400, "invalid_request")

    def test_repeated_top(self, invoke):
        event = get_event("/stats", repeated={"top": ["1", "100"]})
        assert_refused(invoke("get_stats", event), 400, "invalid_request")

    @pytest.mark.parametrize("value", ["1", "100", "001", "099", "0100", "0" * 19 + "1"])
    def test_edges_of_the_range_are_accepted(self, invoke, value):
        response = invoke("get_stats", get_event("/stats", {"top": value}))
        assert response["statusCode"] == 200
        assert len(body_of(response)["topPayers"]) == min(int(value), 4)


class TestGetHistogram:
    @pytest.mark.parametrize("value", BAD_INTEGERS + OUT_OF_RANGE)
    def test_bad_buckets(self, invoke, value):
        response = invoke("get_stats", get_event("/stats/histogram", {"buckets": value}))
        error = assert_refused(response, 400, "invalid_request")
        assert "buckets" in error["message"]

    @pytest.mark.parametrize("name", ["min", "max"])
    @pytest.mark.parametrize("value", BAD_BOUNDS)
    def test_bad_bound(self, invoke, name, value):
        response = invoke("get_stats", get_event("/stats/histogram", {name: value}))
        assert_refused(response, 400, "invalid_request")

    @pytest.mark.parametrize(
        ("low", "high"),
        [
            ("2", "1"),
            ("0.02", "0.011"),
            ("-1", "-2"),
            ("10.000000000000000001", "10"),
            ("99999999999999999999", "-99999999999999999999"),
            ("0", "-0.00000000000000000001"),
        ],
    )
    def test_min_above_max(self, invoke, low, high):
        response = invoke("get_stats", get_event("/stats/histogram", {"min": low, "max": high}))
        error = assert_refused(response, 400, "invalid_request")
        assert "min" in error["message"]

    @pytest.mark.parametrize(
        "query",
        [
            {"bucket": "3"},
            {"top": "3"},
            {"minimum": "0"},
            {"payment_min": "0"},
            {"limit": "10"},
            {"Buckets": "3"},
        ],
    )
    def test_unknown_parameter(self, invoke, query):
        assert_refused(invoke("get_stats", get_event("/stats/histogram", query)), 400, "invalid_request")

    def test_repeated_buckets(self, invoke):
        event = get_event("/stats/histogram", repeated={"buckets": ["2", "3"]})
        assert_refused(invoke("get_stats", event), 400, "invalid_request")

    @pytest.mark.parametrize(
        ("low", "high"),
        [
            ("-99999999999999999999.99", "99999999999999999999.99"),
            ("-0", "0"),
            ("0.00000000000000000001", "17.22"),
            ("17.22", "17.22"),
            (".5", "+9"),
        ],
    )
    def test_extreme_but_valid_ranges_count_every_patient_once(self, invoke, low, high):
        response = invoke("get_stats", get_event("/stats/histogram", {"buckets": "100", "min": low, "max": high}))
        assert response["statusCode"] == 200, response["body"]
        body = body_of(response)
        assert sum(b["count"] for b in body["buckets"]) + body["below"] + body["above"] == 4
        assert all(b["count"] >= 0 for b in body["buckets"])
        assert body["min"] >= Decimal(low)


class TestGetHistory:
    @pytest.mark.parametrize("value", BAD_INTEGERS)
    def test_bad_limit(self, invoke, value):
        assert_refused(invoke("get_stats", get_event("/stats/history", {"limit": value})), 400, "invalid_request")

    @pytest.mark.parametrize("value", [*bad_id_cursors("stats"), pytest.param(cursor("syncs", 1), id="syncs-cursor")])
    def test_forged_cursor(self, invoke, value):
        assert_refused(invoke("get_stats", get_event("/stats/history", {"cursor": value})), 400, "invalid_request")

    @pytest.mark.parametrize("query", [{"top": "1"}, {"before": "1"}, {"sync_id": "1"}])
    def test_unknown_parameter(self, invoke, query):
        assert_refused(invoke("get_stats", get_event("/stats/history", query)), 400, "invalid_request")

    def test_unknown_route_is_404(self, invoke):
        assert_refused(invoke("get_stats", api_event("GET", "/stats/other")), 404, "not_found")
