"""Work the benchmark runs in a fresh child process, so each step's peak RSS is its own.

Each function is called in a spawned interpreter (see `in_child`) and returns
plain data: wall and CPU seconds, peak RSS, and what the step reported.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_FLOOR_DDL = {
    "patients": """CREATE UNLOGGED TABLE floor_patients (
        idx bigint, external_id text, first_name text, last_name text, middle_name text, date_of_birth date)""",
    "payments": """CREATE UNLOGGED TABLE floor_payments (
        idx bigint, external_id text, amount numeric(12,2), patient_external_id text)""",
}


def in_child(function: Callable[..., T], *args: Any) -> T:
    """Run `function(*args)` in a new spawned interpreter and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    VmHWM belongs to the process's own address space. ru_maxrss would not do:
    Linux carries it over from the parent through fork and exec, so a child
    of a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float | None:
    """CPU seconds of a local process (a PostgreSQL backend), None when it is not visible here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def copy_floor(url: str, entity: str, path: str) -> dict[str, Any]:
    """Parse the snapshot (paysync's streaming reader) and COPY it into an unindexed UNLOGGED
    table with psycopg 3 (libpq, C): what this machine and database ingest at best."""
    import psycopg

    from paysync.records import STAGE_COLUMNS
    from paysync.snapshot import SnapshotReader

    table = f"floor_{entity}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(_FLOOR_DDL[entity])
        pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        server_before, cpu_before, clock = process_cpu(pid), own_cpu(), time.perf_counter()
        with Path(path).open("rb") as stream, connection.transaction(), connection.cursor() as cursor:
            reader = SnapshotReader(entity, stream)  # type: ignore[arg-type]
            with cursor.copy(f"COPY {table} ({', '.join(STAGE_COLUMNS[entity])}) FROM STDIN") as copy:
                for chunk in reader.copy_chunks():
                    copy.write(chunk)
        wall = time.perf_counter() - clock
        cpu, server = own_cpu() - cpu_before, _delta(server_before, process_cpu(pid))
        rows = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        connection.execute(f"DROP TABLE {table}")
    if reader.malformed or reader.failure or reader.invalid_count:
        raise RuntimeError(f"{path}: the generated snapshot is not valid ({reader.malformed or reader.failure})")
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu, "server_cpu_s": server, "peak_rss_mb": _peak_rss_mb()}


def strict_floor(url: str, entity: str, path: str) -> dict[str, Any]:
    """The strict floor of one snapshot (see bench.floor)."""
    from bench.floor import measure

    return {**measure(url, entity, path), "peak_rss_mb": _peak_rss_mb()}


def sync(url: str, entity: str, path: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One sync through `reconcile_snapshot`, the function the Lambdas and the CLI call, with
    `env` added to its environment; every statement timed by group (see bench.statements)."""
    os.environ.update(env or {})
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    import pg8000.native

    from bench.statements import StatementTimer
    from paysync.dal.db import close_quietly, connect
    from paysync.reconcile import reconcile_snapshot

    baseline_rss = _peak_rss_mb()
    connection = connect()
    try:
        pid = connection.run("SELECT pg_backend_pid()")[0][0]
        server_before, cpu_before, clock = process_cpu(pid), own_cpu(), time.perf_counter()
        with Path(path).open("rb") as stream, StatementTimer(pg8000.native.Connection) as timer:
            summary = reconcile_snapshot(entity, stream, source="cli", connection=connection)  # type: ignore[arg-type]
        wall = time.perf_counter() - clock
        cpu, server = own_cpu() - cpu_before, _delta(server_before, process_cpu(pid))
        statements = timer.groups(wall, cpu, server)
        # Publish this backend's table statistics now rather than up to a second later.
        connection.run("SELECT pg_stat_force_next_flush()")
        connection.run("SELECT 1")
    finally:
        close_quietly(connection)
    return {
        "rows": summary.received,
        "wall_s": wall,
        "cpu_s": cpu,
        "server_cpu_s": server,
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline_rss,
        "summary": summary.to_json(),
        "statements": statements,
    }


READ_FUNCTIONS = ("get_patients", "get_payments", "get_stats", "get_syncs")


def reads(urls: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Read latencies through the handlers, in-process, on each database (see bench.reads)."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from bench.reads import load_handler, measure_reads

    return measure_reads(urls, {function: load_handler(function) for function in READ_FUNCTIONS})


def cold_import(function_dir: str, layer_dir: str) -> float:
    """Seconds to import a function's app module in a fresh interpreter (Lambda's init phase)."""
    import subprocess
    import sys

    code = "import time; t = time.perf_counter(); import app; print(time.perf_counter() - t)"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "DATABASE_URL"))}
    env["PYTHONPATH"] = layer_dir
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=function_dir, env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])
