"""Initial schema: patients, payments, sync_runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE patients (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            external_id text NOT NULL CONSTRAINT patients_external_id_key UNIQUE,
            first_name text NOT NULL,
            last_name text NOT NULL,
            middle_name text,
            date_of_birth date NOT NULL,
            payments_total numeric(18,2) NOT NULL DEFAULT 0,
            payments_count integer NOT NULL DEFAULT 0,
            created timestamptz NOT NULL DEFAULT now(),
            updated timestamptz NOT NULL DEFAULT now(),
            deleted timestamptz
        )"""
    )
    # GET /patients: range filter on the total + keyset pagination, live rows only.
    op.execute("CREATE INDEX patients_live_total_idx ON patients (payments_total, id) WHERE deleted IS NULL")

    op.execute(
        """
        CREATE TABLE payments (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            external_id text NOT NULL CONSTRAINT payments_external_id_key UNIQUE,
            amount numeric(12,2) NOT NULL,
            patient_external_id text NOT NULL,
            patient_id bigint REFERENCES patients (id),
            created timestamptz NOT NULL DEFAULT now(),
            updated timestamptz NOT NULL DEFAULT now(),
            deleted timestamptz
        )"""
    )
    # GET /payments?external_id=…: one patient's live payments in id order.
    op.execute(
        "CREATE INDEX payments_live_patient_external_idx ON payments (patient_external_id, id) WHERE deleted IS NULL"
    )
    # GET /payments unfiltered: live payments in id order.
    op.execute("CREATE INDEX payments_live_id_idx ON payments (id) WHERE deleted IS NULL")
    # Totals of one patient (refresh after a sync) without touching the heap.
    op.execute("CREATE INDEX payments_live_patient_idx ON payments (patient_id) INCLUDE (amount) WHERE deleted IS NULL")
    # Orphans waiting for their patient: relinked by every patients sync.
    op.execute("CREATE INDEX payments_orphan_idx ON payments (patient_external_id) WHERE patient_id IS NULL")

    op.execute(
        """
        CREATE TABLE sync_runs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            entity text NOT NULL CHECK (entity IN ('patients', 'payments')),
            source text NOT NULL CHECK (source IN ('api', 's3', 'cli')),
            status text NOT NULL CHECK (status IN ('applied', 'rejected', 'skipped', 'failed')),
            dry_run boolean NOT NULL DEFAULT false,
            forced boolean NOT NULL DEFAULT false,
            s3_bucket text,
            s3_key text,
            s3_version_id text,
            s3_etag text,
            snapshot_at timestamptz NOT NULL,
            received bigint NOT NULL DEFAULT 0,
            inserted bigint NOT NULL DEFAULT 0,
            updated bigint NOT NULL DEFAULT 0,
            deleted bigint NOT NULL DEFAULT 0,
            restored bigint NOT NULL DEFAULT 0,
            unchanged bigint NOT NULL DEFAULT 0,
            orphaned bigint NOT NULL DEFAULT 0,
            duration_ms bigint NOT NULL DEFAULT 0,
            error jsonb,
            started timestamptz NOT NULL,
            finished timestamptz NOT NULL
        )"""
    )
    # Stale-snapshot check: the newest applied snapshot of an entity.
    op.execute(
        "CREATE INDEX sync_runs_applied_idx ON sync_runs (entity, snapshot_at) WHERE status = 'applied' AND NOT dry_run"
    )
    # Duplicate S3 delivery check.
    op.execute("CREATE INDEX sync_runs_s3_object_idx ON sync_runs (s3_bucket, s3_key) WHERE s3_key IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP TABLE sync_runs")
    op.execute("DROP TABLE payments")
    op.execute("DROP TABLE patients")
