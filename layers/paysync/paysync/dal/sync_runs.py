"""SQL for the sync_runs table: the record of every sync."""

from __future__ import annotations

import json
from typing import Any

from paysync.dal.db import Connection, rows_as_dicts
from paysync.models import S3Object, SyncSummary
from paysync.records import Entity

_COLUMNS = """id, entity, source, status, dry_run, forced, s3_bucket, s3_key, s3_version_id,
    s3_etag, snapshot_at, received, inserted, updated, deleted, restored, unchanged,
    orphaned, duration_ms, error, started, finished"""


def insert_run(connection: Connection, summary: SyncSummary) -> int:
    """Record a sync; returns its id. An S3 sync's snapshot time is the object's LastModified,
    any other sync's is the start of the recording transaction."""
    s3 = summary.s3
    rows = connection.run(
        """
        INSERT INTO sync_runs (
            entity, source, status, dry_run, forced, s3_bucket, s3_key, s3_version_id, s3_etag,
            snapshot_at, received, inserted, updated, deleted, restored, unchanged, orphaned,
            live_before, duration_ms, error, started, finished)
        VALUES (
            :entity, :source, :status, :dry_run, :forced, :s3_bucket, :s3_key, :s3_version_id, :s3_etag,
            coalesce(CAST(:snapshot_at AS timestamptz), now()), :received, :inserted, :updated,
            :deleted, :restored, :unchanged, :orphaned, :live_before, :duration_ms, CAST(:error AS jsonb),
            :started, clock_timestamp())
        RETURNING id""",
        entity=summary.entity,
        source=summary.source,
        status=summary.status,
        dry_run=summary.dry_run,
        forced=summary.forced,
        s3_bucket=s3.bucket if s3 else None,
        s3_key=s3.key if s3 else None,
        s3_version_id=s3.version_id if s3 else None,
        s3_etag=s3.etag if s3 else None,
        snapshot_at=s3.last_modified if s3 else None,
        received=summary.received,
        inserted=summary.inserted,
        updated=summary.updated,
        deleted=summary.deleted,
        restored=summary.restored,
        unchanged=summary.unchanged,
        orphaned=summary.orphaned,
        live_before=summary.live_before,
        duration_ms=summary.duration_ms,
        error=json.dumps(summary.error) if summary.error is not None else None,
        started=summary.started,
    )
    return rows[0][0]


def skip_reason(connection: Connection, entity: Entity, s3: S3Object) -> str | None:
    """Why an S3 snapshot must not be applied: already applied, or older than the last applied."""
    # Called under the entity's advisory lock, so two deliveries of one event
    # cannot both pass.
    [[already, newest]] = connection.run(
        """
        SELECT
            EXISTS (SELECT 1 FROM sync_runs
                    WHERE s3_bucket = :bucket AND s3_key = :key AND s3_etag = :etag
                      AND s3_version_id IS NOT DISTINCT FROM :version_id
                      AND snapshot_at = CAST(:last_modified AS timestamptz)
                      AND status = 'applied' AND NOT dry_run),
            (SELECT max(snapshot_at) FROM sync_runs
             WHERE entity = :entity AND status = 'applied' AND NOT dry_run)""",
        bucket=s3.bucket,
        key=s3.key,
        etag=s3.etag,
        version_id=s3.version_id,
        last_modified=s3.last_modified,
        entity=entity,
    )
    if already:
        return "already_applied"
    if newest is not None and s3.last_modified < newest:
        return "stale"
    return None


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
