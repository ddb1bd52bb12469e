"""GET /payments (live payments, keyset-paginated), GET /payments/{externalId} (one row, or its version at a
time) and GET /payments/{externalId}/history (every version of it)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import reads
from paysync.errors import NotFound
from paysync.observability import logger
from paysync.web import create_resolver, json_response, page_response, query_params

app = create_resolver()
ENTITY = "payments"
ONE_ROUTES = ("/payments/{externalId}", "/payments/{externalId}/history")


@app.get("/payments")
def list_payments():
    event = app.current_event
    if event.resource in ONE_ROUTES:  # an empty externalId: "/payments/" matched the list
        return get_one()
    return page_response(event, reads.list_payments(query_params(event)))


# API Gateway has matched the route and decoded the id (which may hold any character, "/" too):
# the resource says which route, pathParameters holds the id.
@app.get(r"/payments/[\s\S]+")
def get_one():
    event = app.current_event
    external_id = (event.path_parameters or {}).get("externalId")
    if event.resource == ONE_ROUTES[1]:
        return page_response(event, reads.row_history(ENTITY, external_id, query_params(event)))
    if event.resource == ONE_ROUTES[0]:
        return json_response(200, reads.get_row(ENTITY, external_id, query_params(event)))
    raise NotFound(f"no route for GET {event.path}")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
