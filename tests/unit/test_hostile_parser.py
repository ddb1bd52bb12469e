"""Hostile snapshots against the streaming reader (pure: in-memory streams, no database).

Every case is read whole and in small pieces (byte by byte, odd sizes), because the
stream checks carry state across reads.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from functools import cache

import pytest

from paysync.errors import SnapshotTooLarge
from paysync.snapshot import MAX_DEPTH, MAX_NUMBER_DIGITS, Limits, SnapshotReader
from tests.conftest import Trickle

LIMITS = Limits(max_bytes=50_000_000, max_records=1000, max_compression_ratio=50)
READ_SIZES = [None, 1, 7, 4096]


def payment(ext: bytes = b'"a"', amount: bytes = b"1.00", pid: bytes = b'"p"', extra: bytes = b"") -> bytes:
    return b'{"amount":%s,"patientId":%s,"externalId":%s%s}' % (amount, pid, ext, extra)


def patient(
    ext: bytes = b'"1"',
    first: bytes = b'"Ann"',
    last: bytes = b'"Lee"',
    middle: bytes = b"null",
    dob: bytes = b'"2000-01-01"',
    extra: bytes = b"",
) -> bytes:
    return b'{"firstName":%s,"lastName":%s,"middleName":%s,"dateOfBirth":%s,"externalId":%s%s}' % (
        first,
        last,
        middle,
        dob,
        ext,
        extra,
    )


def array(*records: bytes) -> bytes:
    return b"[" + b",".join(records) + b"]"


def read(data: bytes, entity: str = "payments", step: int | None = None, limits: Limits = LIMITS):
    stream = io.BytesIO(data) if step is None else Trickle(data, step)
    reader = SnapshotReader(entity, stream, limits)
    rows = "".join(reader.copy_chunks())
    return reader, rows


LONG = b"7" * 4301  # Python's int-string limit is 4300 digits
DEEP = b"[" * 40 + b"]" * 40

# (entity, snapshot, words the message must hold): refused as malformed (HTTP 400).
MALFORMED = [
    pytest.param("payments", array(payment(extra=b',"note":' + LONG)), "digits", id="long-int-ignored-field"),
    pytest.param("payments", array(payment(amount=LONG)), "digits", id="long-int-amount"),
    pytest.param("payments", array(payment(ext=LONG)), "digits", id="long-int-external-id"),
    pytest.param("payments", array(payment(pid=LONG)), "digits", id="long-int-patient-id"),
    pytest.param("payments", array(payment(ext=b"9" * (MAX_NUMBER_DIGITS + 1))), "digits", id="int-one-digit-over"),
    pytest.param("payments", array(payment(amount=b"-" + LONG)), "digits", id="long-negative-int"),
    pytest.param("payments", array(payment(amount=b"0." + LONG)), "digits", id="long-fraction"),
    pytest.param("payments", array(payment(amount=b"1e" + b"9" * 200)), "digits", id="long-exponent-digits"),
    pytest.param("payments", array(payment(extra=b',"x":{"y":[1,' + LONG + b"]}")), "digits", id="long-int-nested"),
    pytest.param("payments", array(LONG), "digits", id="long-int-as-record"),
    pytest.param("payments", array(payment(), payment(ext=b'"b"', amount=LONG)), "digits", id="long-int-2nd-record"),
    pytest.param("patients", array(patient(ext=LONG)), "digits", id="long-int-patient-external-id"),
    pytest.param("payments", array(payment(extra=b',"x":1E+' + b"9" * 30)), "out of range", id="huge-exponent-ignored"),
    pytest.param("payments", array(payment(amount=b"-1e-" + b"9" * 30)), "out of range", id="huge-negative-exponent"),
    pytest.param("payments", b"[" * 20_000, "nested deeper", id="20k-open-brackets"),
    pytest.param("payments", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper", id="one-level-too-deep"),
    pytest.param("payments", array(payment(extra=b',"x":' + DEEP)), "nested deeper", id="deep-ignored-arrays"),
    pytest.param(
        "payments",
        array(payment(extra=b',"x":' + b'{"a":' * 40 + b"1" + b"}" * 40)),
        "nested deeper",
        id="deep-ignored-objects",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"s":"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]","x":' + DEEP)),
        "nested deeper",
        id="deep-after-closers-in-string",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"s":"\\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]","x":' + DEEP)),
        "nested deeper",
        id="deep-after-escaped-quote",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"s":"a\\\\","x":' + DEEP)),
        "nested deeper",
        id="deep-after-escaped-backslash",
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"s":"\\\\\\"[","x":' + DEEP)),
        "nested deeper",
        id="deep-after-backslash-then-escaped-quote",
    ),
    pytest.param("payments", b"[" + b'{"a":[' * 20, "nested deeper", id="deep-mixed-unclosed"),
    pytest.param("payments", b"\xef\xbb\xbf\xef\xbb\xbf" + array(payment()), "JSON array", id="double-bom"),
    pytest.param("payments", "[]".encode("utf-16"), "JSON array", id="utf16-with-bom"),
    pytest.param("payments", "[]".encode("utf-32"), "JSON array", id="utf32-with-bom"),
    pytest.param("payments", b"\xfe\xff[]", "JSON array", id="utf16-be-bom-bytes"),
    pytest.param("payments", array(payment(ext=b'"a\x00b"')), "invalid JSON", id="raw-nul-byte-in-string"),
    pytest.param("payments", array(payment(ext=b'"a\x01b"')), "invalid JSON", id="raw-control-byte-in-string"),
    pytest.param("payments", b"[\xff]", "invalid JSON", id="invalid-utf8-outside-strings"),
]


@pytest.mark.parametrize("step", READ_SIZES)
@pytest.mark.parametrize(("entity", "data", "words"), MALFORMED)
def test_malformed_snapshots_are_refused(entity, data, words, step):
    reader, _ = read(data, entity, step)

    assert reader.malformed is not None
    assert words in reader.malformed
    assert reader.failure is None


ERROR = "must be valid UTF-8 text (no invalid bytes, lone surrogates or noncharacters)"
CONTROL = "must not contain control characters"
NUL = "must not contain NUL characters"
DUPLICATE = "duplicate key"

# (entity, snapshot, field, message, externalId as listed): one invalid record (HTTP 422).
INVALID = [
    pytest.param("payments", array(payment(ext=b'"a\x80"')), "externalId", ERROR, "a\\uffff", id="lone-continuation"),
    pytest.param("patients", array(patient(first=b'"A\xc0\x80"')), "firstName", ERROR, "1", id="overlong-nul"),
    pytest.param("patients", array(patient(last=b'"A\xe0\x80\xaf"')), "lastName", ERROR, "1", id="overlong-slash"),
    pytest.param("payments", array(payment(ext=b'"a\xed\xa0\x80"')), "externalId", ERROR, None, id="utf8-surrogate"),
    pytest.param(
        "patients", array(patient(middle=b'"\xed\xa0\xbd\xed\xb8\x80"')), "middleName", ERROR, "1", id="cesu8-pair"
    ),
    pytest.param("payments", array(payment(pid=b'"p\xe2\x82"')), "patientId", ERROR, "a", id="truncated-sequence"),
    pytest.param("payments", array(payment(pid=b'"\xff"')), "patientId", ERROR, "a", id="byte-ff"),
    pytest.param("payments", array(payment(pid=b'"\xf4\x90\x80\x80"')), "patientId", ERROR, "a", id="beyond-10ffff"),
    pytest.param("payments", array(payment(extra=b',"note":"\xc3"')), "note", ERROR, "a", id="invalid-ignored-field"),
    pytest.param("payments", array(payment(extra=b',"x":{"y":["\xc3"]}')), "x", ERROR, "a", id="invalid-nested"),
    pytest.param("payments", array(payment(extra=b',"n\xc3te":1')), "n\\uffffte", ERROR, "a", id="invalid-key"),
    pytest.param("payments", array(payment(ext=b'"a\\ud800"')), "externalId", ERROR, "a\\uffff", id="lone-high"),
    pytest.param("payments", array(payment(ext=b'"a\\uDBFF"')), "externalId", ERROR, "a\\uffff", id="lone-high-upper"),
    pytest.param("patients", array(patient(first=b'"\\udc00"')), "firstName", ERROR, "1", id="lone-low"),
    pytest.param("patients", array(patient(last=b'"\\ud800\\ud800"')), "lastName", ERROR, "1", id="two-highs"),
    pytest.param("patients", array(patient(last=b'"\\udc00\\ud800"')), "lastName", ERROR, "1", id="reversed-pair"),
    pytest.param("payments", array(payment(extra=b',"note":"\\ud800"')), "note", ERROR, "a", id="lone-in-ignored"),
    pytest.param("payments", array(payment(ext=b'"\\uffff"')), "externalId", ERROR, "\\uffff", id="noncharacter"),
    pytest.param(
        "payments", array(payment(amount=b"1e999999999")), "amount", "must be between", "a", id="huge-exponent-amount"
    ),
    pytest.param(
        "payments", array(payment(amount=b"-1E+9999")), "amount", "must be between", "a", id="big-exponent-amount"
    ),
    pytest.param(
        "payments",
        array(payment(amount=b"1e-999999999")),
        "amount",
        "at most 2 decimal places",
        "a",
        id="tiny-exponent-amount",
    ),
    pytest.param("payments", array(payment(ext=b'"a\\u0000"')), "externalId", NUL, "a\\u0000", id="nul-external-id"),
    pytest.param("payments", array(payment(pid=b'"\\u0000"')), "patientId", NUL, "a", id="nul-patient-id"),
    pytest.param("patients", array(patient(first=b'"\\u0000"')), "firstName", NUL, "1", id="nul-first-name"),
    pytest.param("patients", array(patient(last=b'"L\\u0000"')), "lastName", NUL, "1", id="nul-last-name"),
    pytest.param("patients", array(patient(middle=b'"\\u0000M"')), "middleName", NUL, "1", id="nul-middle-name"),
    pytest.param(
        "patients", array(patient(dob=b'"2000-01-01\\u0000"')), "dateOfBirth", "YYYY-MM-DD", "1", id="nul-date-of-birth"
    ),
    pytest.param("payments", array(payment(ext=b'"a\\u0001"')), "externalId", CONTROL, "a\\u0001", id="soh-id"),
    pytest.param("payments", array(payment(pid=b'"p\\u001f"')), "patientId", CONTROL, "a", id="unit-sep-id"),
    pytest.param("payments", array(payment(ext=b'"a\\tb"')), "externalId", CONTROL, "a\\u0009b", id="tab-in-id"),
    pytest.param("payments", array(payment(pid=b'"p\\n"')), "patientId", CONTROL, "a", id="newline-in-id"),
    pytest.param("patients", array(patient(first=b'"A\\u0007"')), "firstName", CONTROL, "1", id="bell-in-name"),
    pytest.param("patients", array(patient(last=b'"\\u001b[31mRed"')), "lastName", CONTROL, "1", id="escape-in-name"),
    pytest.param("patients", array(patient(middle=b'"M\\u007f"')), "middleName", CONTROL, "1", id="del-in-name"),
    pytest.param("patients", array(patient(first=b'"A\\u0085"')), "firstName", CONTROL, "1", id="c1-in-name"),
    pytest.param(
        "payments", array(payment(extra=b',"externalId":"b"')), "externalId", DUPLICATE, "b", id="duplicate-external-id"
    ),
    pytest.param(
        "payments", array(payment(extra=b',"externalId":"a"')), "externalId", DUPLICATE, "a", id="duplicate-same-value"
    ),
    pytest.param("payments", array(payment(extra=b',"amount":2.00')), "amount", DUPLICATE, "a", id="duplicate-amount"),
    pytest.param(
        "payments", array(payment(extra=b',"patientId":"q"')), "patientId", DUPLICATE, "a", id="duplicate-patient-id"
    ),
    pytest.param(
        "payments",
        array(payment(extra=b',"external\\u0049d":"b"')),
        "externalId",
        DUPLICATE,
        "b",
        id="duplicate-escaped-key",
    ),
    pytest.param(
        "patients", array(patient(extra=b',"firstName":"Bob"')), "firstName", DUPLICATE, "1", id="duplicate-first-name"
    ),
    pytest.param(
        "patients", array(patient(extra=b',"lastName":"X"')), "lastName", DUPLICATE, "1", id="duplicate-last-name"
    ),
    pytest.param(
        "patients",
        array(patient(extra=b',"middleName":null')),
        "middleName",
        DUPLICATE,
        "1",
        id="duplicate-middle-name",
    ),
    pytest.param(
        "patients",
        array(patient(extra=b',"dateOfBirth":"1999-01-01"')),
        "dateOfBirth",
        DUPLICATE,
        "1",
        id="duplicate-date-of-birth",
    ),
    pytest.param(
        "patients", array(patient(extra=b',"note":1,"note":2')), "note", DUPLICATE, "1", id="duplicate-ignored-field"
    ),
    pytest.param(
        "payments",
        array(payment(ext=b'"\\u0000' + b"x" * 300 + b'"')),
        "externalId",
        "at most 255",
        None,
        id="long-id-with-nul",
    ),
]


@pytest.mark.parametrize("step", READ_SIZES)
@pytest.mark.parametrize(("entity", "data", "field", "message", "shown_id"), INVALID)
def test_invalid_records_are_listed(entity, data, field, message, shown_id, step):
    reader, rows = read(data, entity, step)

    assert (reader.malformed, reader.failure, rows) == (None, None, "")
    [error] = reader.errors
    assert (error.index, error.field) == (0, field)
    assert message in error.message
    if shown_id is not None:
        assert error.external_id == shown_id


def test_listed_external_ids_are_cut_and_escaped():
    reader, _ = read(array(payment(ext=b'"\\u0000' + b"x" * 300 + b'"')))

    [error] = reader.errors
    assert error.external_id == "\\u0000" + "x" * 254 + "…"


@cache
def bombs() -> dict[str, bytes]:
    record = payment() + b","
    return {
        "spaces-in-array": gzip.compress(b"[" + b" " * 30_000_000 + b"]"),
        "records": gzip.compress(b"[" + record * (30_000_000 // len(record)) + payment() + b"]"),
        "whitespace-before-array": gzip.compress(b" " * 30_000_000 + b"[]"),
        "many-members": b"".join(gzip.compress(b" " * 1_000_000) for _ in range(30)) + gzip.compress(b"[]"),
        "long-string": gzip.compress(b'[{"x":"' + b"a" * 30_000_000 + b'"}]'),
    }


@pytest.mark.parametrize(
    "name", ["spaces-in-array", "records", "whitespace-before-array", "many-members", "long-string"]
)
def test_decompression_bombs_are_refused(name):
    reader, _ = read(bombs()[name], limits=Limits(max_bytes=10**10, max_records=10**9, max_compression_ratio=50))

    assert isinstance(reader.failure, SnapshotTooLarge)
    assert "expands more than 50 times" in reader.failure.message


@pytest.mark.parametrize(
    ("data", "limits", "words"),
    [
        pytest.param(
            array(*[payment(b'"%d"' % i) for i in range(11)]),
            Limits(10**9, 10, 50),
            "more than 10 records",
            id="record-count",
        ),
        pytest.param(
            array(payment(extra=b',"x":"' + b" " * 5000 + b'"')),
            Limits(4096, 10, 50),
            "larger than 4096",
            id="uncompressed-size",
        ),
        pytest.param(
            gzip.compress(array(payment(extra=b',"x":"' + bytes(range(48, 123)) * 100 + b'"'))),
            Limits(4096, 10, 50),
            "larger than 4096",
            id="decompressed-size",
        ),
        pytest.param(b" " * 5000 + b"[]", Limits(4096, 10, 50), "larger than 4096", id="leading-whitespace"),
    ],
)
def test_size_and_count_bounds(data, limits, words):
    reader, _ = read(data, limits=limits)

    assert isinstance(reader.failure, SnapshotTooLarge)
    assert words in reader.failure.message


# Input that looks hostile to a naive scanner but is fine: nothing may be refused.
ACCEPTED = [
    pytest.param(
        "payments", payment(ext=b'"' + b"[" * 200 + b'"'), "0\t" + "[" * 200 + "\t1.00\tp\n", id="brackets-in-string"
    ),
    pytest.param(
        "payments",
        payment(ext=b'"\\"[[[[\\\\"', extra=b',"x":' + b"[" * 29 + b"]" * 29),
        '0\t"[[[[\\\\\t1.00\tp\n',
        id="escapes-then-allowed-depth",
    ),
    pytest.param("payments", payment(ext=b'"' + b"9" * 300 + b'"'), None, id="long-digit-string-id-too-long"),
    pytest.param(
        "payments",
        payment(extra=b',"note":"' + b"1" * 10_000 + b'e99999999"'),
        "0\ta\t1.00\tp\n",
        id="digits-in-ignored-string",
    ),
    pytest.param(
        "payments", payment(ext=b"9" * MAX_NUMBER_DIGITS), "0\t" + "9" * 100 + "\t1.00\tp\n", id="int-at-digit-limit"
    ),
    pytest.param("payments", payment(amount=b"1e2"), "0\ta\t100.00\tp\n", id="small-exponent"),
    pytest.param("payments", payment(extra=b',"x":1E+99999999999'), "0\ta\t1.00\tp\n", id="big-exponent-ignored"),
    pytest.param("payments", payment(ext=b'"\\ud83d\\ude00"'), "0\t\U0001f600\t1.00\tp\n", id="surrogate-pair"),
    pytest.param("payments", payment(ext=b'"\\\\ud800"'), "0\t\\\\ud800\t1.00\tp\n", id="escaped-backslash-u"),
    pytest.param("payments", payment(ext='"é😀"'.encode()), "0\té😀\t1.00\tp\n", id="raw-utf8"),
    pytest.param("payments", payment(extra=b',"x":{"a":1,"a":2}'), "0\ta\t1.00\tp\n", id="duplicate-in-nested-ignored"),
    pytest.param("payments", payment(extra=b',"note":"\\u0000\\u0001"'), "0\ta\t1.00\tp\n", id="controls-ignored"),
    pytest.param(
        "patients",
        patient(first=b'"Tab\\there"', last=b'"Two\\nlines\\r"'),
        "0\t1\tTab\\there\tTwo\\nlines\\r\t\\N\t2000-01-01\n",
        id="whitespace-controls-in-names",
    ),
    pytest.param(
        "patients", patient(first='"A\ufeff"'.encode()), "0\t1\tA\ufeff\tLee\t\\N\t2000-01-01\n", id="bom-inside-a-name"
    ),
]


@pytest.mark.parametrize("step", READ_SIZES)
@pytest.mark.parametrize(("entity", "record", "row"), ACCEPTED)
def test_lookalikes_are_not_refused(entity, record, row, step):
    reader, rows = read(b"\xef\xbb\xbf" + array(record), entity, step)

    assert (reader.malformed, reader.failure) == (None, None)
    if row is None:  # refused by an ordinary rule, not by the stream checks
        assert [e.message for e in reader.errors] == ["must be at most 255 characters"]
    else:
        assert (reader.errors, rows) == ([], row)


def test_depth_allows_nesting_up_to_the_limit():
    inner = MAX_DEPTH - 2  # the array and the record are two levels
    reader, rows = read(array(payment(extra=b',"x":' + b"[" * inner + b"]" * inner)))

    assert (reader.malformed, rows) == (None, "0\ta\t1.00\tp\n")


RAW_PARSER = "import io, ijson; list(ijson.items(io.BytesIO(b'[{\"x\": ' + b'7' * 4301 + b'}]'), 'item'))"
READER = (
    "import io; from paysync.snapshot import SnapshotReader;"
    "r = SnapshotReader('payments', io.BytesIO(b'[{\"x\": ' + b'7' * 4301 + b'}]'));"
    "list(r.copy_chunks()); print(r.malformed)"
)


def test_the_c_parser_alone_crashes_on_a_long_integer():
    # Why the digit bound exists: the process dies (SIGSEGV), no exception to catch.
    result = subprocess.run([sys.executable, "-c", RAW_PARSER], capture_output=True, timeout=120)

    assert result.returncode != 0


def test_the_reader_refuses_the_same_input_without_crashing():
    result = subprocess.run([sys.executable, "-c", READER], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0
    assert "more than 100 digits" in result.stdout
