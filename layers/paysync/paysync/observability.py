"""Logger, tracer and metrics, created once and shared by every module.

Logs are structured JSON with ids and counts only: snapshots, names and birth
dates (PHI) are never logged.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from paysync.models import SyncSummary

SERVICE = "paysync"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="Paysync", service=SERVICE)


def add_sync_metrics(summary: SyncSummary) -> None:
    """Rows written and duration of one sync, as CloudWatch metrics (flushed by the handler)."""
    metrics.add_dimension(name="entity", value=summary.entity)
    metrics.add_metric(name=f"Sync{summary.status.capitalize()}", unit=MetricUnit.Count, value=1)
    for name in ("inserted", "updated", "deleted", "restored"):
        metrics.add_metric(name=f"Rows{name.capitalize()}", unit=MetricUnit.Count, value=getattr(summary, name))
    metrics.add_metric(name="SyncDuration", unit=MetricUnit.Milliseconds, value=summary.duration_ms)


def add_outcome_metric(prefix: str, status: str) -> None:
    """Count one handled request or S3 object by outcome, e.g. ("S3Objects", "ignored")."""
    metrics.add_metric(name=f"{prefix}{status.capitalize()}", unit=MetricUnit.Count, value=1)
