"""The template's functions, each imported once (like one warm Lambda container per function)
and invoked one at a time under a single lock: paysync keeps per-container state (a cached
read connection) that is not thread-safe, and Lambda never runs two events in one container."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devserver.template import Function

log = logging.getLogger("devserver")

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "paysync"
ACCOUNT = "123456789012"


def ensure_layer_importable() -> None:
    """Make `paysync` importable the way the Lambda layer does, when it is not installed."""
    if importlib.util.find_spec("paysync") is None:
        sys.path.insert(0, str(LAYER))


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    region: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{time.strftime('%Y/%m/%d')}/[$LATEST]local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))


class Runtime:
    """Invokes the handlers of `functions`, serialized by one lock."""

    def __init__(self, functions: Iterable[Function], region: str) -> None:
        self.region = region
        self._lock = threading.Lock()
        self._functions = {function.name: function for function in functions}
        self._handlers = {
            name: load_handler(function.module_path, f"devserver_fn_{name}", function.handler_name)
            for name, function in self._functions.items()
        }

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        """Run one event through function `name` and return what its handler returned (or raise)."""
        function = self._functions[name]
        with self._lock:
            context = LambdaContext(function.name, function.memory, function.timeout, self.region)
            try:
                return self._handlers[name](event, context)
            finally:
                elapsed = time.monotonic() - context.started
                if elapsed > function.timeout:
                    log.warning(
                        "%s ran %.1f s, longer than its Timeout of %d s: Lambda would have stopped it",
                        name,
                        elapsed,
                        function.timeout,
                    )


def load_handler(
    module_path: Path, module_name: str, handler_name: str = "lambda_handler"
) -> Callable[[dict[str, Any], LambdaContext], Any]:
    """A function's handler, its module imported under `module_name` (one module per function,
    as each Lambda has its own `app`)."""
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, module_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {module_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return getattr(module, handler_name)
