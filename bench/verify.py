"""Check the replica against the snapshots last applied, independently of the engine.

The expected state is computed from the JSON files alone (its own parsing and
arithmetic, none of paysync's code); the replica is read with psycopg. Both
sides reduce every live row to an order-independent checksum (the sum of a
60-bit md5 prefix of each row's canonical text), so memory stays flat except
for the per-patient totals, which are compared one patient at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import ijson
import psycopg

CENT = Decimal("0.01")
MAX_LISTED = 10


class VerificationFailed(AssertionError):
    """The replica differs from the snapshot."""


def _canonical(values: tuple[str | None, ...]) -> str:
    # Length-prefixed, so no separator or NULL marker can be confused with data.
    return "|".join("-" if value is None else f"{len(value)}:{value}" for value in values)


def _hash(text: str) -> int:
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:15], 16)


def _sql_canonical(expressions: list[str]) -> str:
    parts = [f"coalesce(length({expr}) || ':' || {expr}, '-')" for expr in expressions]
    return "concat_ws('|', " + ", ".join(parts) + ")"


def _sql_hash(canonical: str) -> str:
    return f"('x' || substr(md5({canonical}), 1, 15))::bit(60)::bigint"


def _identifier(value: Any) -> str:
    return str(value)


def _amount(value: Any) -> str:
    return str(Decimal(value).quantize(CENT))


@dataclass(frozen=True)
class _Column:
    name: str
    sql: str  # text expression over the table's row
    value: Callable[[dict[str, Any]], str | None]  # the same text from a JSON record


PATIENT_COLUMNS = (
    _Column("external_id", "external_id", lambda r: _identifier(r["externalId"])),
    _Column("first_name", "first_name", lambda r: r["firstName"]),
    _Column("last_name", "last_name", lambda r: r["lastName"]),
    _Column("middle_name", "middle_name", lambda r: r.get("middleName")),
    _Column("date_of_birth", "date_of_birth::text", lambda r: r["dateOfBirth"]),
)
PAYMENT_COLUMNS = (
    _Column("external_id", "external_id", lambda r: _identifier(r["externalId"])),
    _Column("amount", "amount::text", lambda r: _amount(r["amount"])),
    _Column("patient_external_id", "patient_external_id", lambda r: _identifier(r["patientId"])),
)
COLUMNS = {"patients": PATIENT_COLUMNS, "payments": PAYMENT_COLUMNS}


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as stream:
        yield from ijson.items(stream, "item")


def _file_checksum(
    path: Path, columns: tuple[_Column, ...], totals: dict[str, list[int]] | None = None
) -> tuple[int, int]:
    """Row count and checksum of a snapshot file; also sums payments per patient into `totals`."""
    count = checksum = 0
    for record in _records(path):
        count += 1
        checksum += _hash(_canonical(tuple(column.value(record) for column in columns)))
        if totals is not None:
            cents = int(Decimal(record["amount"]) * 100)
            entry = totals.get(patient := _identifier(record["patientId"]))
            if entry is None:
                totals[patient] = [cents, 1]
            else:
                entry[0] += cents
                entry[1] += 1
    return count, checksum


def _table_checksum(connection: psycopg.Connection, table: str, columns: tuple[_Column, ...]) -> tuple[int, int]:
    row_hash = _sql_hash(_sql_canonical([column.sql for column in columns]))
    count, total = connection.execute(
        f"SELECT count(*), coalesce(sum({row_hash}), 0) FROM {table} WHERE deleted IS NULL"
    ).fetchone()
    return count, int(total)


def _differing_columns(connection: psycopg.Connection, path: Path, table: str) -> list[str]:
    """Which columns disagree (each paired with the external id): the diagnosis of a mismatch."""
    columns = COLUMNS[table]
    key = columns[0]
    sums = dict.fromkeys((column.name for column in columns[1:]), 0)
    for record in _records(path):
        external_id = key.value(record)
        for column in columns[1:]:
            sums[column.name] += _hash(_canonical((external_id, column.value(record))))
    differing = []
    for column in columns[1:]:
        expr = _sql_hash(_sql_canonical([key.sql, column.sql]))
        [actual] = connection.execute(f"SELECT coalesce(sum({expr}), 0) FROM {table} WHERE deleted IS NULL").fetchone()
        if int(actual) != sums[column.name]:
            differing.append(column.name)
    return differing


@dataclass
class Report:
    """What was checked, and every mismatch found."""

    checks: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def check(self, name: str, expected: Any, actual: Any) -> None:
        self.checks.append(name)
        if expected != actual:
            self.mismatches.append(f"{name}: expected {expected}, found {actual}")

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def raise_for_mismatch(self) -> None:
        if self.mismatches:
            raise VerificationFailed("replica differs from the snapshot:\n  " + "\n  ".join(self.mismatches))


def verify_replica(connection: psycopg.Connection, patients_path: Path, payments_path: Path) -> Report:
    """Compare the replica with the two snapshot files last applied to it."""
    report = Report()
    # Patient external id -> [total in cents, count], recounted from the payments file.
    expected: dict[str, list[int]] = {}
    for table, path in (("patients", patients_path), ("payments", payments_path)):
        columns = COLUMNS[table]
        expected_count, expected_sum = _file_checksum(path, columns, expected if table == "payments" else None)
        actual_count, actual_sum = _table_checksum(connection, table, columns)
        report.check(f"{table}: live rows", expected_count, actual_count)
        report.check(f"{table}: checksum of every replicated column", expected_sum, actual_sum)
        if expected_sum != actual_sum:
            report.mismatches.append(f"{table}: columns that differ: {_differing_columns(connection, path, table)}")

    # Links: a payment points at the row of its patient's external id (live or
    # deleted), or at nothing while that patient is unknown.
    [wrong_links] = connection.execute(
        """SELECT count(*) FROM payments pay LEFT JOIN patients p ON p.external_id = pay.patient_external_id
           WHERE pay.patient_id IS DISTINCT FROM p.id"""
    ).fetchone()
    report.check("payments: patient links", 0, wrong_links)

    # Totals: every patient row (deleted ones too) against a recount from the JSON.
    wrong: list[str] = []
    wrong_count = rows = 0
    with connection.cursor(name="verify_totals") as cursor:
        cursor.itersize = 50_000
        cursor.execute("SELECT external_id, payments_total, payments_count FROM patients")
        for external_id, total, count in cursor:
            rows += 1
            cents, payments = expected.get(external_id, (0, 0))
            if int(total * 100) != cents or count != payments:
                wrong_count += 1
                if len(wrong) < MAX_LISTED:
                    wrong.append(f"{external_id}: {total}/{count}, expected {Decimal(cents) / 100:.2f}/{payments}")
    report.check("patients: totals and counts recomputed from the JSON (mismatching patients)", 0, wrong_count)
    if wrong:
        report.mismatches.append("patients with wrong totals (first ones): " + "; ".join(wrong))
    return report
