"""Tables, targets and BENCHMARKS.md from the saved results of each size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIZE_ORDER = ("S", "R", "M", "L")
READ_HANDLERS = ("get_patients", "get_payments", "get_syncs", "get_stats")
PHASES = ("first load", "identical re-sync", "next-day re-sync")
# Targets, judged at M on a 2-core machine against the strict floor; printed for every size.
RATIO_TARGETS = {"first load": 5.0, "identical re-sync": 2.5, "next-day re-sync": 4.0}
ZERO_HISTORY_PHASES = ("first load", "identical re-sync")
HISTORY_COST_LIMIT = 1.15
MAX_RSS_MB = 300.0
L_RSS_GROWTH = 1.2
LAMBDA_LIMIT_S = 900.0
# Read targets per group of cases (see bench.reads): p50 and p99 in ms.
READ_LIMITS = {"lists": (5.0, 20.0), "history and analytics": (20.0, 50.0)}
READ_GROWTH = 1.5
READ_DURING_SYNC_P99_MS = 50.0
IMPORT_LIMIT_S = 0.6
BREAKDOWN_ROWS = 10  # statement groups shown per table; the rest summed in one row


def load_results(directory: Path) -> dict[str, dict[str, Any]]:
    """Size name -> its latest saved results."""
    found = {}
    for name in SIZE_ORDER:
        path = directory / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float, base: float | None) -> float | None:
    return None if not base else value / base


def _phase_wall(results: dict[str, Any], phase: str) -> float:
    return sum(sync["wall_s"] for sync in results["syncs"] if sync["phase"] == phase)


def _floor_wall(results: dict[str, Any]) -> float:
    return sum(floor["wall_s"] for floor in results["floor"].values())


def _strict_wall(results: dict[str, Any], entity: str | None = None) -> float | None:
    """The strict floor (parse + encode, then COPY: the sum) of one entity or of both; None in
    results saved before it was measured."""
    strict = results.get("strict_floor")
    if not strict:
        return None
    return sum(floor["wall_s"] for name, floor in strict.items() if entity in (None, name))


def _revision(results: dict[str, Any]) -> str:
    return f"{results['date'][:10]}, commit {results.get('commit') or 'unknown'}"


def _peak_rss(results: dict[str, Any]) -> float:
    return max(sync["peak_rss_mb"] for sync in results["syncs"])


def floor_table(results: dict[str, Any]) -> str:
    strict, old = results.get("strict_floor", {}), results["floor"]
    rows = []
    for entity, step in old.items():
        floor = strict.get(entity)
        rows.append(
            [
                entity,
                f"{step['rows']:,}",
                _num(floor and floor["parse_wall_s"]),
                _num(floor and floor["copy_wall_s"]),
                f"**{_num(floor and floor['wall_s'])}**",
                _num(floor and floor["copy_text_bytes"] / 1e6, 1),
                _num(floor and floor["server_cpu_s"]),
                _num(floor and floor["peak_rss_mb"], 0),
                _num(step["wall_s"]),
                _num(_ratio(step["wall_s"], floor and floor["wall_s"])),
            ]
        )
    header = [
        "snapshot",
        "rows",
        "strict: parse + encode s",
        "strict: COPY s",
        "strict floor s (sum)",
        "COPY text MB",
        "strict: PostgreSQL CPU s",
        "strict: peak RSS MB",
        "COPY floor s",
        "COPY floor / strict",
    ]
    return _table(header, rows)


def sync_table(results: dict[str, Any]) -> str:
    floor = results["floor"]
    rows = []
    for sync in results["syncs"]:
        entity = sync["entity"]
        rows.append(
            [
                f"{sync['phase']} {entity}",
                f"{sync['rows']:,}",
                _num(sync["wall_s"]),
                f"{sync['rows'] / sync['wall_s']:,.0f}",
                _num(_ratio(sync["wall_s"], _strict_wall(results, entity))),
                _num(sync["wall_s"] / floor[entity]["wall_s"]),
                _num(sync["cpu_s"]),
                _num(sync["server_cpu_s"]),
                _num(sync["peak_rss_mb"], 0),
                f"{sync['rows_written']:,}",
                f"{sync['history_rows']:,}" if "history_rows" in sync else "-",
                _reads_during(sync),
            ]
        )
    for phase in PHASES:
        wall = _phase_wall(results, phase)
        strict = _ratio(wall, _strict_wall(results))
        old = _num(wall / _floor_wall(results))
        rows.append([f"**{phase}, both**", "", f"**{_num(wall)}**", "", f"**{_num(strict)}**", old, *[""] * 6])
    header = ["step", "rows", "wall s", "rows/s", "x strict floor", "x COPY floor", "Python CPU s"]
    header += ["PostgreSQL CPU s", "peak RSS MB", "rows written", "history rows", "reads during it: p99 / max ms"]
    return _table(header, rows)


def breakdown_table(results: dict[str, Any], entity: str) -> str | None:
    """Per statement group of one entity's syncs: wall, Python CPU and PostgreSQL CPU in each phase."""
    syncs = [sync for sync in results["syncs"] if sync["entity"] == entity and "statements" in sync]
    if not syncs:
        return None
    totals: dict[str, float] = {}
    for sync in syncs:
        for name, group in sync["statements"].items():
            totals[name] = totals.get(name, 0.0) + group["wall_s"]
    shown = sorted(totals, key=lambda name: -totals[name])[:BREAKDOWN_ROWS]
    rows = []
    for name in [*shown, "rest"]:
        row = [name]
        for sync in syncs:
            groups = sync["statements"]
            picked = [group for key, group in groups.items() if (key == name if name != "rest" else key not in shown)]
            if not picked:
                row += ["-"]
                continue
            wall, cpu = sum(g["wall_s"] for g in picked), sum(g["cpu_s"] for g in picked)
            server = sum(g["server_cpu_s"] for g in picked)
            row.append(f"{wall:.2f} / {cpu:.2f} / {server:.2f}")
        rows.append(row)
    rows.append(["**step total**"] + [_sync_totals(sync) for sync in syncs])
    return _table(["statement group", *(f"{sync['phase']}: wall / Py / PG s" for sync in syncs)], rows)


def _sync_totals(sync: dict[str, Any]) -> str:
    return f"**{sync['wall_s']:.2f} / {sync['cpu_s']:.2f} / {_num(sync['server_cpu_s'])}**"


def history_cost_table(results: dict[str, Any]) -> str | None:
    cost = results.get("history_cost")
    if not cost:
        return None
    rows = []
    for number, run in enumerate(cost["runs"], 1):
        steps = run["steps"]
        rows.append(
            [
                number,
                "on" if run["keep_history"] else "off (KEEP_HISTORY=false)",
                _num(steps["patients"]["wall_s"]),
                _num(steps["payments"]["wall_s"]),
                _num(run["wall_s"]),
                f"{run['history_rows']:,}",
                "OK" if not run["mismatches"] else f"{len(run['mismatches'])} mismatches",
                _num(run["clone_s"], 1),
            ]
        )
    rows.append(
        [
            "",
            "**median on / median off**",
            "",
            "",
            f"**{cost['with_history_s']:.2f} / {cost['without_history_s']:.2f} = {cost['ratio']:.2f}x**",
            "",
            "",
            "",
        ]
    )
    header = ["run", "history", "patients s", "payments s", "next day s", "history rows", "verified", "clone s"]
    return _table(header, rows)


def _reads_during(sync: dict[str, Any]) -> str:
    reads = sync.get("reads_during")
    if not reads or not reads["calls"]:
        return "-"
    failed = f", {reads['errors']} failed" if reads["errors"] else ""
    locked = (
        f"; locked in {reads['exclusively_locked']}/{reads['lock_checks']} checks" if "lock_checks" in reads else ""
    )
    if reads.get("cpu_pressure_pct") is not None:
        locked += f"; CPU pressure {reads['cpu_pressure_pct']:g}%"
    return f"{_num(reads['p99_ms'], 1)} / {_num(reads['max_ms'], 1)} ({reads['calls']} calls{failed}{locked})"


def _group(case: dict[str, Any]) -> str:
    return case.get("group", "lists")


def reads_table(results: dict[str, Any], group: str) -> str | None:
    size = results["size"]
    reads = results["reads"]
    small = reads.get("S", reads[size])
    header = ["read (warm, in-process handler)", "p50 ms S", "p99 ms S"]
    if size != "S":
        header += [f"p50 ms {size}", f"p99 ms {size}", f"p50 {size}/S"]
    header.append(f"rows/call ({size})")
    rows = []
    for case, at_size in reads[size].items():
        if _group(at_size) != group:
            continue
        row = [case, _num(small[case]["p50_ms"]), _num(small[case]["p99_ms"])]
        if size != "S":
            row += [_num(at_size["p50_ms"]), _num(at_size["p99_ms"]), _num(at_size["p50_ms"] / small[case]["p50_ms"])]
        rows.append([*row, _num(at_size["rows_per_call"], 0)])
    return _table(header, rows) if rows else None


def imports_table(results: dict[str, Any]) -> str:
    return _table(
        ["function module", "cold import s (median of 9)"],
        [[name, _num(seconds, 3)] for name, seconds in results["imports"].items()],
    )


def targets(results: dict[str, Any], every_size: dict[str, dict[str, Any]]) -> list[list[str]]:
    """[target, measured, PASS/FAIL/n/a] for one size's results."""
    rows = []

    def judge(name: str, measured: str, passed: bool | None) -> None:
        rows.append([name, measured, "n/a" if passed is None else ("PASS" if passed else "FAIL")])

    strict = _strict_wall(results)
    for phase, limit in RATIO_TARGETS.items():
        wall = _phase_wall(results, phase)
        ratio = _ratio(wall, strict)
        old = f"; {wall / _floor_wall(results):.2f}x COPY floor"
        measured = "no strict floor" if ratio is None else f"{ratio:.2f}x ({wall:.2f} s / {strict:.2f} s{old})"
        judge(f"{phase} ≤ {limit:g}x strict floor", measured, None if ratio is None else ratio <= limit)
    written = sum(sync["rows_written"] for sync in results["syncs"] if sync["phase"] == "identical re-sync")
    judge("identical re-sync writes 0 rows", f"{written:,} rows", written == 0)
    for phase in ZERO_HISTORY_PHASES:
        synced = [sync for sync in results["syncs"] if sync["phase"] == phase and "history_rows" in sync]
        if synced:
            history = sum(sync["history_rows"] for sync in synced)
            judge(f"{phase} writes 0 history rows", f"{history:,} rows", history == 0)
    cost = results.get("history_cost")
    if cost:
        runs = len(cost["runs"])
        measured = f"{cost['ratio']:.2f}x (medians of {runs // 2} + {runs - runs // 2} clone runs)"
        # Without history means no history row written; otherwise both sides kept history.
        compared = not cost["history_rows_without"]
        if not compared:
            measured += f"; KEEP_HISTORY=false still wrote {cost['history_rows_without']:,} history rows"
        judge(
            f"next day with history ≤ {HISTORY_COST_LIMIT}x without",
            measured,
            cost["ratio"] <= HISTORY_COST_LIMIT if compared else None,
        )
    peak = _peak_rss(results)
    judge(f"sync peak RSS ≤ {MAX_RSS_MB:g} MB", f"{peak:.0f} MB", peak <= MAX_RSS_MB)
    medium, large = every_size.get("M"), every_size.get("L")
    if results["size"] in ("M", "L"):
        if medium is None or large is None:
            judge(f"peak RSS at L ≤ {L_RSS_GROWTH}x M", "needs both M and L results", None)
        else:
            growth = _peak_rss(large) / _peak_rss(medium)
            measured = f"{growth:.2f}x ({_peak_rss(large):.0f} MB at L, {_revision(large)}; "
            measured += f"{_peak_rss(medium):.0f} MB at M, {_revision(medium)})"
            # Judged only between runs of the same code: the baseline (interpreter, imports) moves with it.
            same = medium.get("commit") is not None and medium.get("commit") == large.get("commit")
            if not same:
                measured += "; not judged: different code"
            judge(f"peak RSS at L ≤ {L_RSS_GROWTH}x M", measured, growth <= L_RSS_GROWTH if same else None)
    slowest = max(results["syncs"], key=lambda sync: sync["wall_s"])
    judge(
        f"longest sync step ≤ {LAMBDA_LIMIT_S:g} s (judged at L)",
        f"{slowest['wall_s']:.0f} s ({slowest['phase']} {slowest['entity']})",
        slowest["wall_s"] <= LAMBDA_LIMIT_S if results["size"] == "L" else None,
    )
    for sync in results["syncs"]:
        during = sync.get("reads_during")
        if during is None:
            continue
        name = f"reads during {sync['phase']} {sync['entity']}: p99 ≤ {READ_DURING_SYNC_P99_MS:g} ms"
        if not during["calls"]:
            judge(name, "no read completed", None)
            continue
        failed = f", {during['errors']} failed" if during["errors"] else ""
        judge(
            name,
            f"{during['p99_ms']:.1f} ms (max {during['max_ms']:.1f} ms, {during['calls']} calls{failed})",
            during["p99_ms"] <= READ_DURING_SYNC_P99_MS and not during["errors"],
        )
    reads = results["reads"]
    for group, (p50_limit, p99_limit) in READ_LIMITS.items():
        for size in sorted(reads, key=SIZE_ORDER.index):
            cases = [case for case in reads[size].values() if _group(case) == group]
            if not cases:
                continue
            worst_p50 = max(case["p50_ms"] for case in cases)
            worst_p99 = max(case["p99_ms"] for case in cases)
            judge(
                f"{group} reads at {size}: every p50 ≤ {p50_limit:g} ms",
                f"worst {worst_p50:.2f} ms",
                worst_p50 <= p50_limit,
            )
            judge(
                f"{group} reads at {size}: every p99 ≤ {p99_limit:g} ms",
                f"worst {worst_p99:.2f} ms",
                worst_p99 <= p99_limit,
            )
        if results["size"] != "S":
            growths = [
                case["p50_ms"] / reads["S"][name]["p50_ms"]
                for name, case in reads[results["size"]].items()
                if _group(case) == group and name in reads["S"]
            ]
            if growths:
                growth = max(growths)
                judge(
                    f"{group} read p50 at {results['size']} ≤ {READ_GROWTH}x p50 at S",
                    f"worst {growth:.2f}x",
                    growth <= READ_GROWTH,
                )
    for name in READ_HANDLERS:
        seconds = results["imports"].get(name)
        if seconds is not None:
            judge(f"{name} cold import ≤ {IMPORT_LIMIT_S} s", f"{seconds:.3f} s", seconds <= IMPORT_LIMIT_S)
    failed = [mismatch for check in results["verification"] for mismatch in check["mismatches"]]
    failed += results.get("problems", [])
    checks = sum(len(check["checks"]) for check in results["verification"])
    if cost:
        checks += sum(run["verified_checks"] for run in cost["runs"])
    judge("replicas verified against the snapshots", f"{checks} checks, {len(set(failed))} mismatches", not failed)
    return rows


def render_size(results: dict[str, Any], every_size: dict[str, dict[str, Any]]) -> str:
    """The markdown section of one size: setup, syncs, reads, imports, targets."""
    machine, database = results["machine"], results["database"]
    files = results["files"]["bytes"]
    megabytes = {name: size / 1e6 for name, size in files.items()}
    settings = ", ".join(
        f"{name}={database[name]}"
        for name in ("shared_buffers", "work_mem", "max_wal_size", "synchronous_commit")
        if name in database
    )
    parts = [
        f"## Size {results['size']}: {results['patients']:,} patients, {results['payments']:,} payments",
        "",
        f"Run {results['date']} (seed {results['seed']}) on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram_gb']} GB RAM, Python {machine['python']}; {database['version'].split(',')[0]} "
        f"({database['kind']}; {settings}). Snapshot files: "
        + ", ".join(f"{name} {mb:,.1f} MB" for name, mb in megabytes.items())
        + ".",
        "",
        "### Floors (what this machine ingests at best)",
        "",
        floor_table(results),
        "",
        "### Sync (the reconcile path the Lambdas and the CLI call; each step in a fresh process)",
        "",
        sync_table(results),
        "",
    ]
    for entity in ("payments", "patients"):
        table = breakdown_table(results, entity)
        if table:
            parts += [f"### Where the time goes: {entity} syncs, per statement group", "", table, ""]
    table = history_cost_table(results)
    if table:
        parts += ["### History's cost: the next day with and without history (clones of the replica)", "", table, ""]
    parts += ["### Reads", ""]
    for group in READ_LIMITS:
        table = reads_table(results, group)
        if table:
            parts += [f"{group.capitalize()}:", "", table, ""]
    parts += [
        "### Cold import (fresh interpreter)",
        "",
        imports_table(results),
        "",
        "### Targets",
        "",
        _table(["target", "measured", "result"], targets(results, every_size)),
        "",
    ]
    return "\n".join(parts)


HEADER = """# Benchmarks

Produced by `make bench SIZE=S|M|L` (default M); each run saves
`bench/results/<SIZE>.json` and rewrites this file from every saved size.
Snapshots are generated deterministically by `bench/generate.py` (cached in
`bench/data/`, gitignored; UUID-like external ids unless `--ids numeric`).
The targets are judged at M (and at L for the Lambda time limit and the
memory growth); every size prints them. Size R (100,000 patients, 300,000
payments) is the smallest where both first loads take the bulk path, to
check reads during them without the cost of M.

How to read the tables:

- **Strict floor**: what this machine ingests at best, with no paysync code
  on the path, measured in the same run as everything else, in two stages
  one after the other: *parse + encode* reads the snapshot in blocks of whole
  lines of about 2 MB (the generator writes one record per line), parses each
  block with the standard library's C JSON parser and writes every record as
  a line of COPY text to a temporary file (memory holds one block, at any
  size); *COPY* then sends that file with psycopg 3 (libpq, like psql's
  `\\copy`) into an UNLOGGED table without indexes. The strict floor is the
  **sum** of the two stages, not a pipeline of them. **x strict floor** is a
  step's wall time over the strict floor of the same entity; the targets
  compare each phase (patients + payments) with both strict floors together.
- **COPY floor** (kept as an extra column): paysync's own streaming reader
  (the validating parser the syncs use) feeding COPY into an UNLOGGED table
  without indexes, in one pipeline. Its distance from the strict floor is
  what paysync's parser costs over the C parser.
- **Sync steps** run `paysync.reconcile.reconcile_snapshot` (pg8000, one
  transaction), the function the Lambdas and the CLI call, each in a fresh
  child process: wall time, the Python process's CPU, the PostgreSQL
  backend's CPU (from /proc; parallel workers not included), the child's
  peak RSS (VmHWM: interpreter and imports included), the rows PostgreSQL
  really wrote to `patients` + `payments` (pg_stat_user_tables deltas:
  inserts + updates + deletes; a payments sync also rewrites the totals of
  the patients whose payments moved) and the **history rows** it wrote to
  `patient_versions` + `payment_versions` (inserts). Targets: first load ≤ 5x
  the strict floor, next-day re-sync ≤ 4x, identical re-sync ≤ 2.5x writing
  no row; no history row from a first load or an identical re-sync; peak RSS
  ≤ 300 MB at every size and at L at most 1.2x M (judged when M and L
  results of the same commit are saved); the longest single sync step at L
  well within the 900 s Lambda limit.
- **Where the time goes**: inside each sync child every statement paysync
  sends (pg8000's `Connection.run`) is timed: wall time, the child's CPU
  and the PostgreSQL backend's CPU (/proc, in 10 ms ticks), summed per
  statement group. A group is named by the statement's leading keywords and
  target table (`COPY stage_payments`, `INSERT payment_versions`,
  `CREATE diff_payments`, `UPDATE payments`,
  `UPDATE patients (totals)`, `SELECT stage_payments (duplicate check)`,
  `COMMIT`…); statements it does not recognise go to "other". The COPY
  group's Python CPU is the parse: the snapshot is read while COPY streams.
  "(Python between statements)" is the step's time outside any statement.
  Each cell is wall / Python CPU / PostgreSQL CPU in seconds; the ten
  slowest groups are shown, the others summed in "rest".
- **History's cost**: after the identical re-sync, the replica is cloned
  (`CREATE DATABASE … TEMPLATE`) and the next day's patients + payments
  syncs run on the clone, once with history and once with
  `KEEP_HISTORY=false`, in two pairs whose order alternates (off, on, on,
  off; one pair at L), each on a fresh clone, each clone verified against
  the next day's snapshots. The ratio is the median with history over the median without
  (wall time, patients + payments); target ≤ 1.15x. When the syncs without
  history still write history rows (the setting is not honoured), the
  comparison is reported but not judged.
- **Reads during it**: while each sync step runs, a thread of the benchmark
  process calls the real `get_patients`, `get_payments` and `get_syncs`
  handlers on its own connection (first pages, a total range, 20 patients'
  payments, the sync list), one call every 20 ms, and times each: p99 and
  max in ms, and the number of calls. A read waiting for a sync's lock
  shows as a long call. Between calls it checks pg_locks: "locked in k/n
  checks" counts the checks that found `patients`, `payments` or
  `sync_runs` locked ACCESS EXCLUSIVE (every read would wait), which tells
  a lock stall from a CPU shared with the sync; "CPU pressure" is the share
  of the last 10 s in which a runnable task waited for a CPU (Linux PSI) at
  the step's end: near 100 % the machine is oversubscribed and latencies
  measure the queue for the cores. A read that takes longer than the 20 ms
  between calls also stands for the calls steady traffic would have sent
  meanwhile (each waiting that much less), so one read stalled 5 s counts as
  ~250 slow reads. Target: p99 ≤ 50 ms during every step, first loads
  included.
- After every phase the replica is verified against the JSON: live row
  counts, a checksum of every replicated column, every payment's patient
  link, and every patient's total and count recomputed from the file.
- **Reads** call the real handlers in-process with API Gateway proxy
  events, in one fresh process: 300 timed calls per case and size, cycling
  through up to 50 different requests, in rounds of 50 that alternate
  between S and the chosen size (5 untimed warm-up calls after each
  switch), so that drift in the machine's speed hits both sizes alike. Both
  replicas hold the base day and then the next day (so rows have history)
  and get a `VACUUM (ANALYZE)` first, so that autovacuum catching up with
  the syncs does not compete for the two cores. *Lists* (`get_patients`,
  `get_payments`): targets p50 ≤ 5 ms and p99 ≤ 20 ms. *History and
  analytics* (`get_stats`: /stats, /stats?top=100, /stats/histogram,
  /stats/history; `get_patients`: one patient, the same `as_of` a moment
  between the first load and the next day, its history; `get_payments`: a
  payment's history; `get_syncs`: the next-day payments sync's changes,
  first page, filtered to updated payments, and pages from a cursor), on
  rows the next day really changed: targets p50 ≤ 20 ms and p99 ≤ 50 ms.
  For both, the chosen size's p50 at most 1.5x S's.
- **Cold import**: `import app` of each function in a fresh interpreter
  (bytecode cached), median of 9, measured first while the machine is idle.

The machine is a 2-core VM whose speed drifts by up to 2x between runs
(neighbours); the ratios to the floor and between sizes are stable, the
absolute milliseconds of one run are not.
"""


# Sections of BENCHMARKS.md that `make bench` does not produce (measured by `make smoke`): kept as
# they are when the document is rewritten.
KEPT_SECTION = "## Cold import from the build"


def render_document(every_size: dict[str, dict[str, Any]], previous: str = "") -> str:
    """BENCHMARKS.md from the saved results, keeping the hand-made sections of `previous`."""
    document = HEADER + "\n" + "\n".join(render_size(results, every_size) for results in every_size.values())
    start = previous.find(KEPT_SECTION)
    if start >= 0:
        document = document.rstrip("\n") + "\n\n" + previous[start:]
    return document
