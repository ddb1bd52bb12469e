"""The layers are installed from hash-locked requirements: each lock must be exactly what its
requirements.txt pins (regenerate with `make lock` after editing a requirements.txt)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

# (requirements, lock, packages that must never be in the lock)
LOCKS = [
    (
        ROOT / "layers/paysync/requirements.txt",
        ROOT / "layers/paysync/requirements.lock",
        # The Lambda runtime provides boto3; the migration tools have a layer of their own.
        {"boto3", "botocore", "s3transfer", "urllib3", "sqlalchemy", "alembic", "mako"},
    ),
    (ROOT / "layers/migrations/requirements.txt", ROOT / "layers/migrations/requirements.lock", {"boto3", "botocore"}),
    (ROOT / "smoke/lambda-runtime.txt", ROOT / "smoke/lambda-runtime.lock", set()),
]
IDS = [str(lock.relative_to(ROOT)) for _, lock, _ in LOCKS]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name[extras]==version` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        found[canonical(match.group(1))] = match.group(3)
    return found


def lock_entries(path: Path) -> dict[str, tuple[str, int, set[str]]]:
    """name -> (version, number of hashes, the names it is required by) of a pip-compile lock."""
    entries: dict[str, tuple[str, int, set[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        entry = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if entry:
            current = canonical(entry.group(1))
            entries[current] = (entry.group(2), 0, set())
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes, via = entries[current]
            entries[current] = (version, hashes + 1, via)
        elif current and re.match(r"^\s+#\s+(via\s+)?[-A-Za-z0-9_.]", line):
            name = re.sub(r"^\s+#\s+(via\s+)?", "", line).strip()
            if name != "via":
                entries[current][2].add(name if name.startswith("-r ") else canonical(name))
    return entries


@pytest.mark.parametrize(("requirements", "lock", "banned"), LOCKS, ids=IDS)
def test_lock_pins_what_requirements_pin(requirements: Path, lock: Path, banned: set[str]) -> None:
    wanted = pins(requirements)
    locked = lock_entries(lock)

    drift = {name: (version, locked.get(name, ("missing",))[0]) for name, version in wanted.items()}
    assert {n: v for n, v in drift.items() if v[0] != v[1]} == {}, f"run `make lock`: {lock.name} drifted"


@pytest.mark.parametrize(("requirements", "lock", "banned"), LOCKS, ids=IDS)
def test_every_locked_package_is_needed_and_hashed(requirements: Path, lock: Path, banned: set[str]) -> None:
    wanted = pins(requirements)
    locked = lock_entries(lock)

    assert not banned & set(locked), f"{lock.name} must not ship {sorted(banned & set(locked))}"
    for name, (version, hashes, via) in locked.items():
        assert hashes >= 1, f"{name}=={version} has no hash"
        # Required by requirements.txt or by another locked package: nothing left over from an old pin.
        parents = {p for p in via if p.startswith("-r ")} | (via & set(locked))
        assert parents or name in wanted, f"{name} is locked but nothing requires it any more: run `make lock`"
        if any(p.startswith("-r ") for p in via):
            assert name in wanted, f"{name} is locked as a direct requirement that requirements.txt dropped"


def test_layers_install_from_their_locks_with_hashes() -> None:
    for layer in ("paysync", "migrations"):
        makefile = (ROOT / "layers" / layer / "Makefile").read_text()
        assert "--require-hashes" in makefile
        assert "-r requirements.lock" in makefile
