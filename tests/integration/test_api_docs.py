"""The local stack's API documentation: /openapi.yaml, /openapi.json and a Swagger UI at /docs that a
real headless Chromium renders with every operation of openapi.yaml (static files from a package,
no CDN)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from html import unescape

import pytest
import yaml

from devserver.apigateway import ApiGateway
from devserver.template import load_template
from tests.conftest import ROOT

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def find_chromium() -> str | None:
    """Chromium's path; installed with apt-get (Debian's package) when missing and we are root."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(name) for name in names if shutil.which(name)), None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            env=env,
            capture_output=True,
            timeout=600,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium is not installed and cannot be installed here (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    """The devserver's HTTP front (the docs routes need no functions behind it)."""
    server = ApiGateway("127.0.0.1", 0, load_template(ROOT / "template.yaml").routes)
    server.start(runtime=None)  # type: ignore[arg-type]
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def openapi_operations() -> set[tuple[str, str]]:
    document = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    }


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


def test_openapi_document_is_served_as_yaml_and_json(gateway: str) -> None:
    status, content_type, body = fetch(f"{gateway}/openapi.yaml")
    assert (status, content_type) == (200, "application/yaml")
    assert body == (ROOT / "openapi.yaml").read_bytes()

    status, content_type, body = fetch(f"{gateway}/openapi.json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == yaml.safe_load((ROOT / "openapi.yaml").read_text())


def test_docs_assets_come_from_the_package_not_a_cdn(gateway: str) -> None:
    _, content_type, page = fetch(f"{gateway}/docs")
    assert content_type.startswith("text/html")
    sources = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert sources, page
    assert all(source.startswith(b"/") for source in sources), sources  # same origin only
    status, content_type, script = fetch(f"{gateway}/docs/swagger-ui-bundle.js")
    assert status == 200
    assert content_type.startswith("text/javascript")
    assert b"SwaggerUIBundle" in script
    with pytest.raises(urllib.error.HTTPError) as missing:
        fetch(f"{gateway}/docs/..%2F..%2Fopenapi.yaml")
    assert missing.value.code == 404


def render(chromium: str, url: str, profile: str) -> subprocess.CompletedProcess:
    """The DOM of `url` after its scripts ran (virtual time lets them finish without waiting)."""
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_swagger_ui_in_headless_chromium_lists_every_operation(gateway: str, chromium: str, tmp_path) -> None:
    # A second try only when the first dump came before the UI rendered (a heavily loaded machine).
    for attempt in range(2):
        result = render(chromium, f"{gateway}/docs", str(tmp_path / f"profile{attempt}"))
        if "opblock-summary-path" in result.stdout:
            break
    dom = result.stdout
    assert "opblock-summary-path" in dom, result.stderr[-2000:]
    methods = re.findall(r'class="opblock-summary-method"[^>]*>([A-Z]+)<', dom)
    paths = re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom)
    assert len(methods) == len(paths), (methods, paths)
    rendered = {(method, unescape(path).replace("\u200b", "")) for method, path in zip(methods, paths, strict=True)}
    assert rendered == openapi_operations()
