"""`paysync`: import snapshot files into a database, upload them to the bucket, migrate, show stats and history.

Exit codes: 0 applied (or previewed, or skipped); 1 snapshot rejected (nothing
applied, the run is recorded), or the row or sync run asked for does not exist;
2 usage or configuration error (bad arguments, a missing or unreadable file, a
bad DATABASE_URL, no AWS credentials, a missing bucket); 3 the database is
unreachable or refuses the connection (wrong password, missing database), or
another failure while talking to it or to S3. Errors are one line on stderr;
with --json, stdout holds only one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from pg8000.exceptions import DatabaseError, InterfaceError

from paysync.config import get_settings
from paysync.dal.db import (
    Connection,
    ConnectionParams,
    close_quietly,
    connect,
    parse_database_url,
    server_error_in,
)
from paysync.errors import DatabaseUnavailable, InvalidRequest, NotFound, SnapshotRejected
from paysync.observability import logger
from paysync.reads import ACTIONS
from paysync.records import ENTITIES
from paysync.timestamps import parse_snapshot_time

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_FAILURE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
COUNT_FIELDS = ("received", "inserted", "updated", "deleted", "restored", "unchanged", "orphaned")
KEY_SUFFIXES = (".json", ".json.gz")
# The replicated fields of a version, as the API names them.
VERSION_FIELDS = {
    "patients": ("externalId", "firstName", "lastName", "middleName", "dateOfBirth"),
    "payments": ("externalId", "amount", "patientId"),
}


class UsageError(Exception):
    """Bad command line or configuration (exit 2)."""


class ServiceError(Exception):
    """S3 (or another service) failed or refused (exit 3)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block (the subcommands inherit this class).
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="paysync", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="postgresql://user:pass@host:port/db (default: $DATABASE_URL)", default=None
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply the schema migrations")

    load = commands.add_parser("import", help="reconcile a snapshot file into the database")
    load.add_argument("entity", choices=ENTITIES)
    load.add_argument("file", help="snapshot file (.json or .json.gz), or - for standard input")
    load.add_argument("--dry-run", action="store_true", help="report what would change, apply nothing")
    load.add_argument(
        "--force", action="store_true", help="apply even if the deletion guard trips or the snapshot is stale"
    )
    load.add_argument(
        "--snapshot-at",
        metavar="TIME",
        help="when the snapshot was taken (RFC 3339 with offset, e.g. 2026-11-27T12:00:00Z);"
        " an older one than the newest applied is refused unless --force",
    )
    load.add_argument("--json", action="store_true", help="print only JSON on stdout (summary, rejection or error)")
    load.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")

    purge = commands.add_parser("purge-history", help="delete row versions older than the retention")
    purge.add_argument(
        "--days", type=int, help="keep versions that ended within this many days (default: $HISTORY_RETENTION_DAYS)"
    )
    purge.add_argument("--json", action="store_true", help="print only JSON on stdout")
    stats = commands.add_parser("stats", help="the figures of the newest sync and a histogram of patient totals")
    stats.add_argument("--top", default="10", help="how many top payers (1-100, default 10)")
    stats.add_argument("--buckets", default="10", help="histogram buckets (1-100, default 10)")
    stats.add_argument("--min", help="histogram range start (default: the smallest total)")
    stats.add_argument("--max", help="histogram range end (default: the largest total)")
    stats.add_argument("--json", action="store_true", help="print only JSON on stdout")

    versions = commands.add_parser("history", help="every version of one row, newest (the current one) first")
    versions.add_argument("entity", choices=ENTITIES)
    versions.add_argument("external_id", metavar="EXTERNAL_ID")
    versions.add_argument("--limit", default="100", help="how many versions (1-1000, default 100)")
    versions.add_argument("--json", action="store_true", help="print only JSON on stdout (the API's items)")

    changes = commands.add_parser("changes", help="the rows one sync changed, with their fields before and after")
    changes.add_argument("sync_id", metavar="SYNC_ID")
    changes.add_argument("--entity", choices=ENTITIES, help="only rows of this entity")
    changes.add_argument("--action", choices=ACTIONS, help="only rows the sync changed this way")
    changes.add_argument("--limit", default="100", help="how many rows (1-1000, default 100)")
    changes.add_argument("--json", action="store_true", help="print only JSON on stdout (the API's items)")

    upload = commands.add_parser("upload", help="put a snapshot file into the snapshot bucket (S3 sync)")
    upload.add_argument("entity", choices=ENTITIES)
    upload.add_argument("file", help="snapshot file (.json or .json.gz)")
    upload.add_argument("--bucket", help="bucket (default: $SNAPSHOT_BUCKET)")
    upload.add_argument("--key", help="object key (default: <entity>/<date>/<time>-<uuid>.json[.gz])")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `paysync` console script; returns the exit code."""
    with _logs_to_stderr():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    as_json = False
    try:
        args = build_parser().parse_args(argv)
        as_json = bool(getattr(args, "json", False))
        if args.command == "migrate":
            return _migrate(_database(args))
        if args.command == "import":
            return _import(args)
        if args.command == "purge-history":
            return _purge_history(args)
        if args.command == "stats":
            return _stats(args)
        if args.command in ("history", "changes"):
            return _history_or_changes(args)
        return _upload(args)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as exc:
        return _fail(EXIT_USAGE, "usage_error", str(exc), as_json)
    except DatabaseUnavailable as exc:
        return _fail(EXIT_FAILURE, exc.code, exc.message, as_json)
    except (DatabaseError, InterfaceError) as exc:
        return _fail(EXIT_FAILURE, "database_error", f"database error: {_server_message(exc)}", as_json)
    except ServiceError as exc:
        return _fail(EXIT_FAILURE, "service_error", str(exc), as_json)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted", "interrupted; nothing was applied", as_json)
    except Exception as exc:
        if os.environ.get("PAYSYNC_DEBUG"):
            raise
        message = f"unexpected error: {type(exc).__name__}: {exc} (PAYSYNC_DEBUG=1 shows the traceback)"
        return _fail(EXIT_FAILURE, "internal_error", message, as_json)


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    # stdout is for the summary; the sync's own logs go to stderr, errors only (the CLI states
    # every problem it meets in one line of its own). Restored afterwards, for callers that run
    # main() inside a longer-lived process.
    handler = logger.registered_handler
    level, stream = logger.log_level, getattr(handler, "stream", None)
    logger.setLevel("ERROR")
    if stream is not None:
        handler.stream = _Stderr()
    try:
        yield
    finally:
        logger.setLevel(level)
        if stream is not None:
            handler.stream = stream


class _Stderr:
    """Whatever sys.stderr is at the time of writing (tests replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _fail(code: int, error_code: str, message: str, as_json: bool) -> int:
    print(f"paysync: {_one_line(message)}", file=sys.stderr)
    if as_json:
        print(json.dumps({"status": "error", "error": {"code": error_code, "message": _one_line(message)}}))
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _server_message(exc: BaseException) -> str:
    # pg8000 puts the server's error fields in a dict: M is the message.
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
    return str(fields.get("M", exc)) if fields else str(exc)


def connect_checked(params: ConnectionParams) -> Connection:
    """connect(), with a refused login or a missing database as DatabaseUnavailable too."""
    where = params.unix_sock or f"{params.host}:{params.port}"
    try:
        return connect(params)
    except DatabaseError as exc:
        refusal: BaseException | None = exc
    except DatabaseUnavailable as exc:
        refusal = server_error_in(exc)
        if refusal is None:
            raise
    raise DatabaseUnavailable(f"the database at {where} refused the connection: {_server_message(refusal)}")


def _database(args: argparse.Namespace) -> ConnectionParams:
    if args.database_url is not None:
        url, origin = args.database_url, "--database-url"
    else:
        url, origin = get_settings().database_url, "DATABASE_URL"
    if not url or not url.strip():
        raise UsageError("no database: set DATABASE_URL or pass --database-url postgresql://user:pass@host:port/db")
    try:
        return parse_database_url(url.strip())
    except ValueError as exc:
        raise UsageError(f"invalid {origin}: {exc}") from None


def _migrate(params: ConnectionParams) -> int:
    from paysync.migrate import upgrade

    close_quietly(connect_checked(params))  # a clear "unreachable" error before Alembic's long one
    print(f"schema at revision {upgrade(params)}")
    return EXIT_OK


MAX_RETENTION_DAYS = 36500


def _purge_history(args: argparse.Namespace) -> int:
    from paysync.retention import purge_history

    days = args.days if args.days is not None else get_settings().history_retention_days
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise UsageError(f"no retention: pass --days N (1 to {MAX_RETENTION_DAYS}) or set HISTORY_RETENTION_DAYS")
    connection = connect_checked(_database(args))
    try:
        purge = purge_history(connection, days)  # batch by batch, each committed on its own
    finally:
        close_quietly(connection)
    if args.json:
        print(json.dumps(purge.to_json()))
    else:
        purged = purge.purged
        print(
            f"purged {purged['patients']} patient and {purged['payments']} payment versions ended before {purge.cutoff}"
        )
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from paysync.migrate import upgrade
    from paysync.reconcile import reconcile_snapshot

    params = _database(args)
    snapshot_at = _snapshot_at(args.snapshot_at)
    file = _open_input(args.file)  # checked before connecting: a bad path is exit 2, whatever the database
    try:
        close_quietly(connect_checked(params))
        upgrade(params)  # a fresh database just works; a current one is left alone
        connection = connect_checked(params)
        try:
            with _progress(file, args.file, _show_progress(args)) as (stream, on_phase):
                summary = reconcile_snapshot(
                    args.entity,
                    stream,
                    source="cli",
                    snapshot_at=snapshot_at,
                    dry_run=args.dry_run,
                    force=args.force,
                    connection=connection,
                    params=params,
                    on_phase=on_phase,
                )
        except SnapshotRejected as rejected:
            _print_rejection(rejected, as_json=args.json)
            return EXIT_REJECTED
        finally:
            close_quietly(connection)
    finally:
        if args.file != "-":
            file.close()
    _print_summary(summary.to_json(), as_json=args.json)
    return EXIT_OK


def _snapshot_at(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_snapshot_time(raw, "--snapshot-at")
    except InvalidRequest as exc:
        raise UsageError(exc.message) from None


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr is not None and sys.stderr.isatty()


def _open_input(name: str) -> BinaryIO:
    """The snapshot file (or standard input for -), checked: UsageError when it cannot be read."""
    if name == "-":
        if sys.stdin is None:
            raise UsageError("standard input is closed; name a snapshot file")
        if sys.stdin.isatty():
            raise UsageError("standard input is a terminal; pipe a snapshot into it, or name a file")
        return sys.stdin.buffer
    return _open_file(name)


def _open_file(name: str) -> BinaryIO:
    path = Path(name)
    shown = _one_line(repr(name))
    if not name:
        raise UsageError("the file name is empty")
    if not path.exists():
        raise UsageError(f"no such file: {shown}")
    if path.is_dir():
        raise UsageError(f"{shown} is a directory, not a snapshot file")
    try:
        return path.open("rb")
    except PermissionError:
        raise UsageError(f"cannot read {shown}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror}") from None


@contextlib.contextmanager
def _progress(file: BinaryIO, name: str, show: bool) -> Iterator[tuple[BinaryIO, Callable[[str], None] | None]]:
    """`file` with a progress bar on stderr when `show`, and the phase callback that ends it."""
    bar = _progress_bar(name) if show else None
    if bar is None:
        yield file, None
        return
    from tqdm.utils import CallbackIOWrapper

    def on_phase(phase: str) -> None:
        bar.close()  # the file is read; the database works on
        print(f"{phase}…", file=sys.stderr, flush=True)

    try:
        yield CallbackIOWrapper(bar.update, file, "read"), on_phase  # type: ignore[misc]
    finally:
        bar.close()


def _progress_bar(name: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the CLI works without its progress bar
        return None
    total = Path(name).stat().st_size if name != "-" else None
    label = "stdin" if name == "-" else Path(name).name
    return tqdm(total=total or None, desc=f"parsing {label}", unit="B", unit_scale=True, file=sys.stderr)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    verb = "previewed (dry run, nothing applied)" if summary["dryRun"] else summary["status"]
    print(f"{summary['entity']} snapshot {verb} - sync #{summary['syncId']}, {summary['durationMs'] / 1000:.2f} s")
    if summary["status"] == "skipped":
        print(f"  reason: {summary['error']['message']}")
    for field in COUNT_FIELDS:
        print(f"  {field:<10} {summary[field]:>12,}")


def _print_rejection(rejected: SnapshotRejected, as_json: bool) -> None:
    print(f"rejected: {rejected.message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"status": "rejected", "error": rejected.to_json()}))
        return
    for detail in rejected.details[:20]:
        where = f"record {detail.get('index')}" if "index" in detail else ""
        ident = f" (externalId {detail['externalId']})" if detail.get("externalId") is not None else ""
        field = f" {detail['field']}:" if detail.get("field") else ""
        print(f"  {where}{ident}{field} {detail.get('message')}", file=sys.stderr)
    if rejected.total > 20:
        print(f"  … and {rejected.total - 20} more", file=sys.stderr)


def _stats(args: argparse.Namespace) -> int:
    from paysync import stats
    from paysync.jsonio import to_json

    histogram_query = {
        name: getattr(args, name) for name in ("buckets", "min", "max") if getattr(args, name) is not None
    }
    connection = connect_checked(_database(args))
    try:
        figures = stats.get_stats({"top": args.top}, connection)
        histogram = stats.get_histogram(histogram_query, connection)
    except InvalidRequest as exc:
        raise UsageError(exc.message) from None
    finally:
        close_quietly(connection)
    if args.json:
        print(to_json({"stats": figures, "histogram": histogram}))
        return EXIT_OK
    print(_stats_text(figures, histogram))
    return EXIT_OK


HISTOGRAM_WIDTH = 40


def _stats_text(figures: dict[str, Any], histogram: dict[str, Any]) -> str:
    """The figures and a terminal histogram (one bar of # per bucket, scaled to the largest)."""
    patients, payments, totals = figures["patients"], figures["payments"], figures["totals"]
    sync = f"sync #{figures['syncId']}" if figures["syncId"] is not None else "no sync yet"
    lines = [
        f"stats as of {sync}",
        f"  live patients        {patients['live']:>14,}   without payments {patients['withoutPayments']:,}",
        f"  live payments        {payments['live']:>14,}   sum {payments['sum']:,}",
        f"  orphan payments      {payments['orphans']['count']:>14,}   sum {payments['orphans']['sum']:,}",
        f"  of deleted patients  {payments['ofDeletedPatients']['count']:>14,}"
        f"   sum {payments['ofDeletedPatients']['sum']:,}",
        "  patient totals       "
        + "  ".join(f"{name} {'-' if totals[name] is None else f'{totals[name]:,}'}" for name in totals),
        "top payers",
        *(f"  {p['externalId']:<20} {p['paymentsTotal']:>16,}  ({p['paymentsCount']:,})" for p in figures["topPayers"]),
        f"histogram of patient totals ({histogram['patients']:,} live patients)",
    ]
    buckets = histogram["buckets"]
    largest = max((b["count"] for b in buckets), default=0)
    for index, bucket in enumerate(buckets):
        closing = "]" if index == len(buckets) - 1 else ")"
        bar = "#" * (round(bucket["count"] * HISTOGRAM_WIDTH / largest) if largest else 0)
        lines.append(f"  [{bucket['from']:>14,}, {bucket['to']:>14,}{closing} {bucket['count']:>10,} {bar}")
    if histogram["below"] or histogram["above"]:
        lines.append(f"  below the range {histogram['below']:,}, above it {histogram['above']:,}")
    return "\n".join(lines)


def _history_or_changes(args: argparse.Namespace) -> int:
    """`paysync history` / `paysync changes`: the read API's pages, as a table or its JSON items.
    A row or sync run that does not exist is a refusal (exit 1)."""
    from paysync import reads
    from paysync.jsonio import to_json

    query = {"limit": args.limit}
    if args.command == "changes":
        query.update({name: getattr(args, name) for name in ("entity", "action") if getattr(args, name) is not None})
    connection = connect_checked(_database(args))
    try:
        if args.command == "history":
            page = reads.row_history(args.entity, args.external_id, query, connection)
        else:
            page = reads.sync_changes(args.sync_id, query, connection)
    except InvalidRequest as exc:
        raise UsageError(exc.message) from None
    except NotFound as exc:
        return _fail(EXIT_REJECTED, exc.code, exc.message, args.json)
    finally:
        close_quietly(connection)
    if args.json:
        print(to_json(page.items))
    elif args.command == "history":
        print(_history_text(args.entity, args.external_id, page))
    else:
        print(_changes_text(args.sync_id, page))
    return EXIT_OK


def _history_text(entity: str, external_id: str, page: Any) -> str:
    """The versions as a table: when each was current, how it began, which syncs began and ended it."""
    fields = VERSION_FIELDS[entity]
    header = ["validFrom", "validTo", "action", "syncStarted", "syncEnded", *fields]
    rows = [
        [
            _cell(item["validFrom"]),
            "current" if item["validTo"] is None else _cell(item["validTo"]),
            item["action"],
            _cell(item["syncStarted"]),
            _cell(item["syncEnded"]),
            *(_cell(item[name]) for name in fields),
        ]
        for item in page.items
    ]
    lines = [f"{entity} {_one_line(repr(external_id))}: {len(rows)} version(s), newest first", *_table(header, rows)]
    if page.next_cursor is not None:
        lines.append("more versions follow (raise --limit)")
    return "\n".join(lines)


def _changes_text(sync_id: str, page: Any) -> str:
    """One line per changed row: its action and each changed field as before -> after (every
    field of an inserted row)."""
    from paysync.jsonio import to_json

    lines = [f"sync #{sync_id}: {len(page.items)} changed row(s)"]
    for item in page.items:
        if item["before"] is None:
            detail = ", ".join(f"{name}={to_json(value)}" for name, value in item["after"].items() if name != "deleted")
        else:
            detail = ", ".join(
                f"{name}: {to_json(item['before'][name])} -> {to_json(item['after'][name])}" for name in item["changed"]
            )
        lines.append(f"  {item['action']:<8} {item['entity']} {_one_line(repr(item['externalId']))}  {detail}")
    if page.next_cursor is not None:
        lines.append("more changes follow (raise --limit)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _one_line(str(value))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, under a header line."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _upload(args: argparse.Namespace) -> int:
    from paysync.uploads import snapshot_key

    bucket = args.bucket if args.bucket is not None else get_settings().snapshot_bucket
    if not bucket:
        raise UsageError("no bucket: set SNAPSHOT_BUCKET or pass --bucket")
    if args.file == "-":
        raise UsageError("upload needs a file (its size decides a multipart upload), not standard input")
    key = args.key if args.key is not None else snapshot_key(args.entity, compressed=args.file.endswith(".gz"))
    if not key.startswith(f"{args.entity}/"):
        raise UsageError(f"the key must start with {args.entity}/ (the prefix selects the entity)")
    if not key.endswith(KEY_SUFFIXES):
        raise UsageError("the key must end with .json or .json.gz (other objects are not synced)")
    with _open_file(args.file) as file:
        _put(file, bucket, key)
    print(f"uploaded s3://{bucket}/{key}; the reconcile function applies it (see GET /syncs)")
    return EXIT_OK


def _put(file: BinaryIO, bucket: str, key: str) -> None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )

    from paysync.dal import storage

    try:
        try:
            storage.s3_client().head_bucket(Bucket=bucket)  # a missing bucket is a clear error, not a retry loop
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise UsageError(f"bucket {bucket!r} does not exist (check --bucket or SNAPSHOT_BUCKET)") from None
            raise
        storage.upload_file(file, bucket, key)
    except (NoCredentialsError, PartialCredentialsError):
        raise UsageError(
            "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except ParamValidationError as exc:
        raise UsageError(_one_line(str(exc))) from None
    except (ClientError, S3UploadFailedError) as exc:
        raise ServiceError(f"S3 refused the upload: {_one_line(str(exc))}") from None
    except BotoCoreError as exc:
        raise ServiceError(f"S3 is unreachable: {_one_line(str(exc))}") from None


if __name__ == "__main__":
    sys.exit(main())
