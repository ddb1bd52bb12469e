"""Configuration: one settings model, read from the environment once."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
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
    upload_url_expires_seconds: int = Field(default=900, ge=60, le=43200)

    # Deletion guard: refuse to delete more than this fraction of the live
    # rows of a table holding at least `guard_min_rows` live rows, unless forced.
    delete_guard_ratio: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    delete_guard_min_rows: int = Field(default=100, ge=0)
    # Largest body POST /patients and POST /payments accept inline (Lambda's 6 MB limit).
    max_inline_snapshot_bytes: int = Field(default=6_000_000, ge=1)
    # Bounds on any snapshot (inline, S3, CLI): its uncompressed size, its record count, and
    # how much a gzip snapshot may expand. 10M payments with UUID ids are about 1.2 GB of JSON.
    max_snapshot_bytes: int = Field(default=5_000_000_000, ge=1)
    max_snapshot_records: int = Field(default=50_000_000, ge=1)
    max_compression_ratio: int = Field(default=50, ge=1)
    # Memory PostgreSQL may use for the merge's hashes and sorts (SET LOCAL work_mem).
    merge_work_mem: str = "256MB"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    names = Settings.model_fields.keys()
    values = {name: os.environ[name.upper()] for name in names if os.environ.get(name.upper())}
    return Settings.model_validate(values)
