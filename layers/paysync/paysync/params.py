"""Parsing of query parameters, path parameters and cursors into typed values.

Every value is checked against the range of the SQL type it will meet (bigint
ids, NUMERIC totals, text without NUL) before any query runs, so bad input is a
400 and never reaches PostgreSQL. Numbers are ASCII digits only: `str.isdigit`
and `int()` also accept other scripts' digits (Arabic-Indic, full-width, superscripts).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from paysync.errors import InvalidRequest
from paysync.records import MAX_TEXT_LENGTH

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ID = 2**63 - 1  # bigint
MAX_VALUE_LENGTH = 1024  # any query value; also bounds a cursor before it is decoded
MAX_NAME_LENGTH = 64
# Bounds are compared with NUMERIC(22,2) totals: below 1e20, at most 20 decimals.
MAX_BOUND = Decimal("1e20")
MAX_BOUND_DECIMALS = 20
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_INTEGER = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]*)?|\.[0-9]+)")
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_NOT_A_CURSOR = "is not a cursor this API returned"


class _NotACursor(Exception):
    pass


def _invalid(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{name} {message}", [{"parameter": name, "message": message}])


def _storable(text: str) -> bool:
    """True when PostgreSQL text can hold `text`: no NUL, and valid UTF-8 (no lone surrogates)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_query(params: Mapping[str, str], accepted: tuple[str, ...]) -> None:
    """400 for a malformed name or value (NUL, invalid UTF-8, overlong), or an unknown name
    (the message names the accepted ones). Unknown names are echoed only when well-formed."""
    for name, value in params.items():
        if not name or len(name) > MAX_NAME_LENGTH or not _storable(name) or not name.isprintable():
            raise InvalidRequest(
                f"a query parameter name is malformed; accepted: {', '.join(accepted) or 'none'}",
                [{"message": "malformed parameter name"}],
            )
        if name in accepted and not _storable(value):
            raise _invalid(name, "must not contain NUL characters or invalid UTF-8")
        if name in accepted and len(value) > MAX_VALUE_LENGTH:
            raise _invalid(name, f"must be at most {MAX_VALUE_LENGTH} characters")
    reject_unknown(params, accepted)


def reject_unknown(params: Mapping[str, str], accepted: tuple[str, ...]) -> None:
    """400 naming the accepted parameters when `params` holds any other."""
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}",
            [{"parameter": name, "message": "unknown parameter"} for name in unknown],
        )


def _integer(raw: str, name: str, low: int, high: int, message: str) -> int:
    # ASCII digits only, no sign, no spaces; the length bound keeps int() cheap.
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise _invalid(name, message)
    return int(raw)


def limit(params: Mapping[str, str]) -> int:
    """`limit`: page size, 1..1000, default 100."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    return _integer(raw, "limit", 1, MAX_LIMIT, f"must be an integer from 1 to {MAX_LIMIT}")


def positive_int(raw: str, name: str) -> int:
    """A path or query value that must be a positive bigint id (ASCII digits)."""
    return _integer(raw, name, 1, MAX_ID, "must be a positive integer below 2^63 (ASCII digits)")


def parse_bound(raw: str) -> Decimal | None:
    """A decimal bound in plain notation (ASCII digits, optional sign and point), |x| < 1e20 and
    at most 20 decimals; None when `raw` is not one. No exponent, NaN or Infinity."""
    if not isinstance(raw, str) or not _DECIMAL.fullmatch(raw):
        return None
    value = Decimal(raw)
    # copy_abs, not abs(): abs() rounds to the context's 28 digits.
    if value.copy_abs() >= MAX_BOUND or -value.as_tuple().exponent > MAX_BOUND_DECIMALS:
        return None
    return value


def decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    """An optional decimal bound (see `parse_bound`)."""
    raw = params.get(name)
    if raw is None:
        return None
    value = parse_bound(raw)
    if value is None:
        raise _invalid(
            name,
            f"must be a decimal number like 10 or 17.25 (ASCII digits, no exponent),"
            f" below 1e20 in size with at most {MAX_BOUND_DECIMALS} decimals",
        )
    return value


def text(params: Mapping[str, str], name: str) -> str | None:
    """An optional identifier: non-blank, at most 255 characters (what a stored id can be)."""
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.strip():
        raise _invalid(name, "must not be empty")
    if len(raw) > MAX_TEXT_LENGTH:
        raise _invalid(name, f"must be at most {MAX_TEXT_LENGTH} characters")
    if not _storable(raw):
        raise _invalid(name, "must not contain NUL characters or invalid UTF-8")
    return raw


def boolean(params: Mapping[str, str], name: str) -> bool:
    """An optional flag: true/false/1/0/yes/no, any case. An empty value is refused: `force=`
    from an unset template variable must not silently override the deletion guard."""
    raw = params.get(name)
    if raw is None:
        return False
    if raw.isascii() and raw.lower() in _TRUE:
        return True
    if raw.isascii() and raw.lower() in _FALSE:
        return False
    raise _invalid(name, "must be true or false")


def encode_cursor(kind: str, *values: Any) -> str:
    """An opaque cursor for the page after the row with these key values."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _reject_constant(_: str) -> Any:
    raise _NotACursor  # NaN, Infinity, -Infinity: not JSON, never in a cursor we wrote


def decode_cursor(params: Mapping[str, str], kind: str, size: int) -> list[Any] | None:
    """The `size` key values of `cursor`, checked to come from the same kind of listing."""
    raw = params.get("cursor")
    if raw is None:
        return None
    # Bounded before decoding: a forged cursor can neither be big nor deeply nested.
    if len(raw) > MAX_VALUE_LENGTH or not _CURSOR.fullmatch(raw):
        raise _invalid("cursor", _NOT_A_CURSOR)
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        decoded = json.loads(text, parse_constant=_reject_constant)
    except (binascii.Error, ValueError, RecursionError, _NotACursor):
        raise _invalid("cursor", _NOT_A_CURSOR) from None
    if not isinstance(decoded, list) or len(decoded) != size + 1 or decoded[0] != kind:
        raise _invalid("cursor", _NOT_A_CURSOR)
    return decoded[1:]


def cursor_id(value: Any) -> int:
    """A row id taken from a cursor: a JSON integer in bigint range (400 otherwise)."""
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise _invalid("cursor", _NOT_A_CURSOR)
    return value


def cursor_bound(value: Any) -> Decimal:
    """A payments total taken from a cursor: a decimal string within the totals' range."""
    total = parse_bound(value)
    if total is None:
        raise _invalid("cursor", _NOT_A_CURSOR)
    return total
