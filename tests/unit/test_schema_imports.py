"""The SQLAlchemy models (paysync.schema) are for the migrations and the tests only: the API and
sync functions' layer has no SQLAlchemy, and importing it would slow every cold start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Only the deploy-time migrate function loads the migrations layer (SQLAlchemy, Alembic, Mako).
HANDLERS = sorted(p for p in (ROOT / "functions").glob("*/app.py") if p.parent.name != "migrate")
MIGRATION_ONLY = ["paysync.schema", "sqlalchemy", "alembic", "mako"]

# Imports each handler module in turn in one fresh interpreter; prints, per handler file, the
# migration-only modules its import loaded.
PROBE = """
import importlib.util, json, sys
paths, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found = {}
for index, path in enumerate(paths):
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location(f"handler_{index}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    new = set(sys.modules) - before
    found[path] = sorted(m for m in new if m in forbidden or m.split(".")[0] in forbidden)
print(json.dumps(found))
"""


def migration_modules_loaded(handlers: list[Path]) -> dict[str, list[str]]:
    """handler file -> the migration-only modules that importing it loaded (fresh interpreter)."""
    process = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([str(p) for p in handlers]), json.dumps(MIGRATION_ONLY)],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'layers' / 'paysync'}:{ROOT}", "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_no_handler_but_migrate_imports_the_models_or_sqlalchemy() -> None:
    assert len(HANDLERS) >= 9
    assert migration_modules_loaded(HANDLERS) == {str(path): [] for path in HANDLERS}


def test_the_check_sees_a_handler_that_imports_the_models(tmp_path: Path) -> None:
    leaky = tmp_path / "app.py"
    leaky.write_text("import paysync.schema\n")
    found = migration_modules_loaded([HANDLERS[0], leaky])
    assert found[str(HANDLERS[0])] == []
    assert {"paysync.schema", "sqlalchemy"} <= set(found[str(leaky)])
