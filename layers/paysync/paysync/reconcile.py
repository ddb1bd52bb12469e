"""The reconcile engine: one snapshot of one entity -> the replica, in one transaction.

The only sync code path: the POST handlers, the S3 handler and the CLI all call
`reconcile_snapshot`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from pg8000.exceptions import DatabaseError, InterfaceError

from paysync import guard, stats
from paysync.config import get_settings
from paysync.dal import merge
from paysync.dal.db import (
    Connection,
    ConnectionParams,
    close_quietly,
    connect,
    transaction,
    wait_for_long_statements,
)
from paysync.dal.sync_runs import insert_run, newest_snapshot_at, skip_reason
from paysync.errors import (
    MAX_LISTED_ERRORS,
    DatabaseUnavailable,
    InvalidSnapshot,
    MalformedSnapshot,
    SnapshotRejected,
    StaleSnapshot,
)
from paysync.models import S3Object, Source, SyncSummary
from paysync.observability import logger
from paysync.records import Entity
from paysync.snapshot import Readable, SnapshotReader

# Recording a run must not hang on a half-open connection.
RECORD_TIMEOUT_SECONDS = 10


def reconcile_snapshot(
    entity: Entity,
    stream: Readable,
    *,
    source: Source,
    s3: S3Object | None = None,
    snapshot_at: datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
    connection: Connection | None = None,
    params: ConnectionParams | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> SyncSummary:
    """Make the replica of `entity` equal to the snapshot in `stream` (a JSON array, maybe gzip).

    `snapshot_at` is when the client took the snapshot: one older than the
    newest applied snapshot of `entity` is refused (StaleSnapshot) unless
    forced. An S3 snapshot's time is its object's LastModified. `params` says
    where to reconnect to record a failure when `connection` breaks (default:
    the configured database).

    Returns the summary (status applied, or skipped for an S3 object already
    applied or older than an applied snapshot). Raises SnapshotRejected
    (nothing applied, run recorded), DatabaseUnavailable when the connection
    is lost (nothing applied, run recorded when the database can be reached),
    or the unexpected error itself (nothing applied, run recorded).
    `on_phase("merging")` is called once the snapshot is parsed and valid,
    before the merge (for progress displays).
    """
    summary = SyncSummary(
        entity=entity,
        source=source,
        started=datetime.now(UTC),
        dry_run=dry_run,
        forced=force,
        s3=s3,
        snapshot_at=s3.last_modified if s3 is not None else snapshot_at,
    )
    clock = time.perf_counter()
    own_connection = connection is None
    connection = connection or connect(params)
    wait_for_long_statements(connection)
    try:
        try:
            with transaction(connection):
                _apply(connection, summary, stream, on_phase)
                summary.duration_ms = _elapsed_ms(clock)
                if dry_run or summary.status == "skipped":
                    raise _Undo
                summary.sync_id = insert_run(connection, summary)
        except _Undo:
            summary.sync_id = _record(connection, summary, params)
            if summary.sync_id is None:
                raise DatabaseUnavailable("the database is unreachable; the sync was not recorded. Retry.") from None
        except SnapshotRejected as rejected:
            summary.status = "rejected"
            summary.error = rejected.to_json()
            summary.duration_ms = _elapsed_ms(clock)
            rejected.sync_id = summary.sync_id = _record(connection, summary, params)
            _log(summary, code=rejected.code)
            raise
        except Exception as exc:
            lost = connection_lost(exc)
            summary.status = "failed"
            summary.error = {
                "code": DatabaseUnavailable.code if lost else "internal_error",
                "message": "the database connection was lost" if lost else type(exc).__name__,
                "details": [],
            }
            summary.duration_ms = _elapsed_ms(clock)
            # Best effort, and never in place of the error itself.
            summary.sync_id = _record(connection, summary, params, reuse=not lost)
            _log(summary)
            if lost and not isinstance(exc, DatabaseUnavailable):
                raise DatabaseUnavailable(
                    "the database connection was lost during the sync; nothing was applied. Retry."
                ) from exc
            raise
    finally:
        if own_connection:
            close_quietly(connection)
    _log(summary)
    return summary


def record_skipped_object(entity: Entity | None, s3: S3Object, reason: str, message: str) -> SyncSummary:
    """Record an S3 object that is not synced at all (e.g. its key names no snapshot)."""
    summary = SyncSummary(
        entity=entity,
        source="s3",
        started=datetime.now(UTC),
        status="skipped",
        s3=s3,
        snapshot_at=s3.last_modified,
        error={"code": reason, "message": message, "details": []},
    )
    connection = connect()
    try:
        wait_for_long_statements(connection, RECORD_TIMEOUT_SECONDS)
        with transaction(connection):
            summary.sync_id = insert_run(connection, summary)
    except InterfaceError as exc:
        raise DatabaseUnavailable("the database connection was lost; the object was not recorded") from exc
    finally:
        close_quietly(connection)
    _log(summary)
    return summary


# pg8000 raises InterfaceError once the socket is gone; a backend
# that is terminated mid-statement first sends one of these SQLSTATEs.
_CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03")


def connection_lost(error: BaseException) -> bool:
    """Whether `error` means the database connection broke (transient: retry)."""
    if isinstance(error, (InterfaceError, DatabaseUnavailable)):
        return True
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        state = str(error.args[0].get("C", ""))
        return state.startswith("08") or state in _CONNECTION_LOST_STATES
    return False


class _Undo(Exception):
    """Roll the transaction back on purpose (dry run, skipped snapshot)."""


def _apply(
    connection: Connection, summary: SyncSummary, stream: Readable, on_phase: Callable[[str], None] | None
) -> None:
    settings = get_settings()
    entity = summary.entity
    first_load = merge.begin_sync(connection, entity, settings.merge_work_mem)
    # The run's id, known up front: history rows name it, and a dry run or a refused sync is
    # recorded under it after the rollback (no gaps for those).
    summary.reserved_id = merge.reserve_sync_id(connection)
    if summary.s3 is not None:
        reason = skip_reason(connection, entity, summary.s3)
        if reason is not None:
            summary.status = "skipped"
            summary.error = {"code": reason, "message": _SKIP_MESSAGES[reason], "details": []}
            return
    elif summary.snapshot_at is not None and not summary.forced:
        _refuse_stale(connection, entity, summary.snapshot_at)

    reader = SnapshotReader(entity, stream)
    merge.load_stage(connection, entity, reader.copy_chunks())
    summary.received = reader.received
    if reader.failure is not None:
        raise reader.failure
    if reader.malformed is not None:
        raise MalformedSnapshot(reader.malformed)
    # No upfront search for repeated ids (a hash aggregate over the whole stage): the diff's
    # counts show a repeat of an id the table holds (see `merge.repeats_known_ids`), and the
    # table's unique key refuses a repeated new id while the rows go in. Only then are the
    # repeats looked for, to name them (see below).
    checked = bool(reader.invalid_count)
    if checked:
        _refuse_invalid(connection, entity, reader)
    if on_phase is not None:
        on_phase("merging")

    changes = merge.diff_snapshot(connection, entity, first_load, summary.received)
    if not first_load and not checked and merge.repeats_known_ids(connection, entity, summary.received, changes):
        _refuse_invalid(connection, entity, reader)
    # The live rows are the staged rows that matched a live row, and the live rows missing from the stage.
    live_before = summary.received - changes.inserted - changes.restored + changes.deleted
    summary.deleted, summary.live_before = changes.deleted, live_before
    if not summary.forced:
        guard.check(connection, entity, summary.source, summary.received, changes.deleted, live_before)
    bulk = first_load and changes.inserted >= merge.BULK_LOAD_MIN_ROWS
    if not checked:
        connection.run("SAVEPOINT apply")
    try:
        if entity == "patients":
            merge.apply_patients(connection, first_load, bulk, settings.keep_history)
        else:
            merge.apply_payments(connection, first_load, bulk, settings.keep_history)
    except DatabaseError as exc:
        if checked or merge.sqlstate(exc) != merge.UNIQUE_VIOLATION:
            raise
        connection.run("ROLLBACK TO SAVEPOINT apply")
        _refuse_invalid(connection, entity, reader)
        raise
    totals_moved = merge.refresh_totals(connection)
    summary.inserted, summary.updated = changes.inserted, changes.updated
    summary.restored = changes.restored
    summary.unchanged = summary.received - changes.inserted - changes.updated - changes.restored
    summary.orphaned = merge.count_orphans(connection)
    if not summary.dry_run:  # ANALYZE's row estimate is kept even when the transaction rolls back
        merge.refresh_statistics(connection, entity, changes.written)
        merge.refresh_statistics(connection, "patients", totals_moved, columns="payments_total, payments_count")
        merge.refresh_history_statistics(connection, entity, changes, settings.keep_history)
    stats.record_sync(connection, summary, changes.written + totals_moved)
    merge.swap_in_built_tables(connection)  # last: its locks block reads until the commit


def _refuse_invalid(connection: Connection, entity: Entity, reader: SnapshotReader) -> None:
    """Raise InvalidSnapshot when the snapshot held invalid records or repeated externalIds."""
    duplicates, duplicate_count = merge.duplicate_errors(connection, entity, MAX_LISTED_ERRORS)
    if reader.invalid_count or duplicate_count:
        raise InvalidSnapshot(reader.errors + duplicates, reader.invalid_count + duplicate_count)


_SKIP_MESSAGES = {
    "already_applied": "this S3 object version was already applied",
    "stale": "a newer snapshot of this entity was already applied",
}


def _refuse_stale(connection: Connection, entity: Entity, snapshot_at: datetime) -> None:
    newest = newest_snapshot_at(connection, entity)
    # Equal times are not older; an S3 snapshot's second is at most its real time.
    if newest is not None and snapshot_at < newest:
        raise StaleSnapshot(
            f"the snapshot (taken {snapshot_at.isoformat()}) is older than the newest applied {entity}"
            f" snapshot ({newest.isoformat()}); nothing was applied. Repeat with force to apply it anyway.",
            [
                {
                    "parameter": "snapshot_at",
                    "message": "older than the newest applied snapshot",
                    "newestSnapshotAt": newest.isoformat(),
                }
            ],
        )


def _record(
    connection: Connection, summary: SyncSummary, params: ConnectionParams | None, reuse: bool = True
) -> int | None:
    """Record the run on the sync's connection, or on a fresh one when that one is broken.

    Returns the run's id, or None (logged) when the database cannot be reached.
    """
    if reuse:
        try:
            wait_for_long_statements(connection, RECORD_TIMEOUT_SECONDS)
            with transaction(connection):
                return insert_run(connection, summary)
        except Exception as exc:
            if not connection_lost(exc):
                logger.warning(
                    "sync run not recorded", extra={"entity": summary.entity, "error_type": type(exc).__name__}
                )
                return None
    try:
        fresh = connect(params)
    except DatabaseUnavailable:
        logger.warning("sync run not recorded: database unreachable", extra={"entity": summary.entity})
        return None
    try:
        wait_for_long_statements(fresh, RECORD_TIMEOUT_SECONDS)
        with transaction(fresh):
            return insert_run(fresh, summary)
    except Exception as exc:
        logger.warning("sync run not recorded", extra={"entity": summary.entity, "error_type": type(exc).__name__})
        return None
    finally:
        close_quietly(fresh)


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
