"""GET /stats, /stats/histogram and /stats/history: figures stored by each sync."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from paysync import stats
from paysync.observability import logger
from paysync.web import create_resolver, json_response, page_response, query_params

app = create_resolver()


@app.get("/stats")
def get_stats():
    return json_response(200, stats.get_stats(query_params(app.current_event)))


@app.get("/stats/histogram")
def get_histogram():
    return json_response(200, stats.get_histogram(query_params(app.current_event)))


@app.get("/stats/history")
def list_history():
    event = app.current_event
    return page_response(event, stats.list_history(query_params(event)))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
