"""Wider payment totals: a patient's total can never overflow.

payments_count is an integer, so a patient has at most 2,147,483,647 live
payments of at most 9,999,999,999.99 each: any total is below 2.2e19, which
NUMERIC(22,2) (20 integer digits) holds. Raising a numeric's precision at the
same scale does not rewrite the table or its index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE patients ALTER COLUMN payments_total TYPE numeric(22,2)")


def downgrade() -> None:
    op.execute("ALTER TABLE patients ALTER COLUMN payments_total TYPE numeric(18,2)")
