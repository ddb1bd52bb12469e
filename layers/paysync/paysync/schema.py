"""The replica's schema as SQLAlchemy models: every table the migrations create is declared here.

The Alembic files in migrations/versions/ stay the reviewed source of every
change; these models describe the schema they produce (the brief's Patient and
Payment models, extended, and SyncRun). A test compares them with a migrated
database and fails on any difference (a missing index, a type, a nullable, a
server default, a CHECK), so a migration that adds or changes a table must
update this module in the same change.

Only the migrations (migrations/env.py, as autogenerate's target metadata) and
the tests import this module. The API and sync functions never do: their layer
has no SQLAlchemy, and their SQL lives in paysync.dal.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Types of the replica's columns.
TIMESTAMPTZ = DateTime(timezone=True)
# External ids compare byte by byte: opaque keys, only ever tested for equality.
EXTERNAL_ID = Text(collation="C")
MONEY = Numeric(12, 2)  # one payment's amount
# A patient's total: at most 2,147,483,647 payments (payments_count is an integer)
# of at most 9,999,999,999.99 each stay below 2.2e19, which 20 integer digits hold.
MONEY_TOTAL = Numeric(22, 2)
NOW = text("now()")
ZERO = text("0")
FALSE = text("false")
LIVE = text("deleted IS NULL")  # the predicate of the live-rows partial indexes
APPLIED = text("status = 'applied' AND NOT dry_run")  # applied, not previewed, syncs
ACTIONS = "('inserted', 'updated', 'deleted', 'restored')"  # how a row version began
# The live tables leave a tenth of each page free: a sync's update that changes no indexed column
# (an amount, a name, a deletion) then stays on its page and writes no index entry (HOT).
FILLFACTOR = 90


class Base(DeclarativeBase):
    """The declarative base of the replica's tables."""


def _identity() -> Any:
    # bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY: ids are the database's, never supplied.
    return mapped_column(BigInteger, Identity(always=True), primary_key=True)


class Patient(Base):
    """A patient of the external system; payments_total / payments_count cover its live, linked payments."""

    __tablename__ = "patients"

    id: Mapped[int] = _identity()
    external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)
    first_name: Mapped[str] = mapped_column(Text, nullable=False)
    last_name: Mapped[str] = mapped_column(Text, nullable=False)
    middle_name: Mapped[str | None] = mapped_column(Text)
    date_of_birth: Mapped[date] = mapped_column(Date, nullable=False)
    payments_total: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False, server_default=ZERO)
    payments_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=ZERO)
    created: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    updated: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    deleted: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)  # soft delete
    # The sync that started the current version, and how (NULL on rows written before history was
    # kept). Not indexed: a sync's changes are found through sync_row_changes and sync_runs.last_row_id.
    version_sync_id: Mapped[int | None] = mapped_column(BigInteger)
    version_action: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("external_id", name="patients_external_id_key"),
        CheckConstraint(f"version_action IN {ACTIONS}", name="patients_version_action_check"),
        # GET /patients: range filter on the total + keyset pagination, live rows only.
        Index("patients_live_total_idx", "payments_total", "id", postgresql_where=LIVE),
        {"postgresql_with": {"fillfactor": FILLFACTOR}},
    )


class Payment(Base):
    """A payment; patient_id is NULL while its patient (patient_external_id) is unknown: an orphan."""

    __tablename__ = "payments"

    id: Mapped[int] = _identity()
    external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    patient_external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)
    patient_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("patients.id", name="payments_patient_id_fkey")
    )
    created: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    updated: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    deleted: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)  # soft delete
    # The sync that started the current version, and how (NULL on rows written before history was
    # kept). Not indexed: a sync's changes are found through sync_row_changes and sync_runs.last_row_id.
    version_sync_id: Mapped[int | None] = mapped_column(BigInteger)
    version_action: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("external_id", name="payments_external_id_key"),
        CheckConstraint(f"version_action IN {ACTIONS}", name="payments_version_action_check"),
        # GET /payments?external_id=…: one patient's payments in id order (deleted ones too, so that
        # deleting or restoring a payment changes no indexed column; GET /payments unfiltered walks
        # the primary key).
        Index("payments_patient_external_idx", "patient_external_id", "id"),
        # Orphans waiting for their patient: relinked by every patients sync.
        Index("payments_orphan_idx", "patient_external_id", postgresql_where=text("patient_id IS NULL")),
        {"postgresql_with": {"fillfactor": FILLFACTOR}},
    )


class SyncRun(Base):
    """What one sync did: entity, source, S3 object, status, counts, error, timing.

    entity is NULL only for an S3 key that names no entity (recorded as skipped).
    live_before is NULL for runs recorded before the rolling deletion guard.
    """

    __tablename__ = "sync_runs"

    id: Mapped[int] = _identity()
    entity: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    forced: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=FALSE)
    s3_bucket: Mapped[str | None] = mapped_column(Text)
    s3_key: Mapped[str | None] = mapped_column(Text)
    s3_version_id: Mapped[str | None] = mapped_column(Text)
    s3_etag: Mapped[str | None] = mapped_column(Text)
    snapshot_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    received: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    inserted: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    updated: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    deleted: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    restored: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    unchanged: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    orphaned: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    duration_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=ZERO)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    started: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    finished: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    live_before: Mapped[int | None] = mapped_column(BigInteger)  # live rows of the table before the sync
    # "<ms>-<suffix>" of a key issued by POST /uploads: orders objects stored in the same second.
    snapshot_seq: Mapped[str | None] = mapped_column(Text)
    s3_sequencer: Mapped[str | None] = mapped_column(Text)  # the S3 event's: orders versions of one key
    # An applied sync's table's highest row id at its commit: the rows it inserted are the ids above
    # the previous applied sync's (same entity), up to this one (ids only grow; only syncs insert).
    last_row_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("entity IN ('patients', 'payments')", name="sync_runs_entity_check"),
        CheckConstraint("source IN ('api', 's3', 'cli')", name="sync_runs_source_check"),
        CheckConstraint("status IN ('applied', 'rejected', 'skipped', 'failed')", name="sync_runs_status_check"),
        # Stale-snapshot check: the newest applied snapshot of an entity.
        Index("sync_runs_applied_idx", "entity", "snapshot_at", postgresql_where=APPLIED),
        # Duplicate S3 delivery check.
        Index("sync_runs_s3_object_idx", "s3_bucket", "s3_key", postgresql_where=text("s3_key IS NOT NULL")),
        # The rolling deletion guard: applied syncs of one entity within a recent time window.
        Index("sync_runs_guard_window_idx", "entity", "finished", postgresql_where=APPLIED),
    )


class _Version:
    """The columns every row version has, after the row's own fields."""

    valid_from: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    valid_to: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    sync_started: Mapped[int | None] = mapped_column(BigInteger)  # NULL: began before history was kept
    sync_ended: Mapped[int] = mapped_column(BigInteger, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)


def _version_indexes(table: str, row: str) -> tuple[Any, ...]:
    return (
        CheckConstraint(f"action IN {ACTIONS}", name=f"{table}_action_check"),
        # One row's versions, newest first, and the version current at a time.
        Index(f"{table}_row_idx", row, "valid_to", "id"),
        # The versions one sync ended: the before-values of its changes.
        Index(f"{table}_ended_idx", "sync_ended", row),
    )


class PatientVersion(_Version, Base):
    """A superseded version of a patient: its replicated fields while it was current
    [valid_from, valid_to), the syncs that started and ended it, and how it began."""

    __tablename__ = "patient_versions"

    id: Mapped[int] = _identity()
    patient_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # no FK: a bulk load may swap patients
    external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)
    first_name: Mapped[str] = mapped_column(Text, nullable=False)
    last_name: Mapped[str] = mapped_column(Text, nullable=False)
    middle_name: Mapped[str | None] = mapped_column(Text)
    date_of_birth: Mapped[date] = mapped_column(Date, nullable=False)

    __table_args__ = _version_indexes("patient_versions", "patient_id")


class PaymentVersion(_Version, Base):
    """A superseded version of a payment (see PatientVersion)."""

    __tablename__ = "payment_versions"

    id: Mapped[int] = _identity()
    payment_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    patient_external_id: Mapped[str] = mapped_column(EXTERNAL_ID, nullable=False)

    __table_args__ = _version_indexes("payment_versions", "payment_id")


class SyncRowChange(Base):
    """A row one sync updated, deleted or restored (the rows it inserted are its id range, see
    SyncRun.last_row_id): GET /syncs/{id}/changes walks these per action, in row id order."""

    __tablename__ = "sync_row_changes"

    sync_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(Text, primary_key=True)
    row_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    __table_args__ = (
        CheckConstraint("action IN ('updated', 'deleted', 'restored')", name="sync_row_changes_action_check"),
    )


class SyncStats(Base):
    """The replica's figures as one applied sync left them (computed inside that sync)."""

    __tablename__ = "sync_stats"

    # NULL only inside the sync's transaction, until its run is inserted (a trigger attaches it).
    sync_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("sync_runs.id", name="sync_stats_sync_id_fkey", ondelete="CASCADE")
    )
    live_patients: Mapped[int] = mapped_column(BigInteger, nullable=False)
    live_payments: Mapped[int] = mapped_column(BigInteger, nullable=False)
    live_payments_sum: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False)
    orphan_payments: Mapped[int] = mapped_column(BigInteger, nullable=False)
    orphan_payments_sum: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False)
    deleted_patient_payments: Mapped[int] = mapped_column(BigInteger, nullable=False)
    deleted_patient_payments_sum: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False)
    patients_without_payments: Mapped[int] = mapped_column(BigInteger, nullable=False)
    live_patients_total: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False)
    total_min: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p10: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p25: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p50: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p75: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p90: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_p99: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_max: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    total_mean: Mapped[Decimal | None] = mapped_column(MONEY_TOTAL)
    computed: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False, server_default=NOW)
    # The generation of patient_total_ranks these figures were computed from (reads use its ranks).
    ranks_generation: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        UniqueConstraint("sync_id", name="sync_stats_sync_id_key"),
        # At most one row waits for its sync id (syncs are serialized), found without a scan.
        Index(
            "sync_stats_unattached_idx",
            text("(sync_id IS NULL)"),
            unique=True,
            postgresql_where=text("sync_id IS NULL"),
        ),
    )
    # The table has no primary key; SQLAlchemy's mapper needs one to map the class.
    __mapper_args__: ClassVar[dict[str, Any]] = {"primary_key": [sync_id]}


class PatientTotalRank(Base):
    """The cumulative distribution of live patients' totals: how many are at or below each total
    (written as a new generation by each sync whose totals moved; percentiles and histograms are
    index lookups in the generation sync_stats names)."""

    __tablename__ = "patient_total_ranks"

    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    total: Mapped[Decimal] = mapped_column(MONEY_TOTAL, nullable=False)
    patients_at_or_below: Mapped[int] = mapped_column(BigInteger, nullable=False)

    # Not unique, leading with the generation: a sync's new entries append at the right edge.
    __table_args__ = (
        Index("patient_total_ranks_total_idx", "generation", "total"),
        Index("patient_total_ranks_count_idx", "generation", "patients_at_or_below"),
    )
    # The table has no primary key; SQLAlchemy's mapper needs one to map the class.
    __mapper_args__: ClassVar[dict[str, Any]] = {"primary_key": [generation, total]}


metadata = Base.metadata
