"""Record validation and COPY rendering (pure logic)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from paysync.errors import RecordError
from paysync.records import copy_row, copy_rows, duplicate_key_error, invalid_text_error

PATIENT = {"firstName": "Rick", "lastName": "Deckard", "dateOfBirth": "2094-02-01", "externalId": "5"}
PAYMENT = {"amount": Decimal("4.46"), "patientId": "5", "externalId": "501"}


def test_patient_row_in_staging_column_order():
    assert copy_row("patients", 3, PATIENT) == "3\t5\tRick\tDeckard\t\\N\t2094-02-01\n"


def test_payment_row_normalises_amount_to_cents():
    assert copy_row("payments", 0, PAYMENT | {"amount": 7}) == "0\t501\t7.00\t5\n"
    assert copy_row("payments", 0, PAYMENT | {"amount": Decimal("1E+2")}) == "0\t501\t100.00\t5\n"
    assert copy_row("payments", 0, PAYMENT | {"amount": Decimal("4.460")}) == "0\t501\t4.46\t5\n"
    assert copy_row("payments", 0, PAYMENT | {"amount": Decimal("-3.5")}) == "0\t501\t-3.50\t5\n"


def test_copy_special_characters_are_escaped():
    row = copy_row("patients", 0, PATIENT | {"firstName": "a\tb\nc\\d\re"})
    assert row.split("\t")[2] == "a\\tb\\nc\\\\d\\re"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"externalId": None}, "externalId", "is required"),
        ({"externalId": ""}, "externalId", "must not be empty"),
        ({"externalId": 1.5}, "externalId", "must be a string or an integer"),
        ({"externalId": True}, "externalId", "must be a string or an integer"),
        ({"externalId": "x" * 256}, "externalId", "at most 255"),
        ({"firstName": None}, "firstName", "is required"),
        ({"firstName": "  "}, "firstName", "must not be empty"),
        ({"lastName": ["Deckard"]}, "lastName", "must be a string"),
        ({"middleName": 3}, "middleName", "must be a string"),
        ({"firstName": "nul\x00"}, "firstName", "NUL"),
        ({"dateOfBirth": None}, "dateOfBirth", "is required"),
        ({"dateOfBirth": "01/02/2094"}, "dateOfBirth", "YYYY-MM-DD"),
        ({"dateOfBirth": "2094-02-30"}, "dateOfBirth", "not a valid calendar date"),
        ({"dateOfBirth": "2094-2-1"}, "dateOfBirth", "YYYY-MM-DD"),
    ],
)
def test_invalid_patient_fields(change, field, message):
    error = copy_row("patients", 7, PATIENT | change)

    assert isinstance(error, RecordError)
    assert (error.index, error.field) == (7, field)
    assert message in error.message


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"amount": Decimal("1.001")}, "amount", "at most 2 decimal places"),
        ({"amount": "4.46"}, "amount", "must be a number"),
        ({"amount": True}, "amount", "must be a number"),
        ({"amount": None}, "amount", "is required"),
        ({"amount": Decimal("NaN")}, "amount", "finite"),
        ({"amount": Decimal("Infinity")}, "amount", "finite"),
        ({"amount": Decimal("1E+400")}, "amount", "between"),
        ({"amount": 10**10}, "amount", "between"),
        ({"amount": Decimal("1E-400")}, "amount", "decimal places"),
        ({"patientId": None}, "patientId", "is required"),
        ({"patientId": {"id": 5}}, "patientId", "string or an integer"),
    ],
)
def test_invalid_payment_fields(change, field, message):
    error = copy_row("payments", 2, PAYMENT | change)

    assert isinstance(error, RecordError)
    assert error.field == field
    assert message in error.message
    assert error.external_id == "501"


def test_non_object_record():
    error = copy_row("payments", 4, ["501"])

    assert error == RecordError(4, None, None, "must be a JSON object")


def test_error_json_shape():
    assert RecordError(1, "x", "amount", "bad").to_json() == {
        "index": 1,
        "externalId": "x",
        "field": "amount",
        "message": "bad",
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"externalId": "a\x01"}, "externalId", "control characters"),
        ({"externalId": "a\tb"}, "externalId", "control characters"),
        ({"externalId": "a\x9b"}, "externalId", "control characters"),
        ({"firstName": "A\x1b[0m"}, "firstName", "control characters"),
        ({"lastName": "B\x7f"}, "lastName", "control characters"),
        ({"middleName": "M\x00"}, "middleName", "NUL"),
        ({"firstName": "A\uffff"}, "firstName", "valid UTF-8"),
        ({"lastName": "\ud800"}, "lastName", "valid UTF-8"),
    ],
)
def test_control_characters_and_invalid_text_are_refused(change, field, message):
    error = copy_row("patients", 1, PATIENT | change)

    assert isinstance(error, RecordError)
    assert error.field == field
    assert message in error.message


def test_whitespace_controls_and_other_unprintables_are_kept_in_names():
    row = copy_row("patients", 0, PATIENT | {"firstName": "a\tb\nc\rd", "lastName": "Zoë\u00a0\u200dX"})

    assert row == "0\t5\ta\\tb\\nc\\rd\tZoë\u00a0\u200dX\t\\N\t2094-02-01\n"


def test_duplicate_key_error_names_the_record_and_key():
    error = duplicate_key_error(4, PAYMENT | {"externalId": "b\x00"}, "externalId")

    assert (error.index, error.external_id, error.field, error.message) == (
        4,
        "b\\u0000",
        "externalId",
        "duplicate key",
    )


def test_invalid_text_anywhere_in_a_record_is_found():
    record = {**PAYMENT, "meta": {"tags": ["ok", "bad\uffff"]}}

    error = invalid_text_error(3, record)

    assert error is not None
    assert (error.index, error.field) == (3, "meta")
    assert invalid_text_error(3, PAYMENT) is None


@pytest.mark.parametrize(
    ("raw", "shown_as"),
    [
        ("a\x00b", "a\\u0000b"),
        ("\ud800x", "\\ud800x"),
        ("tab\there", "tab\\u0009here"),
        ("\uffff", "\\uffff"),
        ("Zoë 🙂", "Zoë 🙂"),
        ("x" * 300, "x" * 255 + "…"),
    ],
)
def test_record_errors_keep_ids_and_fields_storable(raw, shown_as):
    error = RecordError(0, raw, raw, "m")

    assert (error.external_id, error.field) == (shown_as, shown_as)
    assert json.loads(json.dumps(error.to_json())) == error.to_json()


# Batches of plainly valid records take a column-by-column path; anything else goes record by
# record. Both must give exactly what copy_row gives.
PLAIN_PAYMENTS = [
    {"amount": Decimal("4.46"), "patientId": "5", "externalId": "a-1"},
    {"amount": 7, "patientId": "5", "externalId": "a\\2"},
    {"amount": Decimal("-0.50"), "patientId": "p q", "externalId": "ünï😀"},
    {"amount": Decimal("9999999999.99"), "patientId": "x" * 255, "externalId": "4"},
    {"amount": -9999999999, "patientId": "7", "externalId": "5", "note": [1, {"a": None}]},
]
PLAIN_PATIENTS = [
    PATIENT,
    PATIENT | {"firstName": "Tab\there", "lastName": "Back\\slash", "middleName": "\\"},
    PATIENT | {"lastName": "Two\nlines\r", "middleName": "さくら"},
    PATIENT | {"middleName": None, "dateOfBirth": "2000-02-29"},
]
# Values that are valid but not plain (or invalid): the batch holding one goes record by record.
ODD_PAYMENT_FIELDS = [
    {"amount": Decimal("4.5")},
    {"amount": Decimal("1E+2")},
    {"amount": Decimal("4.460")},
    {"amount": Decimal("1.001")},
    {"amount": Decimal("99999999999.00")},
    {"amount": 10**10},
    {"amount": -(10**10)},
    {"amount": True},
    {"amount": "4.46"},
    {"amount": None},
    {"amount": Decimal("NaN")},
    {"externalId": ""},
    {"externalId": " "},
    {"externalId": "x" * 256},
    {"externalId": "a\tb"},
    {"externalId": "a\x7f"},
    {"externalId": "a\u00a0b"},
    {"externalId": "a\uffff"},
    {"externalId": 1.5},
    {"externalId": True},
    {"patientId": None},
    {"patientId": ["5"]},
]
ODD_PATIENT_FIELDS = [
    {"firstName": ""},
    {"firstName": "\t"},
    {"firstName": "A\x0bB"},
    {"lastName": "Zoë\u00a0X"},
    {"lastName": "L\x00"},
    {"middleName": ""},
    {"middleName": 3},
    {"middleName": "x" * 256},
    {"externalId": "a\nb"},
    {"dateOfBirth": "2001-02-29"},
    {"dateOfBirth": "2094-2-1"},
    {"dateOfBirth": "\uff12\uff10\uff19\uff14-02-01"},
    {"dateOfBirth": 20940201},
    {"dateOfBirth": None},
]


def each_row(entity, start, records):
    return [copy_row(entity, index, record) for index, record in enumerate(records, start)]


@pytest.mark.parametrize(
    ("entity", "records"),
    [
        ("payments", PLAIN_PAYMENTS),
        ("payments", [PAYMENT | {"externalId": 1, "patientId": -2}, PAYMENT | {"externalId": 10**30, "patientId": 0}]),
        ("patients", PLAIN_PATIENTS),
        ("patients", [PATIENT | {"externalId": 6}, PATIENT | {"externalId": 7}]),
    ],
)
def test_plain_batches_are_rendered_as_record_by_record(entity, records):
    rows = copy_rows(entity, 40, records)

    assert rows is not None
    assert rows == each_row(entity, 40, records)


@pytest.mark.parametrize(
    ("entity", "records"),
    [("payments", [*PLAIN_PAYMENTS, PAYMENT | odd]) for odd in ODD_PAYMENT_FIELDS]
    + [("patients", [*PLAIN_PATIENTS, PATIENT | odd]) for odd in ODD_PATIENT_FIELDS]
    + [
        ("payments", [PAYMENT, ["501"]]),
        ("payments", []),
        ("payments", [PAYMENT, PAYMENT | {"externalId": 501}]),
        ("patients", [PATIENT, PATIENT | {"externalId": 6}]),
    ],
)
def test_batches_with_an_odd_record_are_left_to_copy_row_or_rendered_the_same(entity, records):
    assert copy_rows(entity, 0, records) in (None, each_row(entity, 0, records))
