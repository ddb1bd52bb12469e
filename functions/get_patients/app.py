"""GET /patients (live patients, keyset-paginated), GET /patients/{externalId} (one row, or its version at a
time) and GET /patients/{externalId}/history (every version of it)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import reads
from paysync.observability import logger
from paysync.web import create_resolver, page_response, query_params, row_response, row_routes

app = create_resolver()
ENTITY = "patients"


@app.get("/patients")
def list_patients():
    event = app.current_event
    if event.resource in row_routes(ENTITY):  # an empty externalId: "/patients/" matched the list
        return get_one()
    return page_response(event, reads.list_patients(query_params(event)))


@app.get(r"/patients/[\s\S]+")
def get_one():
    return row_response(app.current_event, ENTITY)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
