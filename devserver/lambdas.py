"""The template's functions, run like Lambda runs them: each invocation goes to a "container", a
child process (devserver.container) that imported the function's handler once and serves one
event at a time. A function gets more containers, up to a limit, when events arrive while its
containers are busy, so a long sync never holds up a read. Module-level state (paysync's cached
read connection, Powertools' logger and resolver) stays per container, as in Lambda."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import subprocess
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


class FunctionError(Exception):
    """The handler raised, failed to import, or its container died; the devserver log has the traceback."""


class Container:
    """One child process holding one function's handler (a warm Lambda container)."""

    def __init__(self, function: Function, region: str, number: int) -> None:
        self.function = function
        self.number = number
        parent, child = multiprocessing.Pipe()
        command = [
            sys.executable,
            "-m",
            "devserver.container",
            str(child.fileno()),
            str(function.module_path),
            f"devserver_fn_{function.name}",
            function.handler_name,
            region,
        ]
        # Its own session: Ctrl-C reaches the devserver, which stops the containers in order.
        # A container whose devserver died sees its pipe close and exits.
        self.process = subprocess.Popen(command, cwd=ROOT, pass_fds=[child.fileno()], start_new_session=True)
        child.close()
        self._pipe = parent
        self._initialised = False
        self.invoked_at = 0.0  # when the last event was sent (after any cold-start import)

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run one event; FunctionError when the handler raises or the container dies."""
        function = self.function
        try:
            if not self._initialised:
                self._initialised = True
                self._check(self._pipe.recv())  # the import ("Init" phase) of a cold start
            self.invoked_at = time.monotonic()
            self._pipe.send(("invoke", event, function.name, function.memory, function.timeout))
            return self._check(self._pipe.recv())
        except (EOFError, OSError):
            code = self.process.poll()
            raise FunctionError(f"{function.name}: the container exited (code {code})") from None

    def _check(self, reply: tuple[Any, ...]) -> Any:
        if reply[0] == "error":
            _, kind, message, trace = reply
            log.error("%s raised %s\n%s", self.function.name, kind, trace.rstrip())
            raise FunctionError(f"{self.function.name} raised {kind}: {message}")
        return reply[1] if reply[0] == "ok" else None

    def close(self, wait: float = 5) -> None:
        """Close the pipe (the container exits), then wait for it; killed if it does not stop."""
        self._pipe.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class FunctionPool:
    """The containers of one function: idle ones are reused, new ones start up to `limit`."""

    def __init__(self, function: Function, region: str, limit: int) -> None:
        self.function = function
        self.region = region
        self.limit = limit
        self._idle: list[Container] = []
        self._all: set[Container] = set()
        self._started = 0
        self._closed = False
        self._changed = threading.Condition()

    def acquire(self) -> Container:
        """An idle container, a new one, or (all `limit` busy) the next one released."""
        with self._changed:
            while not self._idle and len(self._all) >= self.limit and not self._closed:
                self._changed.wait()
            if self._closed:
                raise FunctionError(f"{self.function.name}: the local stack is stopping")
            if self._idle:
                return self._idle.pop()
            self._started += 1
            container = Container(self.function, self.region, self._started)
            self._all.add(container)
        log.info("%s: cold start of container %d", self.function.name, container.number)
        return container

    def release(self, container: Container, healthy: bool) -> None:
        with self._changed:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(container)
            else:
                self._all.discard(container)
            self._changed.notify()
        if not keep:
            container.close(wait=0)

    def close(self) -> None:
        """Stop idle containers; busy ones are terminated (their invocation fails)."""
        with self._changed:
            self._closed = True
            idle, busy = self._idle, self._all.difference(self._idle)
            self._all, self._idle = set(busy), []
            self._changed.notify_all()
        for container in busy:
            container.process.terminate()
        for container in idle:
            container.close()


class Runtime:
    """Invokes the functions' handlers, each call in a container of its own (see the module doc)."""

    def __init__(self, functions: Iterable[Function], region: str, containers_per_function: int = 4) -> None:
        self.region = region
        self._functions = {function.name: function for function in functions}
        self._pools = {
            name: FunctionPool(function, region, containers_per_function) for name, function in self._functions.items()
        }

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        """Run one event through function `name` and return what its handler returned.

        Raises FunctionError when the handler raised (its traceback is logged here)."""
        function = self._functions[name]
        pool = self._pools[name]
        container = pool.acquire()
        healthy = False
        try:
            result = container.invoke(event)
            healthy = True
            return result
        except FunctionError:
            healthy = container.process.poll() is None
            raise
        finally:
            pool.release(container, healthy)
            elapsed = time.monotonic() - container.invoked_at  # like Lambda, without the cold start
            if container.invoked_at and elapsed > function.timeout:
                log.warning(
                    "%s ran %.1f s, longer than its Timeout of %d s: Lambda would have stopped it",
                    name,
                    elapsed,
                    function.timeout,
                )

    def stop(self) -> None:
        """Stop every container; a busy one is terminated (a sync in it rolls back)."""
        for pool in self._pools.values():
            pool.close()


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
