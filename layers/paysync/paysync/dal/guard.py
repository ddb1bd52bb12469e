"""SQL for the deletion guard: what the recent applied syncs of an entity deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from paysync.dal.db import Connection
from paysync.records import Entity


@dataclass(frozen=True)
class Streak:
    """Consecutive applied syncs of the window, from `started` up to now, that deleted too much
    together with the sync being checked."""

    syncs: int
    deleted: int  # by those syncs (not counting the sync being checked)
    live_before: int  # live rows before the first of them
    started: datetime


def worst_streak(
    connection: Connection, entity: Entity, hours: int, live: int, deleted: int, ratio: Decimal, min_rows: int
) -> Streak | None:
    """The worst run of consecutive recent syncs that, with `deleted` more, deletes more than `ratio`
    of the live rows (at least `min_rows`) the table held before the first of them; None if none does.

    Recent: applied, not dry runs, finished within `hours` of this transaction's start, and after
    the entity's last forced sync (a forced sync starts a new window). `live` is the table's live
    rows now; a run recorded without `live_before` gets it back from the runs' counts.
    """
    # Call under the entity's advisory lock: no other sync can add a run meanwhile. The runs of
    # one window are few (an index range of sync_runs_guard_window_idx).
    rows = connection.run(
        """
        WITH recent AS (
            SELECT id, forced, started, deleted, inserted, restored, live_before
            FROM sync_runs
            WHERE entity = :entity AND status = 'applied' AND NOT dry_run
              AND finished >= now() - :hours * interval '1 hour'
        ), streaks AS (
            SELECT started,
                   count(*) OVER later AS syncs,
                   sum(deleted) OVER later AS deleted_since,
                   coalesce(live_before, :live - sum(inserted + restored - deleted) OVER later) AS live_before
            FROM recent
            WHERE id > coalesce((SELECT max(id) FROM recent WHERE forced), 0)
            WINDOW later AS (ORDER BY id DESC)
        )
        SELECT syncs, deleted_since, live_before, started FROM streaks
        WHERE live_before >= :min_rows AND deleted_since + :deleted > live_before * :ratio
        ORDER BY (deleted_since + :deleted) / CAST(live_before AS numeric) DESC, started
        LIMIT 1""",
        entity=entity,
        hours=hours,
        live=live,
        deleted=deleted,
        ratio=ratio,
        min_rows=max(min_rows, 1),
    )
    if not rows:
        return None
    [[syncs, deleted_since, live_before, started]] = rows
    return Streak(int(syncs), int(deleted_since), int(live_before), started)
