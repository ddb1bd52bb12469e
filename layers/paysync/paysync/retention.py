"""History retention: delete the row versions that ended more than N days ago, in small batches.

Each batch is one DELETE in its own transaction: it holds row locks on old versions only, which
no sync or read waits for, and never more than a batch's worth of work is lost to an interruption.
Used by the scheduled purge function and by `paysync purge-history`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from paysync.dal import history
from paysync.dal.db import Connection
from paysync.observability import logger
from paysync.records import ENTITIES, Entity

BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Purge:
    """What a purge deleted: versions per entity that ended before `cutoff`, in `batches` DELETEs."""

    cutoff: datetime
    purged: dict[Entity, int]
    batches: int

    def to_json(self) -> dict:
        return {"cutoff": self.cutoff.isoformat(), "purged": self.purged, "batches": self.batches}


def purge_history(connection: Connection, days: int) -> Purge:
    """Delete the versions that ended more than `days` days ago (by the database clock), batch by
    batch. `connection` must not be inside a transaction: every batch commits on its own."""
    if days < 1:
        raise ValueError("the retention must be at least one day")
    [[cutoff]] = connection.run("SELECT now() - make_interval(days => :days)", days=days)
    purged: dict[Entity, int] = {}
    batches = 0
    for entity in ENTITIES:
        purged[entity], after_id = 0, 0
        while True:
            count, after_id = history.purge_versions(connection, entity, cutoff, after_id, BATCH_ROWS)
            batches += 1
            purged[entity] += count
            if count < BATCH_ROWS:
                break
            logger.debug("history purge batch", extra={"entity": entity, "deleted": count, "after_id": after_id})
    logger.info("history purged", extra={"cutoff": cutoff.isoformat(), "purged": purged, "batches": batches})
    return Purge(cutoff, purged, batches)
