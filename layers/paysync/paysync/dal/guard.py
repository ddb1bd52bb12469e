"""SQL for the deletion guard: what the recent applied syncs of an entity deleted."""

from __future__ import annotations

from dataclasses import dataclass

from paysync.dal.db import Connection
from paysync.records import Entity


@dataclass(frozen=True)
class Window:
    """The applied, non-dry-run syncs of an entity in the rolling window since the last forced one."""

    runs: int
    deleted: int
    # Live rows when the window began: the first run's `live_before` (None for runs
    # recorded before that column existed), and the net rows the window's runs added.
    first_live_before: int | None
    net_added: int


def recent_window(connection: Connection, entity: Entity, hours: int) -> Window:
    """The window's runs: applied and not dry runs, finished within `hours` of this transaction's
    start, and after the entity's last forced sync (a forced sync starts a new window)."""
    # Call under the entity's advisory lock: no other sync can add a run meanwhile.
    [[runs, deleted, first_live_before, net_added]] = connection.run(
        """
        WITH recent AS (
            SELECT id, forced, deleted, inserted, restored, live_before
            FROM sync_runs
            WHERE entity = :entity AND status = 'applied' AND NOT dry_run
              AND finished >= now() - :hours * interval '1 hour'
        ), counted AS (
            SELECT * FROM recent
            WHERE id > coalesce((SELECT max(id) FROM recent WHERE forced), 0)
        )
        SELECT count(*), coalesce(sum(deleted), 0),
               (SELECT live_before FROM counted ORDER BY id LIMIT 1),
               coalesce(sum(inserted + restored - deleted), 0)
        FROM counted""",
        entity=entity,
        hours=hours,
    )
    return Window(int(runs), int(deleted), first_live_before, int(net_added))
