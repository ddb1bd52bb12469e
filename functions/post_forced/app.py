"""POST /forced/patients, POST /forced/payments: reconcile an inline snapshot even when the
deletion guard trips. Separate routes so IAM can grant forcing apart from syncing."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.observability import logger, metrics, tracer
from paysync.web import create_resolver, sync_snapshot

app = create_resolver()


@app.post("/forced/patients")
@tracer.capture_method(capture_response=False)
def post_forced_patients():
    return sync_snapshot(app.current_event, "patients", forced_route=True)


@app.post("/forced/payments")
@tracer.capture_method(capture_response=False)
def post_forced_payments():
    return sync_snapshot(app.current_event, "payments", forced_route=True)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
