"""The settings model: environment text in, typed values out, bad values named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paysync.config import Settings, SettingsError, get_settings


def test_defaults_and_conversions() -> None:
    settings = Settings.from_values(
        {"delete_guard_ratio": "0.25", "delete_guard_min_rows": "7", "database_url": "postgresql://x/y"}
    )

    assert settings.delete_guard_ratio == Decimal("0.25")
    assert settings.delete_guard_min_rows == 7
    assert settings.database_url == "postgresql://x/y"
    assert (settings.db_port, settings.max_inline_snapshot_bytes, settings.merge_work_mem) == (5432, 6_000_000, "256MB")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("delete_guard_ratio", "1.5", "DELETE_GUARD_RATIO must lie between 0 and 1"),
        ("delete_guard_ratio", "-0.1", "DELETE_GUARD_RATIO must lie between 0 and 1"),
        ("delete_guard_ratio", "NaN", "DELETE_GUARD_RATIO must be a number"),
        ("delete_guard_ratio", "half", "DELETE_GUARD_RATIO must be a number"),
        ("delete_guard_min_rows", "-1", "DELETE_GUARD_MIN_ROWS must be at least 0"),
        ("delete_guard_min_rows", "1.5", "DELETE_GUARD_MIN_ROWS must be an integer"),
        ("upload_url_expires_seconds", "59", "UPLOAD_URL_EXPIRES_SECONDS must lie between 60 and 43200"),
        ("upload_url_expires_seconds", "43201", "UPLOAD_URL_EXPIRES_SECONDS must lie between 60 and 43200"),
        ("max_inline_snapshot_bytes", "0", "MAX_INLINE_SNAPSHOT_BYTES must be at least 1"),
        ("db_port", "postgres", "DB_PORT must be an integer"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_values({name: value})


def test_read_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELETE_GUARD_MIN_ROWS", "12")
    monkeypatch.setenv("SNAPSHOT_BUCKET", "")  # empty means unset
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert (settings.delete_guard_min_rows, settings.snapshot_bucket) == (12, None)
        assert "delete_guard_min_rows" in Settings.field_names()
    finally:
        get_settings.cache_clear()
