"""GET /syncs, GET /syncs/{id} and GET /syncs/{id}/changes: the record of every sync and what it changed."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import reads
from paysync.observability import logger
from paysync.web import create_resolver, json_response, page_response, query_params

app = create_resolver()


@app.get("/syncs")
def list_syncs():
    event = app.current_event
    return page_response(event, reads.list_syncs(query_params(event)))


@app.get("/syncs/<sync_id>")
def get_sync(sync_id: str):
    return json_response(200, reads.get_sync(sync_id, query_params(app.current_event)))


@app.get("/syncs/<sync_id>/changes")
def get_sync_changes(sync_id: str):
    event = app.current_event
    return page_response(event, reads.sync_changes(sync_id, query_params(event)))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
