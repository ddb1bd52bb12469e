"""The benchmark's correctness check at a small size: generated snapshots (base day, identical
re-sync, next day) through the real reconcile, the replica verified against the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pg8000.native
import psycopg
import pytest

from bench.generate import Dataset, Size, generate
from bench.verify import VerificationFailed, verify_replica
from paysync.dal import merge
from paysync.reconcile import reconcile_snapshot

TINY = Size("T", patients=400, payments=3000)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return generate(TINY, seed=7, directory=tmp_path_factory.mktemp("scale"))


@pytest.fixture(scope="module")
def numeric_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return generate(TINY, seed=7, directory=tmp_path_factory.mktemp("numeric"), ids="numeric")


def _sync(dataset: Dataset, day: str) -> dict[str, dict[str, int]]:
    summaries = {}
    for entity in ("patients", "payments"):
        with dataset.path(entity, day).open("rb") as stream:
            summary = reconcile_snapshot(entity, stream, source="cli")  # type: ignore[arg-type]
        summaries[entity] = summary.to_json()
    return summaries


def _verify(database_url: str, dataset: Dataset, day: str) -> None:
    with psycopg.connect(database_url) as connection:
        verify_replica(connection, dataset.path("patients", day), dataset.path("payments", day)).raise_for_mismatch()


def test_generator_is_deterministic(dataset: Dataset, tmp_path: Path) -> None:
    again = generate(TINY, seed=7, directory=tmp_path)

    for entity in ("patients", "payments"):
        for day in ("base", "next"):
            assert again.path(entity, day).read_bytes() == dataset.path(entity, day).read_bytes()
    assert again.manifest == dataset.manifest


def test_generated_data_has_the_awkward_cases(dataset: Dataset) -> None:
    text = dataset.path("patients").read_text(encoding="utf-8")

    assert '"middleName":null' in text
    assert '"dateOfBirth"' in text
    assert text.count('"middleName"') < dataset.manifest["base"]["patients"]  # some middle names absent
    for awkward in (", ", '\\"', "\\\\", "é", "\\t"):
        assert awkward in text
    assert text.count('"externalId":"') == dataset.manifest["base"]["patients"]  # UUID-like strings
    assert len(json.loads(text)[0]["externalId"]) == 36


def test_numeric_variant_has_integer_ids(numeric_dataset: Dataset) -> None:
    text = numeric_dataset.path("patients").read_text(encoding="utf-8")

    assert '"externalId":7' in text  # integer ids appear too
    assert numeric_dataset.manifest["ids"] == "numeric"


def test_base_identical_and_next_day_syncs_verify(
    database_url: str, conn: pg8000.native.Connection, dataset: Dataset
) -> None:
    # Given an empty replica, when the base day is loaded
    first = _sync(dataset, "base")
    # then it holds exactly the snapshots
    assert first["patients"]["inserted"] == TINY.patients
    assert first["payments"]["inserted"] == TINY.payments
    assert first["payments"]["orphaned"] > 0
    _verify(database_url, dataset, "base")

    # An identical re-sync changes nothing.
    again = _sync(dataset, "base")
    for entity in ("patients", "payments"):
        assert again[entity]["unchanged"] == again[entity]["received"]
    _verify(database_url, dataset, "base")

    # The next day's changes, deletions and new rows are applied exactly.
    after = _sync(dataset, "next")
    for entity in ("patients", "payments"):
        changes = dataset.manifest["next"][entity]
        assert (after[entity]["inserted"], after[entity]["updated"], after[entity]["deleted"]) == (
            changes["new"],
            changes["changed"],
            changes["deleted"],
        )
    assert after["payments"]["orphaned"] < first["payments"]["orphaned"]  # new patients adopted orphans
    _verify(database_url, dataset, "next")


def _schema(connection: pg8000.native.Connection) -> list[list[str]]:
    return connection.run(
        """SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename IN ('patients', 'payments')
           UNION ALL
           SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid IN ('patients'::regclass, 'payments'::regclass)
           ORDER BY 1, 2, 3"""
    )


def test_bulk_first_load_rebuilds_the_same_indexes_and_constraints(
    database_url: str, conn: pg8000.native.Connection, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first load big enough for the bulk path (threshold lowered to this size)
    schema = _schema(conn)
    monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 100)

    first = _sync(dataset, "base")

    # then the replica is exact and the schema is what the migrations made
    assert first["payments"]["inserted"] == TINY.payments
    _verify(database_url, dataset, "base")
    assert _schema(conn) == schema
    # and the next day (not a first load) applies on top of it
    _sync(dataset, "next")
    _verify(database_url, dataset, "next")


def test_verification_names_what_differs(database_url: str, conn: pg8000.native.Connection, dataset: Dataset) -> None:
    _sync(dataset, "base")
    # Given a replica tampered with behind the engine's back
    conn.run("UPDATE payments SET amount = amount + 1 WHERE id = (SELECT min(id) FROM payments)")
    conn.run("UPDATE patients SET middle_name = 'X' WHERE id = (SELECT max(id) FROM patients)")
    conn.run("UPDATE patients SET payments_total = payments_total + 5 WHERE id = (SELECT min(id) FROM patients)")

    with psycopg.connect(database_url) as connection:
        report = verify_replica(connection, dataset.path("patients"), dataset.path("payments"))

    assert not report.ok
    message = "\n".join(report.mismatches)
    assert "['middle_name']" in message
    assert "['amount']" in message
    assert "patients with wrong totals" in message
    with pytest.raises(VerificationFailed):
        report.raise_for_mismatch()
