"""`paysync`: import snapshot files into a database, upload them to the bucket, migrate.

Exit codes: 0 applied (or previewed, or skipped), 1 snapshot rejected (nothing
applied), 2 usage or configuration error, 3 database unreachable or other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from paysync.config import get_settings
from paysync.dal.db import ConnectionParams, close_quietly, connect, parse_database_url
from paysync.errors import DatabaseUnavailable, InvalidRequest, SnapshotRejected
from paysync.observability import logger
from paysync.records import ENTITIES
from paysync.timestamps import parse_snapshot_time

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_FAILURE = 0, 1, 2, 3
COUNT_FIELDS = ("received", "inserted", "updated", "deleted", "restored", "unchanged", "orphaned")


class UsageError(Exception):
    """Bad command line or configuration (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paysync", description=__doc__.split("\n\n")[0])
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
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.add_argument("--no-progress", action="store_true", help="no progress bar")

    upload = commands.add_parser("upload", help="put a snapshot file into the snapshot bucket (S3 sync)")
    upload.add_argument("entity", choices=ENTITIES)
    upload.add_argument("file", help="snapshot file (.json or .json.gz)")
    upload.add_argument("--bucket", help="bucket (default: $SNAPSHOT_BUCKET)")
    upload.add_argument("--key", help="object key (default: <entity>/<date>/<time>-<uuid>.json[.gz])")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `paysync` console script."""
    args = build_parser().parse_args(argv)
    logger.setLevel("WARNING")  # stdout is for the summary; sync logs are for Lambda
    try:
        if args.command == "migrate":
            return _migrate(_database(args))
        if args.command == "import":
            return _import(args, _database(args))
        return _upload(args)
    except UsageError as exc:
        print(f"paysync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailable as exc:
        print(f"paysync: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE


def _database(args: argparse.Namespace) -> ConnectionParams:
    url = args.database_url or get_settings().database_url
    if not url:
        raise UsageError("no database: set DATABASE_URL or pass --database-url postgresql://user:pass@host:port/db")
    try:
        return parse_database_url(url)
    except ValueError as exc:
        raise UsageError(f"invalid database URL: {exc}") from None


def _migrate(params: ConnectionParams) -> int:
    from paysync.migrate import upgrade

    print(f"schema at revision {_upgrade(upgrade, params)}")
    return EXIT_OK


def _upgrade(upgrade: Any, params: ConnectionParams) -> str:
    close_quietly(connect(params))  # a clear "unreachable" error before Alembic's long one
    return upgrade(params)


def _import(args: argparse.Namespace, params: ConnectionParams) -> int:
    from paysync.migrate import upgrade
    from paysync.reconcile import reconcile_snapshot

    snapshot_at = _snapshot_at(args.snapshot_at)
    _upgrade(upgrade, params)  # a fresh database just works; a current one is left alone
    connection = connect(params)
    try:
        with _open_snapshot(args.file, progress=not (args.no_progress or args.json)) as stream:
            summary = reconcile_snapshot(
                args.entity,
                stream,
                source="cli",
                snapshot_at=snapshot_at,
                dry_run=args.dry_run,
                force=args.force,
                connection=connection,
                params=params,
            )
    except SnapshotRejected as rejected:
        _print_rejection(rejected, as_json=args.json)
        return EXIT_REJECTED
    finally:
        close_quietly(connection)
    _print_summary(summary.to_json(), as_json=args.json)
    return EXIT_OK


def _snapshot_at(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_snapshot_time(raw, "--snapshot-at")
    except InvalidRequest as exc:
        raise UsageError(exc.message) from None


@contextlib.contextmanager
def _open_snapshot(name: str, progress: bool) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such file: {name}")
    with path.open("rb") as file:
        if not progress:
            yield file
            return
        try:
            from tqdm import tqdm
        except ImportError:  # the CLI works without its progress bar
            yield file
            return
        total = path.stat().st_size
        with tqdm.wrapattr(file, "read", total=total, desc=path.name, unit="B", unit_scale=True, leave=False) as bar:
            yield bar


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
    if as_json:
        print(json.dumps({"status": "rejected", "error": rejected.to_json()}))
        return
    print(f"rejected: {rejected.message}", file=sys.stderr)
    for detail in rejected.details[:20]:
        where = f"record {detail.get('index')}" if "index" in detail else ""
        ident = f" (externalId {detail['externalId']})" if detail.get("externalId") is not None else ""
        field = f" {detail['field']}:" if detail.get("field") else ""
        print(f"  {where}{ident}{field} {detail.get('message')}", file=sys.stderr)
    if rejected.total > 20:
        print(f"  … and {rejected.total - 20} more", file=sys.stderr)


def _upload(args: argparse.Namespace) -> int:
    from paysync.dal import storage
    from paysync.uploads import snapshot_key

    bucket = args.bucket or get_settings().snapshot_bucket
    if not bucket:
        raise UsageError("no bucket: set SNAPSHOT_BUCKET or pass --bucket")
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {args.file}")
    key = args.key or snapshot_key(args.entity, compressed=path.name.endswith(".gz"))
    if not key.startswith(f"{args.entity}/"):
        raise UsageError(f"the key must start with {args.entity}/ (the prefix selects the entity)")
    with path.open("rb") as file:
        storage.upload_file(file, bucket, key)
    print(f"uploaded s3://{bucket}/{key}; the reconcile function applies it (see GET /syncs)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
