"""Logger, tracer and metrics, created once and shared by every module.

Logs are structured JSON with ids and counts only: snapshots, names and birth
dates (PHI) are never logged.

Import cost matters here: every function imports this module during its cold
start. The Logger is cheap and created at import. Metrics are created on first
use. The Tracer (the X-Ray SDK, which imports botocore) is created on the first
invocation of a handler wrapped with `trace_handler`; the read handlers do not
use it at all (Lambda's active tracing still records their invocations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics, Tracer

    from paysync.models import SyncSummary

SERVICE = "paysync"

logger = Logger(service=SERVICE)


@functools.cache
def get_metrics() -> Metrics:
    """The process's Powertools Metrics (flushed by handlers wrapped with `log_metrics`)."""
    from aws_lambda_powertools.metrics import Metrics

    return Metrics(namespace="Paysync", service=SERVICE)


@functools.cache
def get_tracer() -> Tracer:
    """The process's Powertools Tracer; importing it loads the X-Ray SDK and botocore."""
    from aws_lambda_powertools.tracing import Tracer

    return Tracer(service=SERVICE)


def __getattr__(name: str) -> Any:
    # `from paysync.observability import tracer, metrics` still works; it pays the import then.
    if name == "tracer":
        return get_tracer()
    if name == "metrics":
        return get_metrics()
    raise AttributeError(name)


Handler = Callable[[Any, Any], Any]


def trace_handler(handler: Handler) -> Handler:
    """Tracer.capture_lambda_handler, with the Tracer created on the first invocation."""
    traced: Handler | None = None

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        nonlocal traced
        if traced is None:
            traced = get_tracer().capture_lambda_handler(handler, capture_response=False)
        return traced(event, context)

    return wrapper


def log_metrics(handler: Handler) -> Handler:
    """Metrics.log_metrics: the metrics a handler added are flushed when it returns."""
    flushing: Handler | None = None

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        nonlocal flushing
        if flushing is None:
            flushing = get_metrics().log_metrics(handler)
        return flushing(event, context)

    return wrapper


def add_sync_metrics(summary: SyncSummary) -> None:
    """Rows written and duration of one sync, as CloudWatch metrics (flushed by the handler)."""
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = get_metrics()
    metrics.add_dimension(name="entity", value=summary.entity)
    metrics.add_metric(name=f"Sync{summary.status.capitalize()}", unit=MetricUnit.Count, value=1)
    for name in ("inserted", "updated", "deleted", "restored"):
        metrics.add_metric(name=f"Rows{name.capitalize()}", unit=MetricUnit.Count, value=getattr(summary, name))
    metrics.add_metric(name="SyncDuration", unit=MetricUnit.Milliseconds, value=summary.duration_ms)


def add_outcome_metric(prefix: str, status: str) -> None:
    """Count one handled request or S3 object by outcome, e.g. ("S3Objects", "ignored")."""
    from aws_lambda_powertools.metrics import MetricUnit

    get_metrics().add_metric(name=f"{prefix}{status.capitalize()}", unit=MetricUnit.Count, value=1)
