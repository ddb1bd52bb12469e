"""The benchmark's own measuring tools: the strict floor's COPY text and the statement labels
of the per-statement breakdown."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import psycopg
import pytest

from bench import floor
from bench.statements import OTHER, StatementTimer, label
from paysync.reconcile import reconcile_snapshot
from tests.conftest import snapshot


def _patient(external_id: str, first: str, last: str, born: str, **middle: str | None) -> dict[str, Any]:
    """A patient record; `middle` holds middleName (None for a JSON null) or nothing (key absent)."""
    return {"externalId": external_id, "firstName": first, "lastName": last, **middle, "dateOfBirth": born}


AWKWARD_PATIENTS = [
    _patient("p-1", "Tab\tIn", "Back\\slash", "1980-01-02"),
    _patient("p-2", "New\nLine", "Car\rReturn", "1970-05-06", middleName=None),
    _patient("p-3", 'Robert "Bob"', "O'Brien", "2001-12-31", middleName="\\"),
    _patient("p-4", "Zoë", "Nakamura 中村 🙂", "1999-09-09", middleName=""),
    _patient("p-5", "\\N", "None", "1950-03-04", middleName="null"),
    _patient("p-6", "Ana", "Núñez", "1960-07-08", middleName=None),
]
PAYMENTS: list[dict[str, Any]] = [
    {"amount": 1928.52, "patientId": "p-1", "externalId": "x-1"},
    {"amount": 3369.30, "patientId": "p-2", "externalId": "x-2"},
    {"amount": 100, "patientId": "p\\3", "externalId": "x-3"},
]


def _one_per_line(records: list[dict[str, Any]]) -> bytes:
    """A snapshot as the generator writes it: one record per line."""
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def _copied(database_url: str, entity: str, text: str) -> list[tuple[Any, ...]]:
    table = f"bench_copy_{entity}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(floor.DDL[entity].format(table=table))
        with connection.cursor() as cursor, cursor.copy(f"COPY {table} FROM STDIN") as copy:
            copy.write(text.encode())
        rows = connection.execute(f"SELECT * FROM {table} ORDER BY idx").fetchall()
        connection.execute(f"DROP TABLE {table}")
    return rows


# One line per block (each takes its own path: plain, with nulls, escaped) and all lines in one.
@pytest.mark.parametrize("block_bytes", [1, 64, 1 << 20])
def test_strict_floor_copy_text_keeps_awkward_names(database_url: str, block_bytes: int) -> None:
    # Given patients with tabs, newlines, backslashes, quotes, non-ASCII, null and absent middle names
    stream = io.BytesIO(_one_per_line(AWKWARD_PATIENTS))

    # When they are encoded block by block (blocks of every size) and COPYed into PostgreSQL
    text, rows = "", 0
    for body in floor.json_blocks(stream, block_bytes):
        block, count = floor.copy_block("patients", rows, body)
        text, rows = text + block, rows + count

    # Then every field arrives exactly as the JSON held it
    copied = _copied(database_url, "patients", text)
    assert rows == len(AWKWARD_PATIENTS)
    assert [(row[1], row[2], row[3], row[4], row[5].isoformat()) for row in copied] == [
        (p["externalId"], p["firstName"], p["lastName"], p.get("middleName"), p["dateOfBirth"])
        for p in AWKWARD_PATIENTS
    ]
    assert [row[0] for row in copied] == list(range(len(AWKWARD_PATIENTS)))


def test_strict_floor_copy_text_keeps_amounts_digits(database_url: str) -> None:
    body = next(floor.json_blocks(io.BytesIO(_one_per_line(PAYMENTS).replace(b"3369.3", b"3369.30"))))

    text, count = floor.copy_block("payments", 0, body)

    assert "3369.30" in text  # the digits JSON wrote, not a float's repr
    copied = _copied(database_url, "payments", text)
    assert count == 3
    assert [(row[1], str(row[2]), row[3]) for row in copied] == [
        ("x-1", "1928.52", "p-1"),
        ("x-2", "3369.30", "p-2"),
        ("x-3", "100.00", "p\\3"),
    ]


def test_strict_floor_measures_both_stages(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "patients.json"
    path.write_bytes(_one_per_line(AWKWARD_PATIENTS * 3))

    measured = floor.measure(database_url, "patients", str(path))

    assert measured["rows"] == 3 * len(AWKWARD_PATIENTS)
    assert measured["wall_s"] == pytest.approx(measured["parse_wall_s"] + measured["copy_wall_s"])
    assert measured["copy_text_bytes"] > 0


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("COPY stage_payments (idx, external_id) FROM STDIN", "COPY stage_payments"),
        ("\n  -- a comment\n  ANALYZE stage_patients", "ANALYZE stage_patients"),
        ("CREATE TEMP TABLE diff_payments ON COMMIT DROP AS SELECT 1 FROM stage_payments s", "CREATE diff_payments"),
        ("CREATE TEMP TABLE touched_patients (patient_id bigint) ON COMMIT DROP", "CREATE touched_patients"),
        (
            "CREATE UNIQUE INDEX patients_ext ON paysync_build.patients USING btree (external_id)",
            "CREATE INDEX patients",
        ),
        ("ALTER TABLE paysync_build.payments ADD CONSTRAINT fk FOREIGN KEY (patient_id)", "ALTER TABLE payments"),
        (
            "WITH repeated AS (SELECT external_id FROM stage_payments GROUP BY external_id HAVING count(*) > 1) "
            "SELECT s.idx FROM stage_payments s JOIN repeated r USING (external_id)",
            "SELECT stage_payments (duplicate check)",
        ),
        (
            "INSERT INTO payment_versions (payment_id) SELECT t.id FROM diff_payments d JOIN payments t ON t.id = d.id",
            "INSERT payment_versions",
        ),
        (
            "UPDATE payments t SET amount = CASE WHEN d.action = 'd' THEN t.amount ELSE d.amount END, "
            "deleted = CASE WHEN d.action = 'd' THEN now() END FROM diff_payments d WHERE t.id = d.id",
            "UPDATE payments",
        ),
        (
            "UPDATE patients p SET payments_total = t.total, payments_count = t.count FROM (SELECT 1) t",
            "UPDATE patients (totals)",
        ),
        ("DELETE FROM patient_total_ranks", "DELETE patient_total_ranks"),
        ("SELECT NOT EXISTS (SELECT 1 FROM payments)", "SELECT payments"),
        ("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)", "SELECT catalog"),
        ("SELECT pg_advisory_xact_lock(:key)", "SELECT (no table)"),
        ("SET LOCAL work_mem = '256MB'", "SET"),
        ("BEGIN", "transaction control"),
        ("COMMIT", "COMMIT"),
        ("DO $swap$ BEGIN DROP TABLE public.patients; END $swap$", "DO block (swap)"),
        ("LOCK TABLE patients, payments IN ACCESS EXCLUSIVE MODE", "LOCK TABLE patients"),
        ("MERGE INTO patients t USING diff_patients d ON t.id = d.id", OTHER),
        ("", OTHER),
    ],
)
def test_statement_labels(sql: str, expected: str) -> None:
    assert label(sql) == expected


def test_statement_timer_groups_a_real_sync(conn: pg8000.native.Connection) -> None:
    patients = snapshot([{"externalId": "1", "firstName": "A", "lastName": "B", "dateOfBirth": "1990-01-01"}])
    payments = snapshot([{"externalId": "9", "amount": Decimal("1.50"), "patientId": "1"}])
    next_day = snapshot([{"externalId": "9", "amount": Decimal("2.50"), "patientId": "1"}])

    with StatementTimer(pg8000.native.Connection) as timer:
        reconcile_snapshot("patients", patients, source="cli")  # type: ignore[arg-type]
        reconcile_snapshot("payments", payments, source="cli")  # type: ignore[arg-type]
        reconcile_snapshot("payments", next_day, source="cli")  # type: ignore[arg-type]  (a first load has no diff)
    groups = timer.groups(wall_s=10.0, cpu_s=10.0, server_cpu_s=None)

    assert not hasattr(pg8000.native.Connection.run, "__wrapped__")  # the wrapper is gone
    for expected in ("COPY stage_patients", "COPY stage_payments", "CREATE diff_payments", "INSERT payments", "COMMIT"):
        assert groups[expected]["calls"] >= 1, expected
    assert sum(group["calls"] for group in groups.values()) > 20
    assert groups["(Python between statements)"]["wall_s"] > 0
