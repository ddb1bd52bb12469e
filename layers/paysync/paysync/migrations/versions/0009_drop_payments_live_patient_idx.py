"""Drop payments_live_patient_idx: no read uses it any more.

It served the per-patient recount of payments_total / payments_count after a sync.
A sync now moves the totals by the amounts its diff adds and removes (see
`paysync.dal.merge.refresh_totals`) and never reads one patient's payments, while
every insert, update and soft-delete of a payment still paid for an entry in it
and a bulk first load for its build.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # As the tables' owner, like the migrations that made the tables.
    op.execute("SET LOCAL ROLE paysync_owner")
    op.execute("DROP INDEX IF EXISTS payments_live_patient_idx")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE paysync_owner")
    op.execute(
        "CREATE INDEX IF NOT EXISTS payments_live_patient_idx ON payments (patient_id) INCLUDE (amount)"
        " WHERE deleted IS NULL"
    )
    op.execute("RESET ROLE")
