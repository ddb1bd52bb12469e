"""The local database: an embedded PostgreSQL (pgserver) unless DATABASE_URL names one,
migrated to the newest schema, with the brief's sample data in an empty replica."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("devserver")

DATABASE_NAME = "paysync"


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver package, its data kept in `data_dir` between runs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; returns the URL of the `paysync` database."""
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" on servers
            warnings.simplefilter("ignore")
            import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.data_dir)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        _create_database(self._server.get_uri(), DATABASE_NAME)
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        """Stop the server, unless another live process is using the same data directory."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _forget_dead_handles(data_dir: Path) -> None:
    # pgserver stops the server when the last process that opened it cleans up, counting
    # processes in this file; a devserver killed with SIGKILL stays listed forever and the
    # server would never be stopped again. Keep only processes that are still alive.
    import psutil

    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _create_database(server_url: str, name: str) -> None:
    from paysync.dal.db import close_quietly, connect, parse_database_url

    connection = connect(parse_database_url(server_url))
    try:
        if not connection.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name):
            connection.run(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)
    finally:
        close_quietly(connection)


def migrate(url: str) -> str | None:
    """Apply the schema migrations; returns the revision now current."""
    from paysync.dal.db import parse_database_url
    from paysync.migrate import upgrade

    return upgrade(parse_database_url(url))


def load_samples_if_empty(url: str, samples_dir: Path) -> list[str]:
    """Reconcile samples/patients.json then samples/payments.json into an empty replica.

    Returns one line per snapshot applied (nothing when the replica already holds rows).
    """
    from paysync.dal.db import close_quietly, connect, parse_database_url
    from paysync.reconcile import reconcile_snapshot

    connection = connect(parse_database_url(url))
    try:
        [[rows]] = connection.run("SELECT (SELECT count(*) FROM patients) + (SELECT count(*) FROM payments)")
    finally:
        close_quietly(connection)
    if rows:
        return []
    lines = []
    for entity in ("patients", "payments"):
        with (samples_dir / f"{entity}.json").open("rb") as stream:
            summary = reconcile_snapshot(entity, stream, source="cli")
        lines.append(f"{entity}: {summary.inserted} inserted, {summary.orphaned} orphaned (sync #{summary.sync_id})")
    return lines
