"""The deletion guard: a snapshot may not wipe the replica unless the sync is forced.

Three rules, checked under the sync's advisory lock, in this order:

1. empty: an empty snapshot over a table with live rows is refused at any table
   size (a snapshot that replaces every record of a small table is not: below the
   minimum size the ratio does not apply, and a non-empty snapshot is not a
   truncated upload);
2. ratio: a snapshot that would delete more than `delete_guard_ratio` of the
   live rows of a table holding at least `delete_guard_min_rows` is refused;
3. rolling window: no run of consecutive applied syncs within the last
   `delete_guard_window_hours`, ending with this one, may delete more than that
   ratio of the live rows the table held before the first of them (same minimum
   size). The window's first sync gives the rule as usually stated (deletions of
   the window against the live count at its start); later starting points close
   the gaps of a table loaded or inflated within the window. Dry runs and refused
   syncs delete nothing and do not count. A forced sync starts a new window: its
   deletions, and the syncs before it, no longer count.

A refusal's message states the figures and how to override it from the path the
snapshot came through (each path has its own way to force).
"""

from __future__ import annotations

from typing import Any

from paysync.config import get_settings
from paysync.dal import guard as dal_guard
from paysync.dal.db import Connection
from paysync.errors import DeletionGuardTriggered, ForceNotAllowed
from paysync.models import Source
from paysync.records import Entity

FORCED_UPLOAD_ROUTE = "POST /forced/uploads"


def forced_route(entity: Entity) -> str:
    """The route that syncs `entity` forced (IAM grants it apart from the plain route)."""
    return f"POST /forced/{entity}"


def override_hint(source: Source, entity: Entity) -> str:
    """How a refused snapshot from `source` can be applied anyway."""
    if source == "s3":
        return f"upload it again through {FORCED_UPLOAD_ROUTE}"
    if source == "cli":
        return "repeat with --force"
    if get_settings().allow_force_parameter:
        return f"repeat through {forced_route(entity)} (or with ?force=true)"
    return f"repeat through {forced_route(entity)}"


def check_force_parameter(entity: Entity, force: bool) -> None:
    """403 when a plain sync route asks to force and this deployment only forces on the forced routes."""
    if force and not get_settings().allow_force_parameter:
        raise ForceNotAllowed(
            f"force=true is not accepted on POST /{entity} here; forcing a sync is a separate permission:"
            f" send the snapshot to {forced_route(entity)} instead"
        )


def check(connection: Connection, entity: Entity, source: Source, received: int, deleted: int, live: int) -> None:
    """Raise DeletionGuardTriggered when an unforced sync would delete too much.

    `received` is the snapshot's record count, `deleted` the live rows it would delete,
    `live` the table's live rows before it.
    """
    settings = get_settings()
    ratio, min_rows = settings.delete_guard_ratio, settings.delete_guard_min_rows
    if deleted == 0:
        return
    share = f"{ratio:.0%}"
    if received == 0:
        _refuse(
            f"the snapshot is empty: it would delete {deleted} of {live} live {entity} (all of them)",
            {"rule": "empty", "deleted": deleted, "liveBefore": live},
            source,
            entity,
        )
    if live >= min_rows and deleted > live * ratio:
        _refuse(
            f"the snapshot would delete {deleted} of {live} live {entity} (more than {share})",
            {"rule": "ratio", "deleted": deleted, "liveBefore": live, "maxRatio": str(ratio)},
            source,
            entity,
        )
    hours = settings.delete_guard_window_hours
    if hours == 0:
        return
    streak = dal_guard.worst_streak(connection, entity, hours, live, deleted, ratio, min_rows)
    if streak is not None:
        total = streak.deleted + deleted
        _refuse(
            f"the snapshot would delete {deleted} {entity}; with the {streak.deleted} deleted by the"
            f" {streak.syncs} sync(s) applied since {streak.started:%Y-%m-%d %H:%M:%S %Z} (within the last"
            f" {hours} hours) that makes {total} of the {streak.live_before} live before them (more than {share})",
            {
                "rule": "window",
                "deleted": deleted,
                "liveBefore": live,
                "maxRatio": str(ratio),
                "windowHours": hours,
                "windowSyncs": streak.syncs,
                "windowDeleted": streak.deleted,
                "windowLiveBefore": streak.live_before,
                "windowStart": streak.started.isoformat(),
            },
            source,
            entity,
        )


def _refuse(reason: str, detail: dict[str, Any], source: Source, entity: Entity) -> None:
    hint = override_hint(source, entity)
    raise DeletionGuardTriggered(
        f"{reason}; nothing was applied. Check the snapshot, or {hint} to apply it.",
        [{**detail, "override": hint}],
    )
