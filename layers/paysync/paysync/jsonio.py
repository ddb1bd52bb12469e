"""JSON output that keeps money exact: Decimal is written as a number with two decimals.

The standard encoder (and Powertools' serializer) cannot emit a Decimal as a
JSON number without going through float, so this one writes JSON itself.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

_encode_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def to_json(value: Any) -> str:
    """Serialize dicts, lists, str, int, bool, None, Decimal (as 0.00), date and datetime (ISO 8601)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("non-finite Decimal cannot be written as JSON")
        out.append(format(value.quantize(Decimal("0.01")), "f"))
    elif isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        out.append(_encode_string(value.isoformat().replace("+00:00", "Z")))
    elif isinstance(value, date):
        out.append(_encode_string(value.isoformat()))
    elif isinstance(value, dict):
        out.append("{")
        for position, (key, item) in enumerate(value.items()):
            if position:
                out.append(",")
            out.append(_encode_string(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
