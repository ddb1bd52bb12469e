"""Streaming snapshot reading (pure logic, in-memory streams)."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest

from paysync.errors import SnapshotTooLarge
from paysync.snapshot import Limits, MalformedInput, SnapshotReader, open_json_array
from tests.conftest import Trickle


def read_all(data: bytes, entity: str = "payments", chunk_chars: int = 1 << 20) -> tuple[SnapshotReader, list[str]]:
    reader = SnapshotReader(entity, io.BytesIO(data))
    return reader, list(reader.copy_chunks(chunk_chars))


def payments_json(count: int) -> bytes:
    return (
        "[" + ",".join(f'{{"amount": 1.25, "patientId": "p", "externalId": "{i}"}}' for i in range(count)) + "]"
    ).encode()


def test_rows_leave_in_bounded_chunks():
    reader, chunks = read_all(payments_json(1000), chunk_chars=500)

    assert reader.received == 1000
    assert len(chunks) > 10
    assert all(len(chunk) < 600 for chunk in chunks)
    assert "".join(chunks).count("\n") == 1000


def test_input_is_read_incrementally():
    stream = Trickle(payments_json(2000), step=4096)
    reader = SnapshotReader("payments", stream)

    first = next(iter(reader.copy_chunks(100)))

    assert first.startswith("0\t0\t1.25\tp\n")
    assert stream.data  # most of the input is still unread


def test_invalid_records_are_counted_but_only_100_kept():
    data = ("[" + ",".join('{"amount": "x", "patientId": "p", "externalId": "1"}' for _ in range(150)) + "]").encode()

    reader, chunks = read_all(data)

    assert (reader.invalid_count, len(reader.errors), chunks) == (150, 100, [])


def test_gzip_is_detected_by_its_magic_bytes():
    reader, _ = read_all(gzip.compress(payments_json(3)))

    assert reader.received == 3
    assert reader.malformed is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", "empty"), (b"\n\n", "empty"), (b"null", "JSON array"), (b'"x"', "JSON array"), (b"{}", "JSON array")],
)
def test_open_json_array_refuses_non_arrays(data, expected):
    with pytest.raises(MalformedInput, match=expected):
        open_json_array(io.BytesIO(data))


def test_json_errors_do_not_echo_the_input():
    reader, _ = read_all(b'[{"firstName": "Secret Name", "x": ]', entity="patients")

    assert reader.malformed is not None
    assert reader.malformed.startswith("invalid JSON")
    assert "Secret" not in reader.malformed


def test_io_failures_are_kept_for_the_caller_not_raised_inside_copy():
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("peer reset")
            return b'[{"amount": 1, "patientId": "p", "externalId": "1"},' if self.calls == 1 else b" "

    reader = SnapshotReader("payments", Broken())

    list(reader.copy_chunks())

    assert isinstance(reader.failure, ConnectionResetError)


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.randrange(-(10**12), 10**12)
    if kind == 1:
        return "".join(rng.choice('ab:{}[],"\\\t\u00e9\U0001f600 ') for _ in range(rng.randrange(12)))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return f"{rng.randrange(10**6)}.{rng.randrange(100):02d}"
    if kind in (4, 5):
        return {f"k{i}:{{": _random_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _random_snapshot(rng: random.Random, duplicates: set[int]) -> bytes:
    records = []
    for index in range(60):
        fields = [("amount", "1.25"), ("patientId", '"p"'), ("externalId", f'"{index}"')]
        fields += [(f"x{i}", json.dumps(_random_value(rng, 2))) for i in range(rng.randrange(3))]
        if index in duplicates:
            fields.append(rng.choice(fields))
        rng.shuffle(fields)
        spaces = rng.choice(["", " ", "\n  "])
        records.append("{" + ",".join(f'{spaces}"{key}"{spaces}:{spaces}{value}' for key, value in fields) + "}")
    return ("[" + ",".join(records) + "]").encode()


@pytest.mark.parametrize("seed", range(12))
def test_duplicate_keys_are_found_exactly_whatever_the_reads(seed):
    rng = random.Random(seed)
    duplicates = set(rng.sample(range(60), 5))
    data = _random_snapshot(rng, duplicates)

    for step in (1, 3, 17, 251, 1 << 16):
        reader = SnapshotReader("payments", Trickle(data, step))
        list(reader.copy_chunks())

        assert reader.malformed is None
        assert {e.index for e in reader.errors} == duplicates
        assert {e.message for e in reader.errors} == {"duplicate key"}
        assert all(e.field is not None for e in reader.errors)


def test_odd_records_inside_a_batch_keep_their_exact_indexes():
    records = [f'{{"amount": 1.25, "patientId": "p", "externalId": "{i}"}}' for i in range(2500)]
    records[1234] = '{"amount": "1.25", "patientId": "p", "externalId": "1234"}'
    records[2001] = '{"amount": 1.25, "patientId": "p", "externalId": "2001", "amount": 2}'
    records[2002] = '{"amount": 1.5, "patientId": "p\\\\q", "externalId": 2002}'

    reader, chunks = read_all(("[" + ",".join(records) + "]").encode())
    rows = "".join(chunks).splitlines()

    assert [(e.index, e.field, e.message) for e in reader.errors] == [
        (1234, "amount", "must be a number"),
        (2001, "amount", "duplicate key"),
    ]
    assert (reader.received, len(rows)) == (2500, 2498)
    assert rows[2000] == "2002\t2002\t1.50\tp\\\\q"
    assert rows[-1] == "2499\t2499\t1.25\tp"


def test_records_before_a_json_error_are_read_and_counted():
    reader, chunks = read_all(payments_json(3)[:-1] + b', {"amount": 1, "x": ]')

    assert reader.malformed is not None
    assert reader.received == 3
    assert "".join(chunks).count("\n") == 3


def test_the_record_limit_counts_exactly():
    reader = SnapshotReader("payments", io.BytesIO(payments_json(2500)), Limits(10**9, 1500, 50))

    list(reader.copy_chunks())

    assert isinstance(reader.failure, SnapshotTooLarge)
    assert reader.received == 1500
    at_limit = SnapshotReader("payments", io.BytesIO(payments_json(1500)), Limits(10**9, 1500, 50))
    list(at_limit.copy_chunks())
    assert (at_limit.failure, at_limit.received) == (None, 1500)


def test_a_repeated_key_is_named_after_a_change_of_record_size():
    # Small records set the batch size; large ones follow, and the repeated key is still named.
    small = [f'{{"amount": 1.25, "patientId": "p", "externalId": "{i}"}}' for i in range(1500)]
    note = "n" * 2000
    large = [f'{{"amount": 1.25, "patientId": "p", "externalId": "{i}", "note": "{note}"}}' for i in range(1500, 3000)]
    large[500] = large[500][:-1] + ', "patientId": "q"}'

    reader, _ = read_all(("[" + ",".join(small + large) + "]").encode())

    assert [(e.index, e.field, e.message) for e in reader.errors] == [(2000, "patientId", "duplicate key")]
