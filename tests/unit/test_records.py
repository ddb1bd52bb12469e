"""Record validation and COPY rendering (pure logic)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paysync.errors import RecordError
from paysync.records import copy_row

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
