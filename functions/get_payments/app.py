"""GET /payments: live payments, optionally of one patient (external_id), keyset-paginated."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import reads
from paysync.observability import logger, tracer
from paysync.web import create_resolver, page_response, query_params

app = create_resolver()


@app.get("/payments")
@tracer.capture_method(capture_response=False)
def get_payments():
    event = app.current_event
    return page_response(event, reads.list_payments(query_params(event)))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
