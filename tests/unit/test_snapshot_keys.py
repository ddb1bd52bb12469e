"""Keys issued by POST /uploads carry their issue time and sort in issue order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from paysync.uploads import entity_of_key, key_order, snapshot_key

ISSUED = datetime(2026, 11, 27, 9, 30, 15, 250_123, tzinfo=UTC)


def test_key_carries_milliseconds_and_a_uuid7():
    key = snapshot_key("payments", compressed=True, now=ISSUED)

    assert key.startswith("payments/2026/11/27/093015.250-")
    assert key.endswith(".json.gz")
    suffix = key.rsplit("-", 1)[1].removesuffix(".json.gz")
    assert len(suffix) == 32
    assert suffix[12] == "7"  # UUID version 7
    assert int(suffix[:12], 16) == int(ISSUED.timestamp() * 1000)  # its time is the key's millisecond
    assert entity_of_key(key) == "payments"


def test_key_time_is_utc_whatever_the_given_zone():
    local = ISSUED.astimezone(timezone(timedelta(hours=-5)))

    assert snapshot_key("patients", now=local).startswith("patients/2026/11/27/093015.250-")


@pytest.mark.parametrize(
    "later",
    [timedelta(microseconds=1), timedelta(microseconds=250), timedelta(milliseconds=1), timedelta(seconds=1)],
)
def test_order_follows_issue_time_within_and_across_milliseconds(later):
    first, second = snapshot_key("patients", now=ISSUED), snapshot_key("patients", now=ISSUED + later)

    assert key_order(first) < key_order(second)


def test_keys_issued_at_the_same_instant_differ():
    assert snapshot_key("patients", now=ISSUED) != snapshot_key("patients", now=ISSUED)


@pytest.mark.parametrize(
    "key",
    [
        "patients/a.json",
        "patients/2026/11/27/093015-0193b0f0a7e07000a000000000000000.json",  # no milliseconds
        "patients/2026/13/27/093015.250-0193b0f0a7e07000a000000000000000.json",  # month 13
        "patients/2026/11/27/093015.250-0193B0F0A7E07000A000000000000000.json",  # upper-case hex
        "patients/x/2026/11/27/093015.250-0193b0f0a7e07000a000000000000000.json",
        "Patients/2026/11/27/093015.250-0193b0f0a7e07000a000000000000000.json",
    ],
)
def test_other_keys_have_no_issue_order(key):
    assert key_order(key) is None
