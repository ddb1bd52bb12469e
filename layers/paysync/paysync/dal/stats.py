"""SQL of the analytics: the figures a sync stores, and the index lookups GET /stats* make.

A sync may aggregate over the replica (it already reads all of it); a request
may not: every read here is a few index lookups on sync_stats,
patient_total_ranks or patients_live_total_idx.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from paysync.dal.db import Connection, rollback_quietly, rows_as_dicts

FIGURES = """live_patients, live_payments, live_payments_sum, orphan_payments, orphan_payments_sum,
    deleted_patient_payments, deleted_patient_payments_sum, patients_without_payments, live_patients_total,
    total_min, total_p10, total_p25, total_p50, total_p75, total_p90, total_p99, total_max, total_mean"""


def has_figures(connection: Connection) -> bool:
    """Whether an earlier sync stored its figures."""
    return connection.run("SELECT EXISTS (SELECT 1 FROM sync_stats)")[0][0]


def copy_previous(connection: Connection) -> None:
    """Store the newest sync's figures again, for a sync that changed nothing (its ranks stay in use)."""
    connection.run(
        f"""INSERT INTO sync_stats ({FIGURES}, ranks_generation)
            SELECT {FIGURES}, ranks_generation FROM sync_stats
            WHERE sync_id IS NOT NULL ORDER BY sync_id DESC LIMIT 1"""
    )


# The ranks keep one total per RANK_STEP live patients: the totals at which the cumulative count
# reaches a multiple of RANK_STEP, and the largest total. Between two kept totals lie fewer than
# RANK_STEP patients, which a lookup counts or walks in patients_live_total_idx. A generation is
# then 1/RANK_STEP of the live patients (at 1M patients, 31k rows instead of a million).
RANK_STEP = 32
# Below every total a numeric(22,2) holds: "no kept total below" in the lookups.
_BELOW_ALL = "CAST(-1e21 AS numeric)"


def rebuild_ranks(connection: Connection, generation: int) -> None:
    """Write the cumulative counts of the live patients' totals (one total per RANK_STEP patients)
    as `generation` (the sync's reserved id) of patient_total_ranks, and delete the earlier ones."""
    # DELETE, not TRUNCATE: TRUNCATE's lock would block reads until the sync commits. Until
    # then, reads keep finding the committed generation (the one sync_stats names): its rows
    # are only marked. The new generation's entries go to the right edge of indexes that lead
    # with the generation, and no uniqueness check walks through the deleted entries.
    connection.run("DELETE FROM patient_total_ranks")
    connection.run(
        """
        INSERT INTO patient_total_ranks (generation, total, patients_at_or_below)
        SELECT CAST(:generation AS bigint), total, at_or_below FROM (
            SELECT payments_total AS total, CAST(sum(count(*)) OVER w AS bigint) AS at_or_below,
                   CAST(sum(count(*)) OVER w AS bigint) - count(*) AS below,
                   CAST(sum(count(*)) OVER () AS bigint) AS live
            FROM patients WHERE deleted IS NULL GROUP BY payments_total
            WINDOW w AS (ORDER BY payments_total)) cumulative
        WHERE at_or_below / :step > below / :step OR at_or_below = live""",
        generation=generation,
        step=RANK_STEP,
    )


def insert_figures(connection: Connection, generation: int) -> None:
    """Compute the figures from the patients' totals (and the ranks `generation`) and store them
    unattached; the sync's run, once inserted, gives the row its id (trigger sync_stats_attach)."""
    # No scan of payments: every patient's totals (deleted patients' too) count the live
    # payments linked to it, so the live payments are the patients' counts plus the live
    # orphans (payments_orphan_idx finds those), and the same for the sums.
    # Percentiles are nearest-rank: the p-th is the smallest total that at least
    # ceil(p/100 * n) live patients reach, so each is a real patient's total;
    # p = 0 gives the minimum, p = 100 the maximum. The mean is rounded half away
    # from zero to the cent in integer arithmetic (numeric division would round twice).
    connection.run(
        f"""
        WITH orphans AS (
            SELECT count(*) AS live, coalesce(sum(amount), 0) AS live_sum
            FROM payments WHERE patient_id IS NULL AND deleted IS NULL
        ), pat AS (
            SELECT count(*) FILTER (WHERE deleted IS NULL) AS live,
                   count(*) FILTER (WHERE deleted IS NULL AND payments_count = 0) AS without_payments,
                   coalesce(sum(payments_total) FILTER (WHERE deleted IS NULL), 0) AS live_total,
                   coalesce(sum(payments_count) FILTER (WHERE deleted IS NOT NULL), 0) AS deleted_payments,
                   coalesce(sum(payments_total) FILTER (WHERE deleted IS NOT NULL), 0) AS deleted_sum,
                   coalesce(sum(payments_count), 0) AS linked_payments,
                   coalesce(sum(payments_total), 0) AS linked_sum
            FROM patients
        ), pct AS (
            -- The k-th smallest total lies after the last kept total reached by fewer than k
            -- patients (lo), at most at the first one reached by k (hi): a walk of fewer than
            -- RANK_STEP index entries between them, else hi's total.
            SELECT p, coalesce(
                (SELECT t.payments_total FROM patients t
                 WHERE t.deleted IS NULL AND t.payments_total > coalesce(lo.total, {_BELOW_ALL})
                   AND t.payments_total < hi.total
                 ORDER BY t.payments_total OFFSET k - coalesce(lo.patients_at_or_below, 0) - 1 LIMIT 1),
                hi.total) AS total
            FROM pat, unnest(ARRAY[0, 10, 25, 50, 75, 90, 99, 100]) p,
                 LATERAL (SELECT greatest((p * pat.live + 99) / 100, 1) AS k) target,
                 LATERAL (SELECT r.total FROM patient_total_ranks r
                          WHERE r.generation = CAST(:generation AS bigint) AND r.patients_at_or_below >= k
                          ORDER BY r.patients_at_or_below LIMIT 1) hi
                 LEFT JOIN LATERAL (
                     SELECT r.total, r.patients_at_or_below FROM patient_total_ranks r
                     WHERE r.generation = CAST(:generation AS bigint) AND r.patients_at_or_below < k
                     ORDER BY r.patients_at_or_below DESC LIMIT 1) lo ON true
            WHERE pat.live > 0
        )
        INSERT INTO sync_stats ({FIGURES}, ranks_generation)
        SELECT pat.live, pat.linked_payments + orphans.live, pat.linked_sum + orphans.live_sum,
               orphans.live, orphans.live_sum,
               pat.deleted_payments, pat.deleted_sum, pat.without_payments, pat.live_total,
               (SELECT total FROM pct WHERE p = 0), (SELECT total FROM pct WHERE p = 10),
               (SELECT total FROM pct WHERE p = 25), (SELECT total FROM pct WHERE p = 50),
               (SELECT total FROM pct WHERE p = 75), (SELECT total FROM pct WHERE p = 90),
               (SELECT total FROM pct WHERE p = 99), (SELECT total FROM pct WHERE p = 100),
               CASE WHEN pat.live > 0
                    THEN sign(pat.live_total) * div(abs(pat.live_total) * 200 + pat.live, 2 * pat.live) * 0.01 END,
               CAST(:generation AS bigint)
        FROM orphans, pat""",
        generation=generation,
    )


@contextmanager
def one_snapshot(connection: Connection) -> Iterator[Connection]:
    """Run the block's reads on one snapshot of the database (no sync commits in between)."""
    connection.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield connection
    finally:
        rollback_quietly(connection)


def newest(connection: Connection) -> dict[str, Any] | None:
    """The newest applied sync's figures (with its sync id, time and ranks generation), or None before any."""
    rows = connection.run(
        f"""SELECT sync_id, computed, ranks_generation, {FIGURES} FROM sync_stats
            WHERE sync_id IS NOT NULL ORDER BY sync_id DESC LIMIT 1"""
    )
    found = rows_as_dicts(connection, rows)
    return found[0] if found else None


def history(connection: Connection, limit: int, before_id: int | None) -> list[dict[str, Any]]:
    """The figures of each applied sync, newest first, keyset-paginated by sync id."""
    rows = connection.run(
        f"""SELECT s.sync_id, s.computed, r.entity, r.snapshot_at, {FIGURES}
            FROM sync_stats s JOIN sync_runs r ON r.id = s.sync_id
            WHERE s.sync_id IS NOT NULL AND (CAST(:before_id AS bigint) IS NULL OR s.sync_id < :before_id)
            ORDER BY s.sync_id DESC LIMIT :limit""",
        before_id=before_id,
        limit=limit,
    )
    return rows_as_dicts(connection, rows)


def top_payers(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """The live patients with the largest totals (ties by id), from patients_live_total_idx."""
    # A plain ORDER BY payments_total DESC, id would sort the whole group of patients
    # sharing the cut-off total (often 0.00: millions). Instead: the cut-off total t
    # from a backward scan, then the totals above t (fewer than `limit` rows) and
    # the first ids of total t, each an index range.
    rows = connection.run(
        """
        WITH cut AS (
            SELECT min(payments_total) AS total FROM (
                SELECT payments_total FROM patients WHERE deleted IS NULL
                ORDER BY payments_total DESC, id DESC LIMIT :limit) top
        )
        SELECT id, external_id, first_name, last_name, middle_name, payments_total, payments_count FROM (
            (SELECT * FROM patients WHERE deleted IS NULL AND payments_total > (SELECT total FROM cut)
             ORDER BY payments_total DESC, id DESC LIMIT :limit)
            UNION ALL
            (SELECT * FROM patients WHERE deleted IS NULL AND payments_total = (SELECT total FROM cut)
             ORDER BY payments_total, id LIMIT :limit)
        ) found
        ORDER BY payments_total DESC, id LIMIT :limit""",
        limit=limit,
    )
    return rows_as_dicts(connection, rows)


def counts_below(connection: Connection, generation: int, bounds: list[Decimal]) -> list[int]:
    """For each bound, how many live patients have a total strictly below it, from the ranks
    `generation` (the one the newest figures name; one lookup each)."""
    # The last kept total below the bound, plus the fewer than RANK_STEP patients after it.
    rows = connection.run(
        f"""SELECT coalesce(lo.patients_at_or_below, 0)
                   + (SELECT count(*) FROM patients t
                      WHERE t.deleted IS NULL AND t.payments_total > coalesce(lo.total, {_BELOW_ALL})
                        AND t.payments_total < b.bound)
           FROM unnest(CAST(:bounds AS numeric[])) WITH ORDINALITY AS b (bound, n)
           LEFT JOIN LATERAL (SELECT r.total, r.patients_at_or_below FROM patient_total_ranks r
                              WHERE r.generation = CAST(:generation AS bigint) AND r.total < b.bound
                              ORDER BY r.total DESC LIMIT 1) lo ON true
           ORDER BY b.n""",
        generation=generation,
        bounds=[str(bound) for bound in bounds],
    )
    return [row[0] for row in rows]
