"""GET /patients: live patients, filtered by their total of payments, keyset-paginated."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import reads
from paysync.observability import logger
from paysync.web import create_resolver, page_response, query_params

app = create_resolver()


@app.get("/patients")
def get_patients():
    event = app.current_event
    return page_response(event, reads.list_patients(query_params(event)))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
