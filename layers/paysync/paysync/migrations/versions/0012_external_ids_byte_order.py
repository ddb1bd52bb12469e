"""Compare external ids byte by byte (collation "C") instead of by the database's locale.

External ids are opaque keys: a sync only ever tests them for equality, and no
read sorts by them. Under a locale collation (even C.UTF-8) PostgreSQL compares
text with strcoll and without abbreviated keys, which made every btree on an id
(unique keys, the per-patient payments index, the orphans index) slower to build
and to insert into. With "C" they compare with memcmp: at 1M payments the first
load's id index builds took about half the time.

Changing only the collation rewrites no table, but it rebuilds the indexes on
these columns while holding ACCESS EXCLUSIVE on the table: on a large replica,
run it in a quiet window.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Every column holding an external id; a join between two of them needs the same collation.
ID_COLUMNS = {
    "patients": ("external_id",),
    "payments": ("external_id", "patient_external_id"),
    "patient_versions": ("external_id",),
    "payment_versions": ("external_id", "patient_external_id"),
}


def _set_collation(collation: str) -> None:
    # As the tables' owner, like the migrations that made the tables.
    op.execute("SET LOCAL ROLE paysync_owner")
    for table, columns in ID_COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE text COLLATE {collation}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")
    op.execute("RESET ROLE")


def upgrade() -> None:
    _set_collation('"C"')


def downgrade() -> None:
    _set_collation("pg_catalog.default")
