"""Parsing of query parameters and cursors into typed values (400 on anything odd)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from paysync.errors import InvalidRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_TRUE = {"true", "1", "yes", ""}
_FALSE = {"false", "0", "no"}


def reject_unknown(params: Mapping[str, str], accepted: tuple[str, ...]) -> None:
    """400 naming the accepted parameters when `params` holds any other."""
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; accepted: {', '.join(accepted)}",
            [{"parameter": name, "message": "unknown parameter"} for name in unknown],
        )


def _invalid(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{name} {message}", [{"parameter": name, "message": message}])


def limit(params: Mapping[str, str]) -> int:
    """`limit`: page size, 1..1000, default 100."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    """An optional finite decimal number."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise _invalid(name, "must be a decimal number") from None
    if not value.is_finite() or abs(value) >= Decimal("1e18"):
        raise _invalid(name, "must be a finite decimal number below 1e18")
    return value


def boolean(params: Mapping[str, str], name: str) -> bool:
    """An optional flag: true/false/1/0/yes/no (a bare `?name` is true)."""
    raw = params.get(name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _invalid(name, "must be true or false")


def positive_int(raw: str, name: str) -> int:
    """A path or query value that must be a positive integer id."""
    if not raw.isdigit() or int(raw) < 1 or int(raw) > 2**63 - 1:
        raise _invalid(name, "must be a positive integer")
    return int(raw)


def encode_cursor(kind: str, *values: Any) -> str:
    """An opaque cursor for the page after the row with these key values."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(params: Mapping[str, str], kind: str) -> list[Any] | None:
    """The key values of `cursor`, checked to come from the same kind of listing."""
    raw = params.get("cursor")
    if raw is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid("cursor", "is not a cursor this API returned") from None
    if not isinstance(decoded, list) or not decoded or decoded[0] != kind:
        raise _invalid("cursor", "is not a cursor this API returned")
    return decoded[1:]
