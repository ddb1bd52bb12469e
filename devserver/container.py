"""One local "Lambda container": a child process that imports one function's handler once and
then runs the events its parent sends, one at a time, over an inherited pipe.

Started by devserver.lambdas.Container as `python -m devserver.container <fd> <module path>
<module name> <handler name> <region>`. The handler's logs go to the inherited stdout/stderr.
"""

from __future__ import annotations

import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path


def serve(pipe: Connection, module_path: Path, module_name: str, handler_name: str, region: str) -> None:
    """Answer ("invoke", event, function, memory, timeout) messages until the pipe closes."""
    from devserver.lambdas import LambdaContext, ensure_layer_importable, load_handler

    ensure_layer_importable()
    try:
        handler = load_handler(module_path, module_name, handler_name)
    except BaseException as exc:  # an import error is the container's init error, reported per invoke
        init_error = _failure(exc)
        handler = None
    pipe.send(("ready",) if handler else init_error)
    while True:
        try:
            _kind, event, function, memory, timeout = pipe.recv()
        except (EOFError, OSError):
            return
        context = LambdaContext(function, memory, timeout, region)
        try:
            reply = ("ok", handler(event, context)) if handler else init_error
        except Exception as exc:
            reply = _failure(exc)
        try:
            pipe.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # a result that cannot be pickled: not a valid Lambda response either
            pipe.send(_failure(exc))


def _failure(exc: BaseException) -> tuple[str, str, str, str]:
    return ("error", type(exc).__name__, str(exc), traceback.format_exc())


def main(argv: list[str]) -> None:
    fd, module_path, module_name, handler_name, region = argv
    serve(Connection(int(fd)), Path(module_path), module_name, handler_name, region)


if __name__ == "__main__":
    main(sys.argv[1:])
