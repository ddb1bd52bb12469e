"""SQL of single rows and their history: the live row, its superseded versions, a sync's changes.

A row's versions are the live row (the current version, open-ended) and the rows
of <entity>_versions that a sync superseded. Every query is served by an index:
the external id's unique key, <entity>_versions (row, valid_to, id) for a
row's history, and for a sync's changes sync_row_changes' key, the live table's
primary key (the ids it inserted) and <entity>_versions (sync_ended, row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paysync.dal.db import Connection, rows_as_dicts
from paysync.records import Entity


@dataclass(frozen=True)
class _Table:
    versions: str
    row_id: str
    fields: tuple[str, ...]


_TABLES: dict[Entity, _Table] = {
    "patients": _Table(
        "patient_versions", "patient_id", ("external_id", "first_name", "last_name", "middle_name", "date_of_birth")
    ),
    "payments": _Table("payment_versions", "payment_id", ("external_id", "amount", "patient_external_id")),
}
_EXTRA: dict[Entity, str] = {
    "patients": ", payments_total, payments_count",
    "payments": "",
}
# The action that started the current version of live row `t` (rows older than the history have none).
CURRENT_ACTION = "coalesce(t.version_action, CASE WHEN t.deleted IS NULL THEN 'inserted' ELSE 'deleted' END)"


def versions_table(entity: Entity) -> str:
    """The table holding the superseded versions of `entity`."""
    return _TABLES[entity].versions


def entity_fields(entity: Entity) -> tuple[str, ...]:
    """The replicated fields a version of `entity` holds."""
    return _TABLES[entity].fields


def get_row(connection: Connection, entity: Entity, external_id: str) -> dict[str, Any] | None:
    """The live row (deleted or not) with this external id."""
    fields = ", ".join(_TABLES[entity].fields)
    rows = connection.run(
        f"SELECT id, {fields}{_EXTRA[entity]}, created, updated, deleted FROM {entity} WHERE external_id = :eid",
        eid=external_id,
    )
    found = rows_as_dicts(connection, rows)
    return found[0] if found else None


def _current_version_sql(entity: Entity) -> str:
    fields = ", ".join(f"t.{name}" for name in _TABLES[entity].fields)
    return f"""SELECT t.id, {fields}, t.updated AS valid_from, CAST(NULL AS timestamptz) AS valid_to,
                      t.version_sync_id AS sync_started, CAST(NULL AS bigint) AS sync_ended,
                      {CURRENT_ACTION} AS action, CAST(NULL AS bigint) AS version_id
               FROM {entity} t"""


def _past_version_sql(entity: Entity, alias: str = "v") -> str:
    table = _TABLES[entity]
    fields = ", ".join(f"{alias}.{name}" for name in table.fields)
    return f"""SELECT {alias}.{table.row_id} AS id, {fields}, {alias}.valid_from, {alias}.valid_to,
                      {alias}.sync_started, {alias}.sync_ended, {alias}.action, {alias}.id AS version_id
               FROM {table.versions} {alias}"""


def version_at(connection: Connection, entity: Entity, external_id: str, at: datetime) -> dict[str, Any] | None:
    """The version of the row that was current at `at` (None when the row did not exist yet)."""
    table = _TABLES[entity]
    # The first superseded version still current after `at`, else the live row; either counts
    # only when it had begun by `at`.
    rows = connection.run(
        f"""
        WITH target AS (SELECT id FROM {entity} WHERE external_id = :eid)
        SELECT * FROM (
            (SELECT * FROM ({_past_version_sql(entity)}
                            WHERE v.{table.row_id} = (SELECT id FROM target) AND v.valid_to > :at
                            ORDER BY v.valid_to, v.id LIMIT 1) p)
            UNION ALL
            (SELECT * FROM ({_current_version_sql(entity)} WHERE t.id = (SELECT id FROM target)) c)
        ) candidate
        ORDER BY valid_to NULLS LAST LIMIT 1""",
        eid=external_id,
        at=at,
    )
    found = rows_as_dicts(connection, rows)
    if not found or found[0]["valid_from"] > at:
        return None
    return found[0]


def versions(
    connection: Connection,
    entity: Entity,
    row_id: int,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The row's versions newest first: the live row (only on the first page, `before` None), then
    the superseded versions ending before the (valid_to, version_id) key `before`."""
    table = _TABLES[entity]
    past = f"""
        SELECT * FROM ({_past_version_sql(entity)} WHERE v.{table.row_id} = :row_id
                       AND (CAST(:before_to AS timestamptz) IS NULL
                            OR (v.valid_to, v.id) < (CAST(:before_to AS timestamptz), :before_id))
                       ORDER BY v.valid_to DESC, v.id DESC LIMIT :limit) p"""
    if before is None:
        sql = f"""({_current_version_sql(entity)} WHERE t.id = :row_id)
                  UNION ALL ({past})"""
    else:
        sql = past
    rows = connection.run(
        f"SELECT * FROM ({sql}) x ORDER BY valid_to DESC NULLS FIRST, version_id DESC LIMIT :limit",
        row_id=row_id,
        before_to=before[0] if before else None,
        before_id=before[1] if before else None,
        limit=limit,
    )
    return rows_as_dicts(connection, rows)


def sync_changes(
    connection: Connection, entity: Entity, sync_id: int, action: str | None, after_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """The rows of `entity` that sync `sync_id` inserted, updated, deleted or restored, by row id:
    the version it started (`after`) and the one it ended (`before_*`, NULL for inserts)."""
    table = _TABLES[entity]
    before_fields = ", ".join(f"b.{name} AS before_{name}" for name in table.fields)
    # Candidates, each walk in row id order from the cursor: the ids the sync inserted (above the
    # previous applied sync's last_row_id, up to its own: a primary key range), and the rows it
    # updated, deleted or restored (sync_row_changes, per action). Each candidate's version the
    # sync started is the live row while the sync's, else a superseded version (one index probe by
    # row); a candidate without one (its version superseded and not kept) is not listed. Each
    # branch stops at `limit` rows, so a page costs the same whether the sync changed a hundred
    # rows or a million, whatever the action filter. LATERAL: the planner's estimate of a version
    # table that grew in the last sync must not make the probes a scan.
    started = f"""LATERAL (
            SELECT * FROM (({_current_version_sql(entity)} WHERE t.id = c.id AND t.version_sync_id = :sync_id)
                           UNION ALL
                           ({_past_version_sql(entity)}
                            WHERE v.{table.row_id} = c.id AND v.sync_started = :sync_id)) s
            LIMIT 1) a"""
    branches = []
    if action in (None, "inserted"):
        branches.append(
            f"""(SELECT a.* FROM (
                    SELECT n.id FROM {entity} n
                    WHERE n.id > greatest(:after_id, (SELECT lo FROM bounds)) AND n.id <= (SELECT hi FROM bounds)
                    ORDER BY n.id) c,
                 {started}
                 WHERE a.action = 'inserted' ORDER BY c.id LIMIT :limit)"""
        )
    for wanted in [known for known in ("updated", "deleted", "restored") if action in (None, known)]:
        # The action is written into the SQL (from the fixed list, never from the request).
        branches.append(
            f"""(SELECT a.* FROM (
                    SELECT row_id AS id FROM sync_row_changes
                    WHERE sync_id = :sync_id AND action = '{wanted}' AND row_id > :after_id ORDER BY row_id) c,
                 {started}
                 ORDER BY c.id LIMIT :limit)"""
        )
    rows = connection.run(
        f"""
        WITH bounds AS (
            SELECT coalesce((SELECT p.last_row_id FROM sync_runs p
                             WHERE p.entity = r.entity AND p.id < r.id AND p.last_row_id IS NOT NULL
                             ORDER BY p.id DESC LIMIT 1), 0) AS lo,
                   r.last_row_id AS hi
            FROM sync_runs r WHERE r.id = :sync_id AND r.entity = '{entity}')
        SELECT a.id, {", ".join(f"a.{name}" for name in table.fields)}, a.action,
               b.action AS before_action, {before_fields}
        FROM (SELECT * FROM ({" UNION ALL ".join(branches)}) u ORDER BY id LIMIT :limit) a
        LEFT JOIN LATERAL (SELECT * FROM {table.versions} e
                           WHERE e.sync_ended = :sync_id AND e.{table.row_id} = a.id LIMIT 1) b ON true
        ORDER BY a.id""",
        sync_id=sync_id,
        after_id=after_id or 0,
        limit=limit,
    )
    return rows_as_dicts(connection, rows)


def purge_versions(
    connection: Connection, entity: Entity, cutoff: datetime, after_id: int, limit: int
) -> tuple[int, int]:
    """Delete up to `limit` superseded versions of `entity` that ended before `cutoff`, the lowest
    ids above `after_id` first; how many, and the highest id looked at (the next call's `after_id`).
    Live rows (the current versions) are never touched.

    There is no index on valid_to (it would cost every sync): the primary key is walked from
    `after_id`, so batch after batch the table is read once. Versions are written when they end,
    so the old ones sit at the low ids and the walk finds them first.
    """
    table = _TABLES[entity]
    [[count, last_id]] = connection.run(
        f"""
        WITH gone AS (
            DELETE FROM {table.versions} WHERE id IN (
                SELECT id FROM {table.versions} WHERE id > :after_id AND valid_to < :cutoff
                ORDER BY id LIMIT :limit)
            RETURNING id)
        SELECT count(*), max(id) FROM gone""",
        after_id=after_id,
        cutoff=cutoff,
        limit=limit,
    )
    return count, last_id if last_id is not None else after_id
