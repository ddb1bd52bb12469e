"""Validation of snapshot records and their rendering as COPY text rows.

Pure functions, no I/O. A record is one element of a snapshot's JSON array, as
ijson yields it: dicts, str, int, Decimal (never float), bool, None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Any, Literal

from paysync.errors import RecordError

Entity = Literal["patients", "payments"]
ENTITIES: tuple[Entity, ...] = ("patients", "payments")

MAX_TEXT_LENGTH = 255
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12,2)
_WHOLE_LIMIT = 10**10  # whole amounts below it in size fit NUMERIC(12,2)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# The snapshot reader replaces bytes that are not UTF-8 and escaped lone surrogates by this
# noncharacter; it is refused in text like any noncharacter or surrogate.
INVALID_TEXT = "\uffff"
_INVALID_UNICODE = re.compile("[\ud800-\udfff\ufffe\uffff]")
# Control characters (C0, DEL, C1). Names may hold tab, line feed and carriage return.
_ID_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAME_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
INVALID_TEXT_MESSAGE = "must be valid UTF-8 text (no invalid bytes, lone surrogates or noncharacters)"
DUPLICATE_KEY_MESSAGE = "duplicate key"

# COPY text format: backslash, tab, newline and carriage return are escaped; \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"

# Columns of the staging tables, in COPY order (idx = position in the snapshot).
STAGE_COLUMNS: dict[Entity, tuple[str, ...]] = {
    "patients": ("idx", "external_id", "first_name", "last_name", "middle_name", "date_of_birth"),
    "payments": ("idx", "external_id", "amount", "patient_external_id"),
}


class _Invalid(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message


def _identifier(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if type(value) is int:
        return str(value)
    if type(value) is not str:
        if value is None:
            raise _Invalid(field, "is required")
        raise _Invalid(field, "must be a string or an integer")
    _check_text(value, field, _ID_CONTROLS)
    return value


def _check_text(value: str, field: str, controls: re.Pattern[str]) -> None:
    if not value.strip():
        raise _Invalid(field, "must not be empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise _Invalid(field, f"must be at most {MAX_TEXT_LENGTH} characters")
    if not value.isprintable():  # cheap first test; most text is printable
        if "\x00" in value:
            raise _Invalid(field, "must not contain NUL characters")
        if _INVALID_UNICODE.search(value):
            raise _Invalid(field, INVALID_TEXT_MESSAGE)
        if controls.search(value):
            raise _Invalid(field, "must not contain control characters")


def _text(record: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = record.get(field)
    if value is None:
        if required:
            raise _Invalid(field, "is required")
        return None
    if type(value) is not str:
        raise _Invalid(field, "must be a string")
    _check_text(value, field, _NAME_CONTROLS)
    return value


def _date(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if value is None:
        raise _Invalid(field, "is required")
    if type(value) is not str or not _DATE.fullmatch(value):
        raise _Invalid(field, "must be a date in YYYY-MM-DD format")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise _Invalid(field, "is not a valid calendar date") from None
    return value


def _amount(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if value is None:
        raise _Invalid(field, "is required")
    if type(value) is int:
        value = Decimal(value)
    elif type(value) is not Decimal:
        raise _Invalid(field, "must be a number")
    if not value.is_finite():
        raise _Invalid(field, "must be a finite number")
    if value.copy_abs() > MAX_AMOUNT:  # copy_abs is exact: abs() could overflow on 1e999999999
        raise _Invalid(field, f"must be between -{MAX_AMOUNT} and {MAX_AMOUNT}")
    try:
        cents = value.quantize(CENT)
    except InvalidOperation:
        raise _Invalid(field, "must have at most 2 decimal places") from None
    if cents != value:
        raise _Invalid(field, "must have at most 2 decimal places")
    return str(cents)


def _copy_value(value: str | None) -> str:
    return NULL if value is None else value.translate(_COPY_ESCAPES)


def _patient_row(record: dict[str, Any]) -> list[str | None]:
    return [
        _identifier(record, "externalId"),
        _text(record, "firstName"),
        _text(record, "lastName"),
        _text(record, "middleName", required=False),
        _date(record, "dateOfBirth"),
    ]


def _payment_row(record: dict[str, Any]) -> list[str | None]:
    return [
        _identifier(record, "externalId"),
        _amount(record, "amount"),
        _identifier(record, "patientId"),
    ]


_ROW_BUILDERS: dict[Entity, Callable[[dict[str, Any]], list[str | None]]] = {
    "patients": _patient_row,
    "payments": _payment_row,
}


# The fast path: a record whose fields are plainly valid is rendered without the per-field
# checks above. Plain text is not blank, at most 255 characters, all printable (so no tab,
# newline or carriage return) and holds no backslash: it needs no COPY escapes. Anything
# else goes the long way, which finds the first problem, if any.


def _plain_text(value: Any) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= MAX_TEXT_LENGTH
        and value.isprintable()
        and not value.isspace()
        and "\\" not in value
    )


def _plain_payment(index: int, record: dict[str, Any]) -> str | None:
    amount = record.get("amount")
    if type(amount) is Decimal:
        amount = str(amount)
        # Two decimals and at most 10 integer digits (an exponent ends in its digits, never
        # two places after the point): already the rendering of its cents.
        if amount[-3:-2] != "." or len(amount) - (amount[0] == "-") > 13:
            return None
    elif type(amount) is int and -_WHOLE_LIMIT < amount < _WHOLE_LIMIT:
        amount = f"{amount}.00"
    else:
        return None
    external_id = record.get("externalId")
    if type(external_id) is int:
        external_id = str(external_id)
    elif not _plain_text(external_id):
        return None
    patient_id = record.get("patientId")
    if type(patient_id) is int:
        patient_id = str(patient_id)
    elif not _plain_text(patient_id):
        return None
    return f"{index}\t{external_id}\t{amount}\t{patient_id}\n"


def _plain_patient(index: int, record: dict[str, Any]) -> str | None:
    external_id = record.get("externalId")
    if type(external_id) is int:
        external_id = str(external_id)
    elif not _plain_text(external_id):
        return None
    first_name = record.get("firstName")
    last_name = record.get("lastName")
    middle_name = record.get("middleName")
    birth = record.get("dateOfBirth")
    if not (_plain_text(first_name) and _plain_text(last_name)):
        return None
    if middle_name is None:
        middle_name = NULL
    elif not _plain_text(middle_name):
        return None
    if type(birth) is not str or not _DATE.fullmatch(birth):
        return None
    try:
        date.fromisoformat(birth)
    except ValueError:
        return None
    return f"{index}\t{external_id}\t{first_name}\t{last_name}\t{middle_name}\t{birth}\n"


_PLAIN_ROWS: dict[Entity, Callable[[int, dict[str, Any]], str | None]] = {
    "patients": _plain_patient,
    "payments": _plain_payment,
}

# A batch of records is checked column by column with one C-level call per column where it
# can be; a batch with any record that is not plainly valid goes record by record instead.
_PLAIN_AMOUNT = r"-?[0-9]{1,10}(?:\.[0-9]{2})?"  # whole or two decimals, at most 10 integer digits
_PLAIN_AMOUNTS = re.compile(f"{_PLAIN_AMOUNT}(?:\\n{_PLAIN_AMOUNT})*")
_PLAIN_DATES = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:\n[0-9]{4}-[0-9]{2}-[0-9]{2})*")


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _printable(text: str) -> bool:
    if text.isascii():  # on bytes: several times faster than str.isprintable
        return not text.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return text.isprintable()


def _plain_texts(values: list[Any], *, name: bool = False) -> list[str] | None:
    """The values as COPY text when every one is a string, not blank, at most 255 characters
    and printable (a name may hold tab, newline and carriage return too); else None."""
    if set(map(type, values)) != {str}:
        return None
    if min(map(len, values)) == 0 or max(map(len, values)) > MAX_TEXT_LENGTH or any(map(str.isspace, values)):
        return None
    joined = "".join(values)
    rest = joined.replace("\t", "").replace("\n", "").replace("\r", "") if name else joined
    if not _printable(rest):
        return None
    if len(rest) < len(joined) or "\\" in joined:
        return [value.translate(_COPY_ESCAPES) for value in values]
    return values


def _plain_ids(values: list[Any]) -> list[str] | None:
    if set(map(type, values)) == {int}:
        return list(map(str, values))
    return _plain_texts(values)


def _plain_payments(records: list[dict[str, Any]]) -> tuple[list[str], ...] | None:
    amounts = list(map(dict.get, records, repeat("amount")))
    kinds = set(map(type, amounts))
    if not kinds <= {Decimal, int}:
        return None
    amounts = list(map(str, amounts))
    if not _PLAIN_AMOUNTS.fullmatch("\n".join(amounts)):
        return None
    if int in kinds:  # whole amounts get their cents
        amounts = [amount if "." in amount else amount + ".00" for amount in amounts]
    external_ids = _plain_ids(list(map(dict.get, records, repeat("externalId"))))
    patient_ids = _plain_ids(list(map(dict.get, records, repeat("patientId"))))
    if external_ids is None or patient_ids is None:
        return None
    return external_ids, amounts, patient_ids


def _plain_patients(records: list[dict[str, Any]]) -> tuple[list[str], ...] | None:
    external_ids = _plain_ids(list(map(dict.get, records, repeat("externalId"))))
    first_names = _plain_texts(list(map(dict.get, records, repeat("firstName"))), name=True)
    last_names = _plain_texts(list(map(dict.get, records, repeat("lastName"))), name=True)
    middle_names = list(map(dict.get, records, repeat("middleName")))
    births = list(map(dict.get, records, repeat("dateOfBirth")))
    if external_ids is None or first_names is None or last_names is None:
        return None
    given = [name for name in middle_names if name is not None]
    if given:
        given = _plain_texts(given, name=True)
        if given is None:
            return None
        rendered = iter(given)
        middle_names = [NULL if name is None else next(rendered) for name in middle_names]
    else:
        middle_names = [NULL] * len(records)
    if set(map(type, births)) != {str} or not _PLAIN_DATES.fullmatch("\n".join(births)):
        return None
    try:
        list(map(date.fromisoformat, births))
    except ValueError:
        return None
    return external_ids, first_names, last_names, middle_names, births


_PLAIN_COLUMNS: dict[Entity, Callable[[list[dict[str, Any]]], tuple[list[str], ...] | None]] = {
    "patients": _plain_patients,
    "payments": _plain_payments,
}
_LINE_FORMATS: dict[Entity, str] = {
    entity: "\t".join(["{}"] * len(columns)) + "\n" for entity, columns in STAGE_COLUMNS.items()
}


def copy_rows(entity: Entity, start: int, records: list[Any]) -> list[str] | None:
    """The COPY lines of a batch of records (indexes from `start`) when every one is a plainly
    valid object, each what `copy_row` gives; None when one is not (`copy_row` then decides,
    record by record)."""
    if not records or set(map(type, records)) != {dict}:
        return None
    columns = _PLAIN_COLUMNS[entity](records)
    if columns is None:
        return None
    return list(map(_LINE_FORMATS[entity].format, range(start, start + len(records)), *columns))


def copy_row(entity: Entity, index: int, record: Any) -> str | RecordError:
    """The record as one line of COPY text (staging-table column order), or why it is invalid."""
    if type(record) is dict and (row := _PLAIN_ROWS[entity](index, record)) is not None:
        return row
    if not isinstance(record, dict):
        return RecordError(index, None, None, "must be a JSON object")
    try:
        values = _ROW_BUILDERS[entity](record)
    except _Invalid as invalid:
        return RecordError(index, _external_id_of(record), invalid.field, invalid.message)
    return str(index) + "\t" + "\t".join(map(_copy_value, values)) + "\n"


def duplicate_key_error(index: int, record: dict[str, Any], key: str | None) -> RecordError:
    """The error for a record that repeats a key (`key`, when the reader could tell which)."""
    return RecordError(index, _external_id_of(record), key, DUPLICATE_KEY_MESSAGE)


def invalid_text_error(index: int, record: Any) -> RecordError | None:
    """An error naming the field whose key or value (at any depth) holds invalid text, if any.

    Used once the reader has replaced invalid bytes or escapes, so that text in ignored
    fields is refused too."""
    if not isinstance(record, dict):
        return None
    for key, value in record.items():
        if _holds_invalid_text(key) or _holds_invalid_text(value):
            return RecordError(index, _external_id_of(record), key, INVALID_TEXT_MESSAGE)
    return None


def _holds_invalid_text(value: Any) -> bool:
    if type(value) is str:
        return _INVALID_UNICODE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_invalid_text(k) or _holds_invalid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_invalid_text, value))
    return False


def _external_id_of(record: dict[str, Any]) -> str | None:
    value = record.get("externalId")
    if type(value) in (str, int):
        return str(value)
    return None
