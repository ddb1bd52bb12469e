"""SQL for the sync_runs table: the record of every sync."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from paysync.dal.db import Connection, rows_as_dicts
from paysync.models import S3Object, SyncSummary
from paysync.records import Entity

_COLUMNS = """id, entity, source, status, dry_run, forced, s3_bucket, s3_key, s3_version_id,
    s3_etag, snapshot_at, received, inserted, updated, deleted, restored, unchanged,
    orphaned, duration_ms, error, started, finished"""


def insert_run(connection: Connection, summary: SyncSummary) -> int:
    """Record a sync; returns its id (the one its merge reserved, if any). Its
    snapshot time is `summary.snapshot_at` (an S3 object's LastModified, or the time a client
    stated), else the start of the recording transaction."""
    s3 = summary.s3
    rows = connection.run(
        """
        INSERT INTO sync_runs (
            id, entity, source, status, dry_run, forced, s3_bucket, s3_key, s3_version_id, s3_etag,
            s3_sequencer, snapshot_at, snapshot_seq, received, inserted, updated, deleted, restored,
            unchanged, orphaned, live_before, duration_ms, error, started, finished, last_row_id)
        OVERRIDING SYSTEM VALUE
        VALUES (
            coalesce(CAST(:reserved_id AS bigint), nextval(pg_get_serial_sequence('sync_runs', 'id'))),
            :entity, :source, :status, :dry_run, :forced, :s3_bucket, :s3_key, :s3_version_id, :s3_etag,
            :s3_sequencer, coalesce(CAST(:snapshot_at AS timestamptz), now()), :snapshot_seq, :received,
            :inserted, :updated, :deleted, :restored, :unchanged, :orphaned, :live_before, :duration_ms,
            CAST(:error AS jsonb), :started, clock_timestamp(),
            -- An applied sync records its table's highest row id (see SyncRun.last_row_id).
            CASE WHEN :status = 'applied' AND NOT :dry_run THEN coalesce(CASE :entity
                WHEN 'patients' THEN (SELECT max(id) FROM patients)
                WHEN 'payments' THEN (SELECT max(id) FROM payments) END, 0) END)
        RETURNING id""",
        entity=summary.entity,
        source=summary.source,
        status=summary.status,
        dry_run=summary.dry_run,
        forced=summary.forced,
        s3_bucket=_storable(s3.bucket) if s3 else None,
        s3_key=_storable(s3.key) if s3 else None,
        s3_version_id=_storable(s3.version_id) if s3 else None,
        s3_etag=_storable(s3.etag) if s3 else None,
        s3_sequencer=s3.sequencer if s3 else None,
        snapshot_at=summary.snapshot_at,
        snapshot_seq=s3.key_order if s3 else None,
        received=summary.received,
        inserted=summary.inserted,
        updated=summary.updated,
        deleted=summary.deleted,
        restored=summary.restored,
        unchanged=summary.unchanged,
        orphaned=summary.orphaned,
        live_before=summary.live_before,
        duration_ms=summary.duration_ms,
        error=json.dumps(_storable(summary.error)) if summary.error is not None else None,
        started=summary.started,
        reserved_id=summary.reserved_id,
    )
    return rows[0][0]


def _storable(value: Any) -> Any:
    """`value` with every NUL character replaced by U+FFFD: PostgreSQL text and jsonb cannot hold
    NUL, and an S3 key, a forged event or an offending record's externalId may carry one."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def skip_reason(connection: Connection, entity: Entity, s3: S3Object) -> str | None:
    """Why an S3 snapshot must not be applied: already applied, or provably older than an applied one.

    An applied snapshot is provably newer than the object when its snapshot time
    is at least one second after the object's LastModified second (the object
    was stored somewhere within that second), or, within the same second, when
    both are S3 objects and either they are versions of one key with a higher
    event sequencer, or both keys were issued by POST /uploads and the applied
    one's (milliseconds, suffix) is higher.
    """
    # Called under the entity's advisory lock, so two deliveries of one event
    # cannot both pass. Text comparisons use the C collation: byte order.
    [[already, stale]] = connection.run(
        """
        SELECT
            EXISTS (SELECT 1 FROM sync_runs
                    WHERE s3_bucket = :bucket AND s3_key = :key AND s3_etag = :etag
                      AND s3_version_id IS NOT DISTINCT FROM CAST(:version_id AS text)
                      AND snapshot_at = CAST(:last_modified AS timestamptz)
                      AND status = 'applied' AND NOT dry_run),
            EXISTS (SELECT 1 FROM sync_runs a, (SELECT CAST(:sequencer AS text) AS sequencer) e
                    WHERE a.entity = :entity AND a.status = 'applied' AND NOT a.dry_run
                      AND a.snapshot_at >= CAST(:last_modified AS timestamptz)
                      AND (a.snapshot_at >= CAST(:last_modified AS timestamptz) + interval '1 second'
                           OR (a.source = 's3' AND a.s3_bucket = :bucket AND a.s3_key = :key
                               AND lpad(a.s3_sequencer, greatest(length(a.s3_sequencer), length(e.sequencer)), '0')
                                   COLLATE "C"
                                   > lpad(e.sequencer, greatest(length(a.s3_sequencer), length(e.sequencer)), '0'))
                           OR (a.source = 's3' AND (a.s3_bucket, a.s3_key) IS DISTINCT FROM (:bucket, :key)
                               AND a.snapshot_seq COLLATE "C" > CAST(:key_order AS text))))""",
        bucket=s3.bucket,
        key=s3.key,
        etag=s3.etag,
        version_id=s3.version_id,
        last_modified=s3.last_modified,
        sequencer=s3.sequencer,
        key_order=s3.key_order,
        entity=entity,
    )
    if already:
        return "already_applied"
    if stale:
        return "stale"
    return None


def newest_snapshot_at(connection: Connection, entity: Entity) -> datetime | None:
    """The snapshot time of the newest applied (not dry-run) snapshot of `entity`."""
    [[newest]] = connection.run(
        "SELECT max(snapshot_at) FROM sync_runs WHERE entity = :entity AND status = 'applied' AND NOT dry_run",
        entity=entity,
    )
    return newest


def get_run(connection: Connection, sync_id: int) -> dict[str, Any] | None:
    """One sync run by id."""
    rows = connection.run(f"SELECT {_COLUMNS} FROM sync_runs WHERE id = :id", id=sync_id)
    found = rows_as_dicts(connection, rows)
    return found[0] if found else None


def list_runs(connection: Connection, limit: int, before_id: int | None) -> list[dict[str, Any]]:
    """Sync runs, newest first, keyset-paginated by id."""
    rows = connection.run(
        f"""SELECT {_COLUMNS} FROM sync_runs
        WHERE (CAST(:before_id AS bigint) IS NULL OR id < :before_id)
        ORDER BY id DESC LIMIT :limit""",
        before_id=before_id,
        limit=limit,
    )
    return rows_as_dicts(connection, rows)
