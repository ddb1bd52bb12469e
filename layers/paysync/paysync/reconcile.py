"""The reconcile engine: one snapshot of one entity -> the replica, in one transaction.

The only sync code path: the POST handlers, the S3 handler and the CLI all call
`reconcile_snapshot`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from paysync.config import get_settings
from paysync.dal import merge
from paysync.dal.db import (
    Connection,
    close_quietly,
    connect,
    rollback_quietly,
    transaction,
    wait_for_long_statements,
)
from paysync.dal.sync_runs import insert_run, skip_reason
from paysync.errors import (
    MAX_LISTED_ERRORS,
    DeletionGuardTriggered,
    InvalidSnapshot,
    MalformedSnapshot,
    SnapshotRejected,
)
from paysync.models import S3Object, Source, SyncSummary
from paysync.observability import logger
from paysync.records import Entity
from paysync.snapshot import Readable, SnapshotReader


def reconcile_snapshot(
    entity: Entity,
    stream: Readable,
    *,
    source: Source,
    s3: S3Object | None = None,
    dry_run: bool = False,
    force: bool = False,
    connection: Connection | None = None,
) -> SyncSummary:
    """Make the replica of `entity` equal to the snapshot in `stream` (a JSON array, maybe gzip).

    Returns the summary (status applied, or skipped for an S3 object already
    applied or older than the last applied snapshot). Raises SnapshotRejected
    (nothing applied, run recorded) or a transient error such as
    DatabaseUnavailable (nothing applied).
    """
    summary = SyncSummary(entity=entity, source=source, started=datetime.now(UTC), dry_run=dry_run, forced=force, s3=s3)
    clock = time.perf_counter()
    own_connection = connection is None
    connection = connection or connect()
    wait_for_long_statements(connection)
    try:
        try:
            with transaction(connection):
                _apply(connection, summary, stream)
                summary.duration_ms = _elapsed_ms(clock)
                if dry_run or summary.status == "skipped":
                    raise _Undo
                summary.sync_id = insert_run(connection, summary)
        except _Undo:
            summary.sync_id = _record(connection, summary)
        except SnapshotRejected as rejected:
            summary.status = "rejected"
            summary.error = rejected.to_json()
            summary.duration_ms = _elapsed_ms(clock)
            rejected.sync_id = summary.sync_id = _record(connection, summary)
            _log(summary, code=rejected.code)
            raise
        except Exception as exc:
            summary.status = "failed"
            summary.error = {"code": "internal_error", "message": type(exc).__name__, "details": []}
            summary.duration_ms = _elapsed_ms(clock)
            _record_failure(connection, summary)
            raise
    finally:
        if own_connection:
            close_quietly(connection)
    _log(summary)
    return summary


class _Undo(Exception):
    """Roll the transaction back on purpose (dry run, skipped snapshot)."""


def _apply(connection: Connection, summary: SyncSummary, stream: Readable) -> None:
    settings = get_settings()
    entity = summary.entity
    first_load = merge.begin_sync(connection, entity, settings.merge_work_mem)
    if summary.s3 is not None:
        reason = skip_reason(connection, entity, summary.s3)
        if reason is not None:
            summary.status = "skipped"
            summary.error = {"code": reason, "message": _SKIP_MESSAGES[reason], "details": []}
            return

    reader = SnapshotReader(entity, stream)
    merge.load_stage(connection, entity, reader.copy_chunks())
    summary.received = reader.received
    if reader.failure is not None:
        raise reader.failure
    if reader.malformed is not None:
        raise MalformedSnapshot(reader.malformed)
    duplicates, duplicate_count = merge.duplicate_errors(connection, entity, MAX_LISTED_ERRORS)
    if reader.invalid_count or duplicate_count:
        raise InvalidSnapshot(reader.errors + duplicates, reader.invalid_count + duplicate_count)

    live_before = merge.count_live(connection, entity)
    changes = merge.diff_snapshot(connection, entity)
    summary.deleted = changes.deleted
    if not summary.forced and _guard_trips(changes.deleted, live_before):
        raise DeletionGuardTriggered(
            f"the snapshot would delete {changes.deleted} of {live_before} live {entity}"
            f" (more than {settings.delete_guard_ratio:.0%}); nothing was applied."
            " Check the upload, or repeat with force to apply it."
        )
    bulk = first_load and changes.inserted >= merge.BULK_LOAD_MIN_ROWS
    if entity == "patients":
        merge.apply_patients(connection, bulk)
    else:
        merge.apply_payments(connection, bulk)
    totals_moved = merge.refresh_totals(connection)
    summary.inserted, summary.updated = changes.inserted, changes.updated
    summary.restored = changes.restored
    summary.unchanged = summary.received - changes.inserted - changes.updated - changes.restored
    summary.orphaned = merge.count_orphans(connection)
    if not summary.dry_run:  # ANALYZE's row estimate is kept even when the transaction rolls back
        merge.refresh_statistics(connection, entity, changes.written)
        merge.refresh_statistics(connection, "patients", totals_moved)
    merge.swap_in_built_tables(connection)  # last: its locks block reads until the commit


_SKIP_MESSAGES = {
    "already_applied": "this S3 object version was already applied",
    "stale": "a newer snapshot of this entity was already applied",
}


def _guard_trips(deleted: int, live_before: int) -> bool:
    settings = get_settings()
    return live_before >= settings.delete_guard_min_rows and deleted > live_before * settings.delete_guard_ratio


def _record(connection: Connection, summary: SyncSummary) -> int:
    with transaction(connection):
        return insert_run(connection, summary)


def _record_failure(connection: Connection, summary: SyncSummary) -> None:
    # Best effort: the database may be the thing that failed.
    try:
        rollback_quietly(connection)
        summary.sync_id = _record(connection, summary)
    except Exception:
        logger.warning("sync failure not recorded", extra={"entity": summary.entity})
    _log(summary)


def _elapsed_ms(clock: float) -> int:
    return round((time.perf_counter() - clock) * 1000)


def _log(summary: SyncSummary, code: str | None = None) -> None:
    # Ids and counts only: snapshots hold PHI.
    logger.info(
        "sync finished",
        extra={
            "sync_id": summary.sync_id,
            "entity": summary.entity,
            "source": summary.source,
            "status": summary.status,
            "dry_run": summary.dry_run,
            "error_code": code or (summary.error or {}).get("code"),
            "received": summary.received,
            "inserted": summary.inserted,
            "updated": summary.updated,
            "deleted": summary.deleted,
            "restored": summary.restored,
            "unchanged": summary.unchanged,
            "orphaned": summary.orphaned,
            "duration_ms": summary.duration_ms,
        },
    )
