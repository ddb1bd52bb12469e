"""What runs inside one function process (`python3.12 -I -S -B -c <this file>`), the way Lambda's
runtime does: sys.path is the function's directory, the layers' python/ directories (/opt/python)
and the standard library, then the runtime's boto3. Nothing else: no site-packages, no source tree.

argv: a JSON spec {function_dir, layers, runtime, mode, timeout, name}. mode "import" prints the
handler module's import time in ms; mode "invoke" reads a list of events (JSON) from stdin, invokes
the handler with each, and writes the results as JSON to the file `result`.
Stdlib only: it must not depend on anything the build output does not bring.
"""

import json
import sys
import sysconfig
import time
import uuid

spec = json.loads(sys.argv[1])
stdlib = [path for path in sys.path if path]
# Lambda's order: the function code, the layers (/opt/python/lib/python3.12/site-packages, /opt/python),
# the interpreter's own library, then the runtime's packages (boto3).
layer_paths = []
for layer in spec["layers"]:
    layer_paths += [f"{layer}/python/lib/python3.12/site-packages", f"{layer}/python"]
sys.path[:] = [spec["function_dir"], *layer_paths, *stdlib, spec["runtime"]]

started, cpu_started = time.perf_counter(), time.process_time()
import app  # noqa: E402  (the handler module, from the function directory)

import_ms = (time.perf_counter() - started) * 1000
import_cpu_ms = (time.process_time() - cpu_started) * 1000

allowed = (spec["function_dir"], *spec["layers"], spec["runtime"], sysconfig.get_paths()["stdlib"])


def foreign_modules() -> list[str]:
    """Modules loaded from anywhere but the build output, the stdlib and the runtime's boto3."""
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and not path.startswith(allowed):
            found.append(f"{name} ({path})")
    return sorted(found)


if spec["mode"] == "import":
    print(json.dumps({"import_ms": import_ms, "import_cpu_ms": import_cpu_ms, "foreign": foreign_modules()}))
    sys.exit(0)


class Context:
    """The Lambda context attributes handlers and Powertools read."""

    def __init__(self, name: str, timeout: int) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]smoke"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


results = []
for event in json.load(sys.stdin):
    try:
        results.append({"result": app.lambda_handler(event, Context(spec["name"], spec["timeout"]))})
    except Exception as exc:  # an unhandled error: Lambda reports it as the invocation's error
        results.append({"error": f"{type(exc).__name__}: {exc}"})
with open(spec["result"], "w") as file:
    json.dump({"import_ms": import_ms, "foreign": foreign_modules(), "results": results}, file, default=str)
