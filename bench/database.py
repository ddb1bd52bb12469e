"""The benchmark's PostgreSQL: the local service (or BENCH_DATABASE_URL), else an embedded pgserver."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SETTINGS_SHOWN = (
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "max_wal_size",
    "synchronous_commit",
    "max_parallel_workers_per_gather",
)


@dataclass(frozen=True)
class Server:
    url: str  # of its maintenance database
    kind: str  # "service" or "embedded pgserver"

    def database_url(self, name: str) -> str:
        """The URL of database `name` on this server (keeps ?host=… for sockets)."""
        head, _, query = self.url.partition("?")
        scheme, _, rest = head.partition("://")
        authority = rest.split("/", 1)[0]
        return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (dropped first if it exists); returns its URL."""
        with self.admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def describe(self) -> dict[str, Any]:
        with self.admin() as admin:
            info: dict[str, Any] = {
                "kind": self.kind,
                "version": admin.execute("SELECT version()").fetchone()[0],
                "local": self.is_local(admin),
            }
            for name in SETTINGS_SHOWN:
                info[name] = admin.execute(f"SHOW {name}").fetchone()[0]
        return info

    @staticmethod
    def is_local(connection: psycopg.Connection) -> bool:
        """Whether server processes are visible in this machine's /proc (for their CPU time)."""
        pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        return os.path.exists(f"/proc/{pid}/stat")


@contextmanager
def bench_server() -> Iterator[Server]:
    """BENCH_DATABASE_URL if set; else the local service if it answers; else an embedded pgserver."""
    explicit = os.environ.get("BENCH_DATABASE_URL")
    url = explicit or DEFAULT_SERVER_URL
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        if explicit:
            raise
    else:
        yield Server(url, "service")
        return

    import pgserver

    data_dir = tempfile.mkdtemp(prefix="paysync-bench-pg")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield Server(server.get_uri(), "embedded pgserver")
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


REPLICA_TABLES = ("patients", "payments")
HISTORY_TABLES = ("patient_versions", "payment_versions")


def table_writes(url: str, tables: tuple[str, ...] = REPLICA_TABLES + HISTORY_TABLES) -> dict[str, dict[str, int]]:
    """Cumulative rows inserted / updated / deleted per table (pg_stat_user_tables)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET stats_fetch_consistency = none")
        rows = connection.execute(
            """SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables
               WHERE schemaname = 'public' AND relname = ANY(%s)""",
            (list(tables),),
        ).fetchall()
    return {name: {"inserted": ins, "updated": upd, "deleted": dele} for name, ins, upd, dele in rows}
