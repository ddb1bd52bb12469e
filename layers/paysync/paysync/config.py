"""Configuration: one settings model, read from the environment once.

A plain dataclass with explicit bounds: every Lambda function reads it on its first
request, and a validation library would add its own import time to each cold start.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value paysync cannot use."""


def _bounds(low: Any = None, high: Any = None) -> dict[str, Any]:
    return {"low": low, "high": high}


@dataclass(frozen=True)
class Settings:
    """Everything paysync reads from the environment (variable name = field name, upper case)."""

    # Local / CLI: a plain postgresql://user:pass@host:port/db URL.
    database_url: str | None = None
    # AWS: host + Secrets Manager secret ({"username", "password", ...}); TLS is always verified.
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "paysync"
    db_secret_arn: str | None = None

    snapshot_bucket: str | None = None
    s3_endpoint_url: str | None = None  # moto server locally; unset in AWS
    upload_url_expires_seconds: int = field(default=900, metadata=_bounds(60, 43200))

    # Deletion guard: refuse to delete more than this fraction of the live
    # rows of a table holding at least `guard_min_rows` live rows, unless forced.
    delete_guard_ratio: Decimal = field(default=Decimal("0.5"), metadata=_bounds(0, 1))
    delete_guard_min_rows: int = field(default=100, metadata=_bounds(0))
    # Rolling deletion guard: the applied syncs of this many hours together may delete at most
    # `delete_guard_ratio` of the live rows the table held when the window began (0 turns it off).
    delete_guard_window_hours: int = field(default=24, metadata=_bounds(0, 8760))
    # Whether POST /patients and POST /payments honour ?force=true. With false, only the
    # POST /forced/... routes can force, so IAM can grant forcing apart from syncing.
    allow_force_parameter: bool = True
    # Largest body POST /patients and POST /payments accept inline (Lambda's 6 MB limit).
    max_inline_snapshot_bytes: int = field(default=6_000_000, metadata=_bounds(1))
    # Bounds on any snapshot (inline, S3, CLI): its uncompressed size (an S3 object bigger than
    # this is refused before it is read), its record count, and how much a gzip snapshot may
    # expand. 10M payments with UUID ids are about 1.2 GB of JSON.
    max_snapshot_bytes: int = field(default=5_000_000_000, metadata=_bounds(1))
    max_snapshot_records: int = field(default=50_000_000, metadata=_bounds(1))
    max_compression_ratio: int = field(default=50, metadata=_bounds(1))
    # Row history: `paysync purge-history` deletes versions that ended more than this many days
    # ago (0: keep every version).
    history_retention_days: int = field(default=0, metadata=_bounds(0, 36500))
    # Whether a sync writes the versions it supersedes to <entity>_versions. With false, live rows
    # still name the sync and action that started their version (the changes feed lists them).
    keep_history: bool = True
    # Memory PostgreSQL may use for the merge's hashes and sorts (SET LOCAL work_mem).
    merge_work_mem: str = "256MB"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names (the environment variables are these, upper case)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_values(cls, values: dict[str, str]) -> Settings:
        """Settings from text values (missing ones keep their defaults); SettingsError names a bad one."""
        converted: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name in values:
                converted[spec.name] = _convert(spec, values[spec.name])
        return cls(**converted)


_KIND_WORDS = {"bool": "true or false", "int": "an integer", "Decimal": "a number"}


def _convert(spec: dataclasses.Field, text: str) -> Any:
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "str")
    name = spec.name.upper()
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind.startswith("int"):
            value: Any = int(text)
        elif kind.startswith("Decimal"):
            value = Decimal(text)
            if not value.is_finite():
                raise InvalidOperation
        else:
            return text
    except (ValueError, InvalidOperation):
        raise SettingsError(f"{name} must be {_KIND_WORDS.get(kind.split()[0], 'a number')}") from None
    low, high = spec.metadata.get("low"), spec.metadata.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(
            f"{name} must be at least {low}" if high is None else f"{name} must lie between {low} and {high}"
        )
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    values = {name: os.environ[name.upper()] for name in Settings.field_names() if os.environ.get(name.upper())}
    return Settings.from_values(values)
