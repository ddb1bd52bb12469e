"""The API's documentation on the local stack: /openapi.yaml, /openapi.json and a Swagger UI at /docs,
served from the swagger-ui-py package's copy of the Swagger UI distribution (5.x, which renders
OpenAPI 3.1); no CDN, so it works offline."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "openapi.yaml"

# The distribution's files /docs serves, by name (nothing else of the package directory is reachable).
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>paysync API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      validatorUrl: null,
      docExpansion: "list"
    });
  </script>
</body>
</html>
"""

Response = tuple[int, list[tuple[str, str]], bytes]


@cache
def _assets_dir() -> Path:
    # Only the package's static files are used; its framework adapters are never imported.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: make install")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def serve(method: str, path: str) -> Response | None:
    """The documentation response for GET/HEAD `path`, or None when the path is not a docs path."""
    if method not in ("GET", "HEAD"):
        return None
    if path == "/openapi.yaml":
        return 200, [("Content-Type", "application/yaml")], OPENAPI.read_bytes()
    if path == "/openapi.json":
        document = yaml.safe_load(OPENAPI.read_text())
        return 200, [("Content-Type", "application/json")], json.dumps(document, default=str).encode()
    if path in ("/docs", "/docs/"):
        return 200, [("Content-Type", "text/html; charset=utf-8")], INDEX.encode()
    name = path.removeprefix("/docs/")
    if path.startswith("/docs/") and name in ASSETS:
        return 200, [("Content-Type", ASSETS[name])], (_assets_dir() / name).read_bytes()
    return None
