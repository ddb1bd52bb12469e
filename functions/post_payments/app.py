"""POST /payments: reconcile a full payments snapshot sent inline (<= 6 MB)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync.observability import log_metrics, logger, trace_handler
from paysync.web import create_resolver, sync_snapshot

app = create_resolver()


@app.post("/payments")
def post_payments():
    return sync_snapshot(app.current_event, "payments")


@logger.inject_lambda_context(clear_state=True)
@trace_handler
@log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
