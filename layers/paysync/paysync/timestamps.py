"""Strict parsing of client-stated times (RFC 3339 with an offset)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from paysync.errors import InvalidRequest

# ASCII digits only ([0-9], not \d, which also matches other scripts' digits);
# the offset is required: a time without one names no instant.
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))"
)
_DATE_TIME_PARTS = ("year", "month", "day", "hour", "minute", "second")
MIN_YEAR = 1970
# Clocks of clients, S3 and the database differ a little; a time further ahead is a mistake.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def parse_snapshot_time(raw: str, name: str = "snapshot_at", now: datetime | None = None) -> datetime:
    """An RFC 3339 time with offset (e.g. 2026-11-27T12:00:00.250+01:00) as an aware UTC datetime.

    Fractions beyond microseconds are cut; years before 1970, leap seconds and
    times more than five minutes in the future are refused (InvalidRequest).
    """
    match = _RFC3339.fullmatch(raw)
    if match is None:
        raise _invalid(
            name,
            "must be an RFC 3339 time with an offset, e.g. 2026-11-27T12:00:00Z (in a URL, write + as %2B)",
        )
    year, month, day, hour, minute, second = (int(match[part]) for part in _DATE_TIME_PARTS)
    if year < MIN_YEAR:
        raise _invalid(name, f"must be in the year {MIN_YEAR} or later")
    offset = timedelta(0)
    if match["sign"] is not None:
        off_hour, off_minute = int(match["off_hour"]), int(match["off_minute"])
        if off_hour > 23 or off_minute > 59:
            raise _invalid(name, "has an offset out of range (at most 23:59)")
        offset = timedelta(hours=off_hour, minutes=off_minute) * (-1 if match["sign"] == "-" else 1)
    microsecond = int((match["fraction"] or "0").ljust(6, "0")[:6])
    try:
        value = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=timezone(offset)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # month 13, February 30, hour 24, second 60, past 9999 …
        raise _invalid(name, f"is not a valid time ({exc})") from None
    if value > (now or datetime.now(UTC)) + MAX_CLOCK_SKEW:
        raise _invalid(name, "lies in the future")
    return value


def _invalid(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{name} {message}", [{"parameter": name, "message": message}])
