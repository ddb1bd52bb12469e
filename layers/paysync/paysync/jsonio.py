"""JSON output that keeps money exact: Decimal is written as a number with two decimals.

The standard encoder (and Powertools' serializer) cannot emit a Decimal as a
JSON number without going through float, so this one writes JSON itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

_encode_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_CENT = Decimal("0.01")


def _decimal(value: Decimal) -> str:
    text = str(value)
    if text[-3:-2] == "." and "E" not in text:  # already two decimals, as NUMERIC(…, 2) returns them
        return text
    if not value.is_finite():
        raise ValueError("non-finite Decimal cannot be written as JSON")
    return format(value.quantize(_CENT), "f")


def _datetime(value: datetime) -> str:
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return _encode_string(value.isoformat().replace("+00:00", "Z"))


# A sync stamps every row it writes with one timestamp, so a page holds few
# distinct `created` / `updated` values: format each once.
_cached_datetime = lru_cache(maxsize=1024)(_datetime)


def _date(value: date) -> str:
    return _encode_string(value.isoformat())


# Writers by exact type: a page of rows is thousands of scalars, and str / int
# go straight to C functions.
_SCALARS: dict[type, Callable[[Any], str]] = {
    str: _encode_string,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "null",
    Decimal: _decimal,
    datetime: _cached_datetime,
    date: _date,
}


def to_json(value: Any) -> str:
    """Serialize dicts, lists, str, int, bool, None, Decimal (as 0.00), date and datetime (ISO 8601)."""
    write = _SCALARS.get(type(value))
    if write is not None:
        return write(value)
    if isinstance(value, dict):
        return "{" + ",".join([_encode_string(str(key)) + ":" + to_json(item) for key, item in value.items()]) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join([to_json(item) for item in value]) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
