"""Query parameters, cursors, money-safe JSON and database URLs (pure logic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from paysync import params
from paysync.dal.db import parse_database_url
from paysync.errors import InvalidRequest
from paysync.jsonio import to_json


def test_money_is_written_as_a_two_decimal_number():
    assert (
        to_json({"a": Decimal("17.2"), "b": Decimal("0"), "c": [Decimal("-1.5")]}) == '{"a":17.20,"b":0.00,"c":[-1.50]}'
    )


def test_json_types():
    when = datetime(2026, 11, 26, 15, 0, tzinfo=timezone(timedelta(hours=1)))
    assert to_json([None, True, False, 3, 'é"', date(2094, 2, 1), when]) == (
        '[null,true,false,3,"\\u00e9\\"","2094-02-01","2026-11-26T14:00:00Z"]'
    )
    with pytest.raises(TypeError):
        to_json(1.5)
    with pytest.raises(ValueError, match="non-finite"):
        to_json(Decimal("NaN"))


def test_limit():
    assert params.limit({}) == 100
    assert params.limit({"limit": "1000"}) == 1000
    for bad in ("0", "1001", "-1", "1.5", ""):
        with pytest.raises(InvalidRequest):
            params.limit({"limit": bad})


def test_booleans():
    assert params.boolean({"f": "TRUE"}, "f") is True
    assert params.boolean({"f": "0"}, "f") is False
    assert params.boolean({}, "f") is False
    with pytest.raises(InvalidRequest):
        params.boolean({"f": "maybe"}, "f")
    with pytest.raises(InvalidRequest):
        params.boolean({"f": ""}, "f")


def test_cursor_round_trip_and_kind_check():
    cursor = params.encode_cursor("patients", "17.22", 5)

    assert params.decode_cursor({"cursor": cursor}, "patients", 2) == ["17.22", 5]
    with pytest.raises(InvalidRequest):
        params.decode_cursor({"cursor": cursor}, "payments", 2)
    with pytest.raises(InvalidRequest):
        params.decode_cursor({"cursor": "%%%"}, "patients", 2)


def test_decimal_parameter():
    assert params.decimal({"x": "10.5"}, "x") == Decimal("10.5")
    for bad in ("NaN", "inf", "1e30", "ten", " 10.5 "):
        with pytest.raises(InvalidRequest):
            params.decimal({"x": bad}, "x")


def test_database_urls():
    tcp = parse_database_url("postgresql://u:p%40ss@db.example:6543/app?sslmode=verify-full")
    assert (tcp.user, tcp.password, tcp.host, tcp.port, tcp.database) == ("u", "p@ss", "db.example", 6543, "app")
    assert tcp.ssl_context is not None
    assert tcp.ssl_context.check_hostname

    socket = parse_database_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert socket.unix_sock == "/tmp/pg/.s.PGSQL.5432"
    assert socket.ssl_context is None

    assert parse_database_url("postgres://x@h/d?sslmode=require").ssl_context.check_hostname is False
    with pytest.raises(ValueError, match="postgresql"):
        parse_database_url("mysql://x@h/d")


def test_utc_now_is_aware():
    assert to_json(datetime(2026, 1, 1, tzinfo=UTC)) == '"2026-01-01T00:00:00Z"'
