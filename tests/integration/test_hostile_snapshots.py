"""Hostile snapshots through the real sync paths: reconcile_snapshot (CLI), POST /patients and
/payments (API Gateway events) and the S3 trigger. Each case checks the status / error
code, that the replica is unchanged and that the sync run was recorded as rejected."""

from __future__ import annotations

import base64
import gzip
import io
import json
import time
from decimal import Decimal
from functools import cache

import pytest

from devserver.apigateway import proxy_event as api_event
from paysync import uploads
from paysync.errors import SnapshotRejected
from paysync.reconcile import reconcile_snapshot
from paysync.records import MAX_AMOUNT
from paysync.web import error_response
from tests.conftest import TEST_BUCKET, body_of, sample_bytes, table_state


def payment(ext: bytes = b'"501"', amount: bytes = b"1.00", pid: bytes = b'"5"', extra: bytes = b"") -> bytes:
    return b'{"amount":%s,"patientId":%s,"externalId":%s%s}' % (amount, pid, ext, extra)


def patient(ext: bytes = b'"5"', first: bytes = b'"Ann"', last: bytes = b'"Lee"', extra: bytes = b"") -> bytes:
    return b'{"firstName":%s,"lastName":%s,"dateOfBirth":"2000-01-01","externalId":%s%s}' % (first, last, ext, extra)


def array(*records: bytes) -> bytes:
    return b"[" + b",".join(records) + b"]"


@cache
def bomb(kind: str) -> bytes:
    if kind == "spaces":
        return gzip.compress(b"[" + b" " * 40_000_000 + b"]")
    record = payment(ext=b'"x"') + b","
    return gzip.compress(b"[" + record * (40_000_000 // len(record)) + payment() + b"]")


LONG = b"4" * 4301
DEEP = b"[" * 64 + b"]" * 64
CONTROL = "must not contain control characters"
INVALID_TEXT = "must be valid UTF-8 text"

# (entity, snapshot or a bomb's name, HTTP status, error code, first listed error (field, message)).
CASES = [
    pytest.param(
        "payments", array(payment(extra=b',"note":' + LONG)), 400, "malformed_snapshot", None, id="long-int-ignored"
    ),
    pytest.param("payments", array(payment(amount=LONG)), 400, "malformed_snapshot", None, id="long-int-amount"),
    pytest.param("patients", array(patient(ext=LONG)), 400, "malformed_snapshot", None, id="long-int-id"),
    pytest.param(
        "payments", array(payment(amount=b"0." + b"1" * 5000)), 400, "malformed_snapshot", None, id="long-fraction"
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"x":1e' + b"9" * 40)),
        400,
        "malformed_snapshot",
        None,
        id="exponent-out-of-range",
    ),
    pytest.param(
        "payments",
        array(payment(amount=b"1e999999999")),
        422,
        "invalid_records",
        ("amount", "between"),
        id="huge-exponent-amount",
    ),
    pytest.param("payments", b"[" * 20_000, 400, "malformed_snapshot", None, id="20k-brackets"),
    pytest.param(
        "payments", array(payment(extra=b',"x":' + DEEP)), 400, "malformed_snapshot", None, id="deep-ignored-field"
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"s":"\\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]","x":' + DEEP)),
        400,
        "malformed_snapshot",
        None,
        id="deep-behind-string-tricks",
    ),
    pytest.param("payments", "spaces", 413, "snapshot_too_large", None, id="gzip-bomb-spaces"),
    pytest.param("payments", "records", 413, "snapshot_too_large", None, id="gzip-bomb-records"),
    pytest.param("payments", b"\xef\xbb\xbf\xef\xbb\xbf[]", 400, "malformed_snapshot", None, id="double-bom"),
    pytest.param("payments", "[]".encode("utf-16"), 400, "malformed_snapshot", None, id="utf16"),
    pytest.param(
        "payments",
        array(payment(ext=b'"a\\u0000b"')),
        422,
        "invalid_records",
        ("externalId", "NUL"),
        id="nul-external-id",
    ),
    pytest.param(
        "payments", array(payment(pid=b'"\\u0000"')), 422, "invalid_records", ("patientId", "NUL"), id="nul-patient-id"
    ),
    pytest.param(
        "patients",
        array(patient(first=b'"\\u0000"')),
        422,
        "invalid_records",
        ("firstName", "NUL"),
        id="nul-first-name",
    ),
    pytest.param(
        "patients", array(patient(last=b'"x\\u0000"')), 422, "invalid_records", ("lastName", "NUL"), id="nul-last-name"
    ),
    pytest.param(
        "payments",
        array(payment(ext=b'"a\xed\xa0\x80"')),
        422,
        "invalid_records",
        ("externalId", INVALID_TEXT),
        id="utf8-encoded-surrogate",
    ),
    pytest.param(
        "patients",
        array(patient(first=b'"\xc0\x80"')),
        422,
        "invalid_records",
        ("firstName", INVALID_TEXT),
        id="overlong-encoding",
    ),
    pytest.param(
        "patients",
        array(patient(last=b'"\xff\xfe"')),
        422,
        "invalid_records",
        ("lastName", INVALID_TEXT),
        id="invalid-bytes",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"note":"\xe2\x82"')),
        422,
        "invalid_records",
        ("note", INVALID_TEXT),
        id="invalid-bytes-ignored-field",
    ),
    pytest.param(
        "payments",
        array(payment(ext=b'"\\ud800"')),
        422,
        "invalid_records",
        ("externalId", INVALID_TEXT),
        id="escaped-lone-surrogate",
    ),
    pytest.param(
        "patients",
        array(patient(first=b'"A\\udfff"')),
        422,
        "invalid_records",
        ("firstName", INVALID_TEXT),
        id="escaped-lone-low-surrogate",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"externalId":"502"')),
        422,
        "invalid_records",
        ("externalId", "duplicate key"),
        id="duplicate-external-id",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"amount":99.99')),
        422,
        "invalid_records",
        ("amount", "duplicate key"),
        id="duplicate-amount",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"patientId":"8"')),
        422,
        "invalid_records",
        ("patientId", "duplicate key"),
        id="duplicate-patient-id",
    ),
    pytest.param(
        "patients",
        array(patient(extra=b',"firstName":"Bob"')),
        422,
        "invalid_records",
        ("firstName", "duplicate key"),
        id="duplicate-first-name",
    ),
    pytest.param(
        "patients",
        array(patient(extra=b',"lastName":"Lee"')),
        422,
        "invalid_records",
        ("lastName", "duplicate key"),
        id="duplicate-same-value",
    ),
    pytest.param(
        "payments",
        array(payment(ext=b'"a\\u0001"')),
        422,
        "invalid_records",
        ("externalId", CONTROL),
        id="control-in-id",
    ),
    pytest.param(
        "payments", array(payment(pid=b'"5\\n"')), 422, "invalid_records", ("patientId", CONTROL), id="newline-in-id"
    ),
    pytest.param(
        "patients",
        array(patient(first=b'"A\\u001b[2J"')),
        422,
        "invalid_records",
        ("firstName", CONTROL),
        id="escape-in-name",
    ),
]


def _body(data: bytes | str) -> bytes:
    return bomb(data) if isinstance(data, str) else data


@pytest.fixture
def replica(conn):
    for entity in ("patients", "payments"):
        reconcile_snapshot(entity, io.BytesIO(sample_bytes(entity)), source="cli")
    return conn


def assert_rejected_run(conn, sync_id: int | None, source: str, code: str) -> dict:
    [[status, run_source, error]] = conn.run(
        "SELECT status, source, error FROM sync_runs WHERE id = :id AND id = (SELECT max(id) FROM sync_runs)",
        id=sync_id,
    )
    assert (status, run_source, error["code"]) == ("rejected", source, code)
    return error


def assert_listed(error: dict, first: tuple[str, str] | None) -> None:
    if first is None:
        return
    field, words = first
    listed = error["details"][0]
    assert (listed["index"], listed["field"]) == (0, field)
    assert words in listed["message"]
    assert error["total"] == 1


@pytest.mark.parametrize(("entity", "data", "status", "code", "first"), CASES)
def test_reconcile_refuses_and_records(replica, entity, data, status, code, first):
    before = table_state(replica)

    with pytest.raises(SnapshotRejected) as caught:
        reconcile_snapshot(entity, io.BytesIO(_body(data)), source="cli")

    assert (error_response(caught.value).status_code, caught.value.code) == (status, code)
    assert table_state(replica) == before
    stored = assert_rejected_run(replica, caught.value.sync_id, "cli", code)
    assert stored == {key: value for key, value in caught.value.to_json().items() if key != "syncId"}
    assert_listed(stored, first)


@pytest.mark.parametrize(("entity", "data", "status", "code", "first"), CASES)
def test_post_refuses_and_records(replica, invoke, entity, data, status, code, first):
    before = table_state(replica)
    body = base64.b64encode(_body(data)).decode()

    response = invoke(f"post_{entity}", api_event("POST", f"/{entity}", body=body, base64=True))

    error = body_of(response)["error"]
    assert (response["statusCode"], error["code"]) == (status, code)
    assert table_state(replica) == before
    assert_rejected_run(replica, error["syncId"], "api", code)
    assert_listed(error, first)


@pytest.mark.parametrize(
    ("text", "status", "code", "field", "words"),
    [
        pytest.param(
            '[{"amount":1,"patientId":"5","externalId":"a\ud800"}]',
            422,
            "invalid_records",
            "externalId",
            "valid UTF-8",
            id="lone-high",
        ),
        pytest.param(
            '[{"amount":1,"patientId":"\udfff","externalId":"a"}]',
            422,
            "invalid_records",
            "patientId",
            "valid UTF-8",
            id="lone-low",
        ),
        pytest.param(
            '[{"amount":1,"patientId":"5","externalId":"a\x00"}]', 400, "malformed_snapshot", None, None, id="raw-nul"
        ),
        pytest.param(
            '[{"amount":1,"patientId":"5\x07","externalId":"a"}]', 400, "malformed_snapshot", None, None, id="raw-bell"
        ),
    ],
)
def test_text_bodies_with_hostile_code_points(replica, invoke, text, status, code, field, words):
    # A proxy event's body is text: it can carry code points no UTF-8 file could.
    before = table_state(replica)

    response = invoke("post_payments", api_event("POST", "/payments", body=text))

    error = body_of(response)["error"]
    assert (response["statusCode"], error["code"]) == (status, code)
    if field is not None:
        assert error["details"][0]["field"] == field
        assert words in error["details"][0]["message"]
    assert table_state(replica) == before
    assert_rejected_run(replica, error["syncId"], "api", code)


S3_CASES = ["long-int-ignored", "20k-brackets", "gzip-bomb-spaces", "nul-external-id", "utf8-encoded-surrogate"]


@pytest.mark.parametrize(
    ("entity", "data", "code"),
    [pytest.param(case.values[0], case.values[1], case.values[3], id=case.id) for case in CASES if case.id in S3_CASES],
)
def test_s3_snapshot_is_rejected_not_retried(replica, s3, entity, data, code):
    key = f"{entity}/hostile.json.gz" if isinstance(data, str) else f"{entity}/hostile.json"
    time.sleep(1.1)  # S3 times have whole seconds: be newer than the replica's last sync
    s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=_body(data))
    before = table_state(replica)

    outcome = uploads.sync_object(TEST_BUCKET, key)

    assert (outcome.status, outcome.code) == ("rejected", code)
    assert table_state(replica) == before
    assert_rejected_run(replica, outcome.sync_id, "s3", code)


@pytest.mark.parametrize(
    ("setting", "data", "words"),
    [
        pytest.param(
            {"MAX_SNAPSHOT_RECORDS": "3"},
            array(*[payment(b'"%d"' % i) for i in range(4)]),
            "more than 3",
            id="record-count",
        ),
        pytest.param(
            {"MAX_SNAPSHOT_BYTES": "2000"},
            array(*[payment(b'"%d"' % i) for i in range(100)]),
            "larger than 2000",
            id="uncompressed-bytes",
        ),
        pytest.param(
            {"MAX_COMPRESSION_RATIO": "2"},
            gzip.compress(array(*[payment(b'"%d"' % i) for i in range(30_000)])),
            "expands more than 2 times",
            id="compression-ratio",
        ),
    ],
)
def test_bounds_come_from_settings(replica, settings_env, invoke, setting, data, words):
    settings_env(**setting)
    before = table_state(replica)

    response = invoke(
        "post_payments", api_event("POST", "/payments", body=base64.b64encode(data).decode(), base64=True)
    )

    error = body_of(response)["error"]
    assert (response["statusCode"], error["code"]) == (413, "snapshot_too_large")
    assert words in error["message"]
    assert table_state(replica) == before
    assert_rejected_run(replica, error["syncId"], "api", "snapshot_too_large")


def test_lookalikes_are_applied(replica):
    tricky = '[]{}\\"' * 10
    records = array(
        patient(ext=b'"5"', first=b'"Rick"', last=b'"Deckard"'),
        patient(
            ext=b'"77"',
            first=json.dumps(tricky).encode(),
            last=b'"\\ud83d\\ude00 Tab\\there"',
            extra=b',"meta":{"n":' + b"9" * 100 + b',"s":"' + b"[" * 500 + b'"}',
        ),
    )

    summary = reconcile_snapshot("patients", io.BytesIO(b"\xef\xbb\xbf" + records), source="cli", force=True)

    assert summary.status == "applied"
    assert replica.run("SELECT first_name, last_name FROM patients WHERE external_id = '77'") == [
        [tricky, "\U0001f600 Tab\there"]
    ]


def test_payment_totals_cannot_overflow_the_column(replica):
    # Totals sum at most int4-max live payments of at most MAX_AMOUNT each.
    [[precision, scale]] = replica.run(
        "SELECT numeric_precision, numeric_scale FROM information_schema.columns"
        " WHERE table_name = 'patients' AND column_name = 'payments_total'"
    )
    [[count_type]] = replica.run(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_name = 'patients' AND column_name = 'payments_count'"
    )
    largest_total = (2**31 - 1) * MAX_AMOUNT

    assert count_type == "integer"
    assert scale == 2
    assert largest_total < Decimal(10) ** (precision - scale)
    [[stored]] = replica.run(f"SELECT CAST('{largest_total}' AS numeric({precision}, {scale}))")
    assert stored == largest_total
