"""The reader's fast path (the standard library's C parser) against ijson's: same outcome.

Every case is read twice, once as shipped and once with ijson alone, and the outcomes
(rows, errors, counts, messages) must be equal; reads of odd sizes move the ends of the
reads (where the fast path cuts the input) across every byte.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import ijson
import pytest

from paysync import snapshot
from paysync.snapshot import Limits, SnapshotReader
from tests.conftest import Trickle

LIMITS = Limits(max_bytes=50_000_000, max_records=100_000, max_compression_ratio=50)
READ = 64 * 1024  # what the reader asks of the stream at a time


def payment(index: int, ext: str | None = None, extra: str = "", amount: str = "12.50") -> bytes:
    ext = f'"{index}"' if ext is None else ext
    return f'{{"amount":{amount},"patientId":"p{index % 7}","externalId":{ext}{extra}}}'.encode()


def array(records: list[bytes], separator: bytes = b",") -> bytes:
    return b"[" + separator.join(records) + b"]"


def outcome(data: bytes, step: int | None = None, entity: str = "payments", limits: Limits = LIMITS) -> tuple:
    stream = io.BytesIO(data) if step is None else Trickle(data, step)
    reader = SnapshotReader(entity, stream, limits)
    chunks = list(reader.copy_chunks(4096))
    errors = [(e.index, e.external_id, e.field, e.message) for e in reader.errors]
    failure = None if reader.failure is None else (type(reader.failure).__name__, str(reader.failure))
    # The sizes of the chunks too: records come in the same batches, after the same reads.
    return (
        reader.received,
        reader.invalid_count,
        errors,
        reader.malformed,
        failure,
        "".join(chunks),
        list(map(len, chunks)),
    )


@pytest.fixture
def ijson_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of ijson.items (the slow path)."""
    calls: list[int] = []
    items = ijson.items

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append(1)
        return items(*args, **kwargs)

    monkeypatch.setattr(ijson, "items", counting)
    return calls


@pytest.fixture
def ijson_outcome(monkeypatch: pytest.MonkeyPatch):
    """The outcome of the reader with ijson alone (the reader before the fast path)."""

    def read(*args: Any, **kwargs: Any) -> tuple:
        with monkeypatch.context() as patch:
            patch.setattr(snapshot, "_records", lambda scanner: ijson.items(scanner, "item"))
            return outcome(*args, **kwargs)

    return read


def many_payments(count: int) -> list[bytes]:
    return [payment(i) for i in range(count)]


def test_a_plain_snapshot_takes_the_fast_path(ijson_calls):
    data = array(many_payments(5000), b",\n")  # about 6 reads

    received, invalid, errors, malformed, failure, rows, _ = outcome(data)

    assert (received, invalid, errors, malformed, failure) == (5000, 0, [], None, None)
    assert rows.splitlines()[4999] == "4999\t4999\t12.50\tp1"
    assert ijson_calls == []


@pytest.mark.parametrize("step", [None, 1, 5, 13])
def test_a_patients_snapshot_with_odd_reads_takes_the_fast_path(ijson_calls, step):
    records = [
        b'{"externalId":%d,"firstName":"A\\"}","lastName":"B\\\\","middleName":null,"dateOfBirth":"2000-01-0%d"}'
        % (i, 1 + i % 9)
        for i in range(40)
    ]

    received, _, errors, malformed, _, rows, _ = outcome(array(records, b" ,\n "), step, "patients")

    assert (received, errors, malformed) == (40, [], None)
    assert rows.splitlines()[39] == '39\t39\tA"}\tB\\\\\t\\N\t2000-01-04'
    assert ijson_calls == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["amount", "ignored", "record"])
def test_nan_and_infinity_are_refused_as_ijson_refuses_them(ijson_outcome, constant, where):
    records = many_payments(3000)
    if where == "amount":
        records[2500] = payment(2500, amount=constant)
    elif where == "ignored":
        records[2500] = payment(2500, extra=f',"x":[1,{constant}]')
    else:
        records[2500] = constant.encode()
    data = array(records)

    got = outcome(data)

    assert got == ijson_outcome(data)
    received, _, _, malformed, _, rows, _ = got
    assert malformed is not None
    assert malformed.startswith("invalid JSON")
    assert received == 2500
    assert rows.count("\n") == 2500


def test_a_malformed_record_after_many_reads_is_reported_as_before(ijson_outcome, ijson_calls):
    records = many_payments(20_000)
    records[17_000] = b'{"amount":1.00,"patientId":"p","externalId":"x" "oops":1}'
    data = array(records)

    got = outcome(data)
    calls = len(ijson_calls)

    assert got == ijson_outcome(data)
    assert got[0] == 17_000
    assert got[3] is not None
    assert "invalid JSON" in got[3]
    assert calls == 1  # from the read holding the bad record on; the reads before took the fast path


def test_a_record_across_the_end_of_a_read_is_whole(ijson_calls):
    head = b'[{"amount":1.00,"patientId":"p","externalId":"a","pad":"'
    first = head + b"x" * (READ - len(head) - 40) + b'"}'
    records = [first[1:], payment(1, extra=',"note":"' + "},{" * 30 + '"'), payment(2)]
    data = array(records)
    second = len(records[0]) + 2  # where the second record starts; reads end at 3 (the sniff), 3 + READ, ...
    assert second < 3 + READ < second + len(records[1])

    received, _, errors, malformed, _, rows, _ = outcome(data)

    assert (received, errors, malformed) == (3, [], None)
    assert rows.splitlines()[1:] == ["1\t1\t12.50\tp1", "2\t2\t12.50\tp2"]
    assert ijson_calls == []


# Strings that look like the end of a record, escapes and backslashes: wherever a read ends.
TRICKY_STRINGS = [
    '"},{"',
    '"]}, {\\"a\\":1}"',
    '"\\"}"',
    '"\\\\"',
    '"\\\\\\"},"',
    '"}}}}}}}}}}}}}}}}}}}}"',
    '"a,b]c}d"',
    '"\\u007d\\u005d\\u0022"',
    '"\\ud83d\\ude00}"',
    '"é}😀"',
]


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 11, 29, 64])
def test_strings_like_record_ends_do_not_move_the_cut(ijson_outcome, ijson_calls, step):
    records = []
    for index, text in enumerate(TRICKY_STRINGS):
        records.append(payment(index, extra=f',"note":{text}'))
        records.append(payment(100 + index, extra=f',"x":{{"y":[{{"z":{text}}},{{}}]}}'))
        records.append(payment(200 + index, ext=text))
    data = array(records, b" , ")

    got = outcome(data, step)
    calls = len(ijson_calls)

    assert got == ijson_outcome(data, step)
    assert got[0] == len(records)
    assert calls == 0


def test_repeated_keys_are_named_on_the_fast_path(ijson_outcome, ijson_calls):
    records = many_payments(3000)
    records[10] = payment(10, extra=',"amount":3')
    records[2999] = payment(2999, extra=',"x":{"a":1,"a":2},"patientId":"q"')
    data = array(records)

    got = outcome(data)
    calls = len(ijson_calls)

    assert got == ijson_outcome(data)
    assert [error[:3] for error in got[2]] == [(10, "10", "amount"), (2999, "2999", "patientId")]
    assert {error[3] for error in got[2]} == {"duplicate key"}
    assert calls == 0


def test_the_record_limit_is_the_same_on_the_fast_path(ijson_outcome, ijson_calls):
    data = array(many_payments(5000))
    limits = Limits(10**9, 4321, 50)

    got = outcome(data, limits=limits)
    calls = len(ijson_calls)

    assert got == ijson_outcome(data, limits=limits)
    assert got[0] == 4321
    assert got[4] is not None
    assert got[4][0] == "SnapshotTooLarge"
    assert calls == 0


def test_a_very_long_record_goes_to_ijson_with_flat_memory(ijson_outcome, ijson_calls):
    data = array([payment(0), payment(1, extra=',"note":"' + "}" * 3_000_000 + '"'), payment(2)])

    got = outcome(data)
    calls = len(ijson_calls)

    assert got == ijson_outcome(data)
    assert got[:5] == (3, 0, [], None, None)
    assert calls == 1


ODD = [
    b"[]",
    b"[ \n]\n",
    b"[]]",
    b"[] []",
    b"[1, 2]",
    b'[{"amount":1}, 2, "x", [3], null]',
    b'[{"amount":1}]{"b":{}}',
    b'[{"amount":1}] {"b":{}}',
    b'[{"amount":1}]]',
    b'[{"amount":1},]',
    b'[{"amount":1} {"amount":2}]',
    b'[{"amount":1}\x0b,\x0c{"amount":2}]\x0b',
    b'[{"amount":1},{"amount":2}',
    b'[{"amount":1},{"amount":',
    b'[{"amount":1},{"a":{"b":{}}},{"a":"}"}]',
]


@pytest.mark.parametrize("step", [None, 1, 4, 9])
@pytest.mark.parametrize("data", ODD)
def test_odd_arrays_end_as_with_ijson(ijson_outcome, data, step):
    assert outcome(data, step) == ijson_outcome(data, step)


# Edits that break the JSON or hit a guard, made anywhere in a valid snapshot.
EDITS = [
    b"NaN",
    b"-Infinity",
    b"\x0b",
    b"\x0c",
    b"x",
    b",",
    b",,",
    b"]",
    b"}",
    b"{",
    b"[",
    b'"',
    b"\\",
    b"\x00",
    b"\xff",
    b"\xed\xa0\x80",
    b"\\ud800",
    b"1e99999999999999999999999999999999",
    b"7" * 101,
    b"[" * 40,
    b"] garbage",
    b' "k":1, "k":2 ',
    b"{}",
    b"1",
    b"-",
    b"01",
]


def _edited(rng: random.Random) -> bytes:
    records = []
    for index in range(rng.randrange(1, 40)):
        kind = rng.randrange(4)
        if kind == 0:
            records.append(payment(index, extra=f',"note":{rng.choice(TRICKY_STRINGS)}'))
        elif kind == 1:
            records.append(payment(index, extra=',"x":{"y":[1,2,{"z":null}]}'))
        else:
            records.append(payment(index))
    data = array(records, rng.choice([b",", b", ", b",\n  "]))
    for _ in range(rng.randrange(3)):
        at = rng.randrange(len(data) + 1)
        cut = rng.choice([0, 0, 1])
        data = data[:at] + rng.choice(EDITS) + data[at + cut :]
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data))]
    return data


@pytest.mark.parametrize("seed", range(40))
def test_edited_snapshots_end_as_with_ijson(ijson_outcome, seed):
    rng = random.Random(seed)
    for _ in range(15):
        data = _edited(rng)
        for step in (None, 1, rng.randrange(2, 90)):
            assert outcome(data, step) == ijson_outcome(data, step), (data, step)


@pytest.mark.parametrize("seed", range(4))
def test_edited_large_snapshots_end_as_with_ijson(ijson_outcome, seed):
    rng = random.Random(seed)
    records = many_payments(6000)
    for _ in range(rng.randrange(1, 3)):
        at = rng.randrange(len(records))
        records[at] = records[at][:-1] + rng.choice(EDITS) + b"}"
    data = array(records)

    assert outcome(data) == ijson_outcome(data)


def test_a_record_not_an_object_is_yielded_after_the_same_read_as_with_ijson(ijson_outcome):
    # A batch (64 records here) ends with a string record at the end of a read; the next read
    # holds invalid UTF-8. Read so far when the batch is checked: only the first read, as with
    # ijson, so an ignored field holding U+FFFF in that batch is not taken for invalid bytes.
    records = [payment(i) for i in range(63)] + [b'"s"']
    records[5] = payment(5, extra=',"x":"\\uffff"')
    first = array(records)[:-1]
    data = first + b"," + payment(64).replace(b'"64"', b'"b\xff"') + b"," + payment(65) + b"]"
    step = len(first) - 3  # the reader sniffs 3 bytes first

    got = outcome(data, step)

    assert got == ijson_outcome(data, step)
    assert [(error[0], error[3]) for error in got[2]] == [
        (63, "must be a JSON object"),
        (64, "must be valid UTF-8 text (no invalid bytes, lone surrogates or noncharacters)"),
    ]
