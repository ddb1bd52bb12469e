"""paysync: keep a PostgreSQL replica of patients and payments in sync from full snapshots."""

__version__ = "0.1.0"
