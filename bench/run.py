"""The benchmark: `make bench SIZE=S|M|L` (default M).

In one run: generate (or reuse) the snapshots, measure the strict floor and the
COPY floor, run the real reconcile (first load, identical re-sync, next-day
re-sync; patients then payments; each sync in its own child process with every
statement timed by group, while a thread times the read handlers against the
same database), verify the replica after every phase, time the next day with
and without history on clones of the replica, measure reads (lists, history and
analytics) through the handlers at S and at the chosen size and the handlers'
cold import; print the tables and the targets, save bench/results/<SIZE>.json
and rewrite BENCHMARKS.md from every saved size. Exits non-zero when a replica
does not match the snapshots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, steps
from bench.database import HISTORY_TABLES, REPLICA_TABLES, Server, bench_server, table_writes
from bench.generate import DEFAULT_SEED, IDS, SIZES, Dataset, Size, ensure_dataset
from bench.read_load import ReadsDuringSync, verdict

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENTITIES = ("patients", "payments")
PHASES = (("first load", "base"), ("identical re-sync", "base"), ("next-day re-sync", "next"))
IMPORT_RUNS = 9
# Next-day syncs with and without history, on clones of the replica after the identical re-sync:
# pairs of one each, the order alternating from pair to pair (one pair at L, where each costs minutes).
HISTORY_PAIRS = 2
HISTORY_PAIRS_AT_L = 1
# Several benchmarks can share one server when each names its own database.
DATABASE = os.environ.get("BENCH_DATABASE_NAME", "paysync_bench")


def machine() -> dict[str, Any]:
    """CPU, cores, RAM and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    except OSError:
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _migrate(url: str) -> None:
    from paysync.dal.db import parse_database_url
    from paysync.migrate import upgrade

    upgrade(parse_database_url(url))


def _settled_writes(url: str, before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Rows written since `before`, once the statistics stop moving (they are flushed asynchronously)."""
    current = table_writes(url)
    for _ in range(40):
        time.sleep(0.05)
        again = table_writes(url)
        if again == current:
            break
        current = again
    return {
        table: {kind: current[table][kind] - before.get(table, {}).get(kind, 0) for kind in current[table]}
        for table in current
    }


def _history_rows(written: dict[str, dict[str, int]]) -> int:
    return sum(written.get(table, {}).get("inserted", 0) for table in HISTORY_TABLES)


def _expected_summary(dataset: Dataset, phase: str, entity: str) -> dict[str, int]:
    rows = dataset.manifest["base"][entity]
    if phase == "first load":
        return {"received": rows, "inserted": rows, "updated": 0, "deleted": 0, "restored": 0}
    if phase == "identical re-sync":
        return {"received": rows, "inserted": 0, "updated": 0, "deleted": 0, "restored": 0, "unchanged": rows}
    changes = dataset.manifest["next"][entity]
    return {
        "received": changes["rows"],
        "inserted": changes["new"],
        "updated": changes["changed"],
        "deleted": changes["deleted"],
        "restored": 0,
    }


def run_syncs(
    server: Server, url: str, dataset: Dataset, problems: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every phase, patients then payments, each sync in a fresh child; the replica verified after
    each phase; before the next day, the cost of history measured on clones (see `history_cost`)."""
    import psycopg

    from bench.verify import verify_replica

    syncs, verifications, cost = [], [], {}
    for phase, day in PHASES:
        if day == "next":
            pairs = HISTORY_PAIRS_AT_L if dataset.manifest["size"] == "L" else HISTORY_PAIRS
            cost = history_cost(server, dataset, problems, pairs)
        for entity in ENTITIES:
            path = dataset.path(entity, day)
            before = table_writes(url)
            _log(f"sync: {phase} {entity} ({path.name})")
            patients = dataset.manifest["base"]["patients"]
            with ReadsDuringSync(url, patients, dataset.manifest.get("ids", "uuid")) as reads:
                result = steps.in_child(steps.sync, url, entity, str(path))
            written = _settled_writes(url, before)
            result.update(phase=phase, entity=entity, written=written)
            result["rows_written"] = sum(sum(written.get(table, {}).values()) for table in REPLICA_TABLES)
            result["history_rows"] = _history_rows(written)
            summary = result["summary"]
            for key, value in _expected_summary(dataset, phase, entity).items():
                if summary.get(key) != value:
                    problems.append(f"{phase} {entity}: summary {key} = {summary.get(key)}, expected {value}")
            _log(
                f"  {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                f"{result['history_rows']} history rows, {summary}"
            )
            result["reads_during"] = reads.summary()
            _log(f"  reads during {phase} {entity}: {verdict(result['reads_during'])}")
            syncs.append(result)
        _log(f"verify: after {phase}")
        clock = time.perf_counter()
        with psycopg.connect(url) as connection:
            checked = verify_replica(connection, dataset.path("patients", day), dataset.path("payments", day))
        problems.extend(f"after {phase}: {mismatch}" for mismatch in checked.mismatches)
        verifications.append(
            {
                "phase": phase,
                "checks": checked.checks,
                "mismatches": checked.mismatches,
                "seconds": time.perf_counter() - clock,
            }
        )
        _log(f"  {'OK' if checked.ok else 'MISMATCH'}: {len(checked.checks)} checks")
    return syncs, verifications, cost


def _clone(server: Server, name: str) -> str:
    """A copy of the benchmark's database (CREATE DATABASE … TEMPLATE): it must have no other
    session, so the benchmark's own read connection is closed and stray backends ended first."""
    import psycopg

    from paysync.dal import db

    if db._shared is not None:
        db.close_quietly(db._shared)
        db._shared = None
    with server.admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        [[version]] = admin.execute("SHOW server_version_num").fetchall()
        # FILE_COPY copies the files after a checkpoint, much faster than WAL-logging every block.
        strategy = " STRATEGY = FILE_COPY" if int(version) >= 150000 else ""
        for attempt in range(20):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (DATABASE,),
            )
            try:
                admin.execute(f"CREATE DATABASE {name} TEMPLATE {DATABASE}{strategy}")
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
                time.sleep(0.25)
    return server.database_url(name)


def history_cost(server: Server, dataset: Dataset, problems: list[str], pairs: int = HISTORY_PAIRS) -> dict[str, Any]:
    """The next-day syncs (patients + payments) with history and without it (KEEP_HISTORY=false),
    each on its own clone of the replica as the identical re-sync left it, in `pairs` pairs
    whose order alternates; every clone verified against the next day's snapshots."""
    import psycopg

    from bench.verify import verify_replica

    runs = []
    for pair in range(pairs):
        for keep in (False, True) if pair % 2 == 0 else (True, False):
            name = f"{DATABASE}_clone"
            clock = time.perf_counter()
            url = _clone(server, name)
            clone_s = time.perf_counter() - clock
            env = {"KEEP_HISTORY": "true" if keep else "false"}
            try:
                run: dict[str, Any] = {"keep_history": keep, "clone_s": clone_s, "steps": {}}
                for entity in ENTITIES:
                    before = table_writes(url)
                    result = steps.in_child(steps.sync, url, entity, str(dataset.path(entity, "next")), env)
                    written = _settled_writes(url, before)
                    run["steps"][entity] = {
                        "wall_s": result["wall_s"],
                        "cpu_s": result["cpu_s"],
                        "server_cpu_s": result["server_cpu_s"],
                        "history_rows": _history_rows(written),
                        "summary": result["summary"],
                    }
                run["wall_s"] = sum(step["wall_s"] for step in run["steps"].values())
                run["history_rows"] = sum(step["history_rows"] for step in run["steps"].values())
                with psycopg.connect(url) as connection:
                    checked = verify_replica(
                        connection, dataset.path("patients", "next"), dataset.path("payments", "next")
                    )
                run["verified_checks"] = len(checked.checks)
                run["mismatches"] = checked.mismatches
                where = f"next day, history {'on' if keep else 'off'}, clone"
                problems.extend(f"{where}: {mismatch}" for mismatch in checked.mismatches)
            finally:
                server.drop_database(name)
            _log(
                f"next day, history {'on ' if keep else 'off'} (clone): {run['wall_s']:.2f} s, "
                f"{run['history_rows']} history rows, {'OK' if checked.ok else 'MISMATCH'}"
            )
            runs.append(run)
    on = [run["wall_s"] for run in runs if run["keep_history"]]
    off = [run["wall_s"] for run in runs if not run["keep_history"]]
    return {
        "runs": runs,
        "with_history_s": statistics.median(on),
        "without_history_s": statistics.median(off),
        "ratio": statistics.median(on) / statistics.median(off),
        "history_rows_without": sum(run["history_rows"] for run in runs if not run["keep_history"]),
    }


def _settle(url: str) -> None:
    """VACUUM ANALYZE the replica, as autovacuum would after the syncs, so it does not
    compete with the read measurements for this machine's two cores."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) patients, payments")


def run_reads(server: Server, size: Size, small: Dataset, url: str) -> dict[str, Any]:
    """Read latency on the replica at `url` (the chosen size) and on a fresh replica of S.

    Measured in one fresh child (a warm Lambda container, not a benchmark
    process full of verification data), the sizes taking turns, once both
    replicas are settled.
    """
    urls = {size.name: url}
    if size.name != "S":
        urls["S"] = server.create_database(f"{DATABASE}_s")
    try:
        if size.name != "S":
            _log("loading S (base day, then next day) for the read comparison")
            _migrate(urls["S"])
            for day in ("base", "next"):
                for entity in ENTITIES:
                    steps.in_child(steps.sync, urls["S"], entity, str(small.path(entity, day)))
        for each in urls.values():
            _settle(each)
        _log(f"reads at {', '.join(urls)}")
        return steps.in_child(steps.reads, urls)
    finally:
        if size.name != "S":
            server.drop_database(f"{DATABASE}_s")


_NOT_CODE = (":(exclude)bench/results",)  # what the benchmark itself writes


def _commit() -> str | None:
    """The checked-out commit (with "+changes" when the tree differs from it), None outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "bench", "layers", "functions", *_NOT_CODE],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def run_imports() -> dict[str, float]:
    """Median cold import of every function module, in a fresh interpreter each time."""
    layer = str(ROOT / "layers" / "paysync")
    results = {}
    for function_dir in sorted((ROOT / "functions").iterdir()):
        if (function_dir / "app.py").exists():
            runs = [steps.cold_import(str(function_dir), layer) for _ in range(IMPORT_RUNS)]
            results[function_dir.name] = statistics.median(runs)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paysync benchmark")
    parser.add_argument("--size", choices=sorted(SIZES), default="M")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--ids", choices=IDS, default="uuid", help="external id style (default: uuid)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    size = SIZES[args.size]
    _log(f"snapshots: size {size.name} ({size.patients} patients, {size.payments} payments), seed {args.seed}")
    dataset = ensure_dataset(size, args.seed, ids=args.ids)
    small = dataset if size.name == "S" else ensure_dataset(SIZES["S"], args.seed, ids=args.ids)
    # First, while the machine is quiet: import times are easily disturbed.
    _log("cold imports")
    imports = run_imports()
    problems: list[str] = []
    results: dict[str, Any] = {
        "size": size.name,
        "patients": size.patients,
        "payments": size.payments,
        "seed": args.seed,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine(),
        "files": dataset.manifest,
        "imports": imports,
    }
    with bench_server() as server:
        results["database"] = server.describe()
        _log(f"database: {server.kind}, {results['database']['version'].split(' on ')[0]}")
        url = server.create_database(DATABASE)
        try:
            _migrate(url)
            results["strict_floor"], results["floor"] = {}, {}
            for entity in ENTITIES:
                _log(f"strict floor: {entity}")
                floor = steps.in_child(steps.strict_floor, url, entity, str(dataset.path(entity)))
                results["strict_floor"][entity] = floor
                _log(f"  parse+encode {floor['parse_wall_s']:.2f} s + COPY {floor['copy_wall_s']:.2f} s")
                _log(f"COPY floor: {entity}")
                results["floor"][entity] = steps.in_child(steps.copy_floor, url, entity, str(dataset.path(entity)))
            results["syncs"], results["verification"], results["history_cost"] = run_syncs(
                server, url, dataset, problems
            )
            results["reads"] = run_reads(server, size, small, url)
        finally:
            if not args.keep:
                server.drop_database(DATABASE)
    results["problems"] = problems

    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{size.name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    every_size = report.load_results(RESULTS_DIR)
    print(report.render_size(results, every_size))
    document = ROOT / "BENCHMARKS.md"
    previous = document.read_text() if document.exists() else ""
    document.write_text(report.render_document(every_size, previous))
    _log(f"wrote {RESULTS_DIR / (size.name + '.json')} and BENCHMARKS.md")
    if problems:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
