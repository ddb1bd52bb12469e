"""The reconcile's SQL: staging, checks and the set-based merge, for both entities.

Every statement runs inside the sync's transaction (see `paysync.reconcile`).
`now()` is the transaction's start time, so every row a sync touches carries
the same `updated` / `deleted` timestamp.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from paysync.dal.db import Connection
from paysync.errors import RecordError
from paysync.records import STAGE_COLUMNS, Entity

# pg_advisory_xact_lock keys: one per entity, so syncs of one entity queue up
# while a patients sync and a payments sync may still run side by side.
LOCK_KEYS: dict[Entity, int] = {"patients": 7_311_001, "payments": 7_311_002}

_STAGE_DDL: dict[Entity, str] = {
    "patients": """
        CREATE TEMP TABLE stage_patients (
            idx bigint NOT NULL,
            external_id text NOT NULL,
            first_name text NOT NULL,
            last_name text NOT NULL,
            middle_name text,
            date_of_birth date NOT NULL
        ) ON COMMIT DROP""",
    "payments": """
        CREATE TEMP TABLE stage_payments (
            idx bigint NOT NULL,
            external_id text NOT NULL,
            amount numeric(12,2) NOT NULL,
            patient_external_id text NOT NULL
        ) ON COMMIT DROP""",
}

_WORK_MEM = re.compile(r"\d+\s*(kB|MB|GB)")


@dataclass
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    restored: int = 0


def begin_sync(connection: Connection, entity: Entity, work_mem: str) -> None:
    """Serialize syncs of `entity` and size the merge's memory; call right after BEGIN."""
    if not _WORK_MEM.fullmatch(work_mem):
        raise ValueError(f"merge work_mem {work_mem!r} is not like '256MB'")
    connection.run("SELECT pg_advisory_xact_lock(:key)", key=LOCK_KEYS[entity])
    connection.run(f"SET LOCAL work_mem = '{work_mem}'")
    # The touched-patients list lets totals be recomputed only where payments moved.
    connection.run("CREATE TEMP TABLE touched_patients (patient_id bigint) ON COMMIT DROP")


def load_stage(connection: Connection, entity: Entity, chunks: Iterable[str]) -> None:
    """Create the entity's staging table and COPY the snapshot's valid rows into it."""
    connection.run(_STAGE_DDL[entity])
    columns = ", ".join(STAGE_COLUMNS[entity])
    connection.run(f"COPY stage_{entity} ({columns}) FROM STDIN", stream=chunks)
    # Fresh statistics let the planner pick hash joins for big snapshots and
    # index lookups for small ones.
    connection.run(f"ANALYZE stage_{entity}")


def duplicate_errors(connection: Connection, entity: Entity, limit: int) -> tuple[list[RecordError], int]:
    """Records whose externalId appeared earlier in the snapshot (first `limit`), and their count."""
    # A hash aggregate finds the repeated ids; only then are their records looked up.
    rows = connection.run(
        f"""
        WITH repeated AS (
            SELECT external_id, min(idx) AS first_idx
            FROM stage_{entity} GROUP BY external_id HAVING count(*) > 1
        )
        SELECT s.idx, s.external_id, r.first_idx, count(*) OVER () AS total
        FROM stage_{entity} s JOIN repeated r USING (external_id)
        WHERE s.idx <> r.first_idx
        ORDER BY s.idx
        LIMIT :limit""",
        limit=limit,
    )
    errors = [
        RecordError(idx, external_id, "externalId", f"duplicate externalId (first seen at index {first})")
        for idx, external_id, first, _ in rows
    ]
    return errors, (rows[0][3] if rows else 0)


def count_live(connection: Connection, entity: Entity) -> int:
    """Rows of the table that are not soft-deleted."""
    return connection.run(f"SELECT count(*) FROM {entity} WHERE deleted IS NULL")[0][0]


def soft_delete_missing(connection: Connection, entity: Entity) -> int:
    """Mark live rows absent from the snapshot deleted; returns how many."""
    # Payments remember their patient so that patient's total is recomputed.
    if entity == "payments":
        returning, then = "t.patient_id", "INSERT INTO touched_patients SELECT patient_id FROM gone"
    else:
        returning, then = "t.id", "SELECT 1 FROM gone"
    connection.run(
        f"""
        WITH gone AS (
            UPDATE {entity} t SET deleted = now(), updated = now()
            WHERE t.deleted IS NULL
              AND NOT EXISTS (SELECT 1 FROM stage_{entity} s WHERE s.external_id = t.external_id)
            RETURNING {returning}
        )
        {then}"""
    )
    return connection.row_count


def merge_patients(connection: Connection) -> MergeCounts:
    """Update changed, restore reappearing and insert new patients; link waiting payments."""
    counts = MergeCounts()
    # Only rows whose replicated fields really differ (or that come back) are
    # written, so an identical re-upload writes nothing and keeps `updated`.
    [[counts.restored, counts.updated]] = connection.run(
        """
        WITH changed AS (
            SELECT p.id, p.deleted IS NOT NULL AS restored,
                   s.first_name, s.last_name, s.middle_name, s.date_of_birth
            FROM stage_patients s JOIN patients p ON p.external_id = s.external_id
            WHERE p.deleted IS NOT NULL
               OR (p.first_name, p.last_name, p.middle_name, p.date_of_birth)
                  IS DISTINCT FROM (s.first_name, s.last_name, s.middle_name, s.date_of_birth)
        ), written AS (
            UPDATE patients p
            SET first_name = c.first_name, last_name = c.last_name, middle_name = c.middle_name,
                date_of_birth = c.date_of_birth, deleted = NULL, updated = now()
            FROM changed c WHERE p.id = c.id
            RETURNING c.restored
        )
        SELECT count(*) FILTER (WHERE restored), count(*) FILTER (WHERE NOT restored) FROM written"""
    )
    connection.run(
        """
        INSERT INTO patients (external_id, first_name, last_name, middle_name, date_of_birth)
        SELECT s.external_id, s.first_name, s.last_name, s.middle_name, s.date_of_birth
        FROM stage_patients s
        WHERE NOT EXISTS (SELECT 1 FROM patients p WHERE p.external_id = s.external_id)"""
    )
    counts.inserted = connection.row_count
    # Orphan payments (patient unknown until now) link to their patient. The
    # partial index on orphans keeps this proportional to the orphans, not to
    # all payments.
    connection.run(
        """
        WITH linked AS (
            UPDATE payments pay SET patient_id = p.id
            FROM patients p
            WHERE pay.patient_id IS NULL AND p.external_id = pay.patient_external_id
            RETURNING pay.patient_id
        )
        INSERT INTO touched_patients SELECT patient_id FROM linked"""
    )
    return counts


def merge_payments(connection: Connection) -> MergeCounts:
    """Update changed, restore reappearing and insert new payments, resolving their patient."""
    counts = MergeCounts()
    # A payment links to its patient's row whether or not that patient is
    # currently deleted (external ids are immutable, rows are never removed);
    # totals count live payments of every patient, so a restore is exact.
    [[counts.restored, counts.updated]] = connection.run(
        """
        WITH changed AS (
            SELECT pay.id, pay.deleted IS NOT NULL AS restored, pay.patient_id AS old_patient_id,
                   s.amount, s.patient_external_id
            FROM stage_payments s JOIN payments pay ON pay.external_id = s.external_id
            WHERE pay.deleted IS NOT NULL
               OR pay.amount <> s.amount
               OR pay.patient_external_id <> s.patient_external_id
        ), written AS (
            UPDATE payments pay
            SET amount = c.amount, patient_external_id = c.patient_external_id,
                patient_id = (SELECT p.id FROM patients p WHERE p.external_id = c.patient_external_id),
                deleted = NULL, updated = now()
            FROM changed c WHERE pay.id = c.id
            RETURNING c.restored, c.old_patient_id, pay.patient_id AS new_patient_id
        ), touched AS (
            INSERT INTO touched_patients
            SELECT old_patient_id FROM written UNION ALL SELECT new_patient_id FROM written
        )
        SELECT count(*) FILTER (WHERE restored), count(*) FILTER (WHERE NOT restored) FROM written"""
    )
    connection.run(
        """
        WITH added AS (
            INSERT INTO payments (external_id, amount, patient_external_id, patient_id)
            SELECT s.external_id, s.amount, s.patient_external_id, p.id
            FROM stage_payments s LEFT JOIN patients p ON p.external_id = s.patient_external_id
            WHERE NOT EXISTS (SELECT 1 FROM payments pay WHERE pay.external_id = s.external_id)
            RETURNING patient_id
        )
        INSERT INTO touched_patients SELECT patient_id FROM added"""
    )
    counts.inserted = connection.row_count
    return counts


def refresh_totals(connection: Connection) -> None:
    """Recompute payments_total / payments_count of the touched patients only."""
    # Totals are derived data: writing them does not bump a patient's `updated`.
    connection.run(
        """
        UPDATE patients p SET payments_total = t.total, payments_count = t.count
        FROM (
            SELECT tp.patient_id, coalesce(sum(pay.amount), 0) AS total, count(pay.id) AS count
            FROM (SELECT DISTINCT patient_id FROM touched_patients WHERE patient_id IS NOT NULL) tp
            LEFT JOIN payments pay ON pay.patient_id = tp.patient_id AND pay.deleted IS NULL
            GROUP BY tp.patient_id
        ) t
        WHERE p.id = t.patient_id
          AND (p.payments_total, p.payments_count) IS DISTINCT FROM (t.total, t.count)"""
    )


def count_orphans(connection: Connection) -> int:
    """Live payments whose patient is not (yet) known."""
    return connection.run("SELECT count(*) FROM payments WHERE patient_id IS NULL AND deleted IS NULL")[0][0]
