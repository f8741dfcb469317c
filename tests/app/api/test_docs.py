"""/docs and /redoc work with no internet: their JavaScript and CSS are files of the package
(app/api/static, recorded in VERSIONS.json), and a real browser, kept off the network, renders
the operations from them."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.routes.docs import STATIC_DIR, STATIC_URL
from tests.app.conftest import make_settings
from tests.security.server import serve

ROOT = Path(__file__).resolve().parents[3]
VERSIONS = json.loads((STATIC_DIR / "VERSIONS.json").read_text())
PACKAGES = [package for package in VERSIONS.values() if isinstance(package, dict)]
VENDORED = {
    path: entry["sha256"] for package in PACKAGES for path, entry in package["files"].items()
}
PAGES = ["/docs", "/redoc"]
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
REFERENCE = re.compile(r"""(?:href|src|spec-url)="([^"]*)"|\burl: '([^']*)'""")


def references(html: str) -> list[str]:
    """Every URL the page loads: stylesheet, icon, scripts, and the OpenAPI document."""
    return [href or url for href, url in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_references_only_this_server(client: TestClient, page):
    client.headers.pop("Authorization")  # no key needed, for the page or what it loads
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?:|//[a-z0-9]", html, re.IGNORECASE), html
    assert "fonts.googleapis" not in html and "cdn" not in html.lower()
    urls = references(html)
    assert "/openapi.json" in urls
    assert any(url.startswith(STATIC_URL + "/") and url.endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        served = client.get(url)
        assert served.status_code == 200, url
        if url == "/openapi.json":
            assert served.headers["content-type"] == "application/json"
            continue
        assert CONTENT_TYPES[Path(url).suffix] in served.headers["content-type"], url
        vendored = url.removeprefix(STATIC_URL + "/")
        assert hashlib.sha256(served.content).hexdigest() == VENDORED[vendored], url
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "http" not in policy


def test_the_pages_follow_the_root_path(settings):
    with TestClient(create_app(settings), root_path="/trainserve") as client:
        for page in PAGES:
            urls = references(client.get(page).text)
            assert urls and all(url.startswith("/trainserve/") for url in urls), urls


def test_the_oauth2_redirect_page_of_swagger_ui_is_served(client: TestClient):
    client.headers.pop("Authorization")
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200 and "oauth2" in response.text


def test_the_vendored_files_are_those_recorded(client: TestClient):
    """A file changed, added or removed without updating VERSIONS.json fails here."""
    on_disk = {
        path.relative_to(STATIC_DIR).as_posix()
        for path in STATIC_DIR.rglob("*")
        if path.is_file() and path.name != "VERSIONS.json"
    }
    assert on_disk == set(VENDORED)
    for path, sha256 in VENDORED.items():
        assert hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest() == sha256, path
        assert client.get(f"{STATIC_URL}/{path}").status_code == 200, path
    versions = {package["name"]: package["version"] for package in PACKAGES}
    assert versions["swagger-ui-dist"].startswith("5.") and versions["redoc"].startswith("2.")
    for package in PACKAGES:
        assert package["tarball"] == f"{package['name']}-{package['version']}.tgz"
        assert any(Path(path).name == "LICENSE" for path in package["files"]), package["name"]


def test_the_vendored_files_ship_in_the_package():
    """Every file under app/api/static matches a package-data pattern of `app`."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app"]
    app_dir = ROOT / "app"
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            relative = path.relative_to(app_dir).as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_unknown_static_files_are_404(client: TestClient):
    for path in ("nowhere.js", "../main.py", "%2e%2e/main.py", ""):
        assert client.get(f"{STATIC_URL}/{path}").status_code == 404, path


# -- a real browser, kept off the network ---------------------------------------------------

BROWSER_TIMEOUT_S = 90


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: `make test` installs it (the Makefile's "
            "system-packages target: apt-get install chromium chromium-driver)"
        )
    return found


def render(browser: str, url: str, workdir: Path) -> tuple[str, list[str]]:
    """The DOM of `url` after its scripts ran, and every URL the page itself requested.

    Anything not on loopback goes to a proxy that does not answer, no host name resolves, and
    the browser's own background traffic is off; the net log records what the page asked for
    (its `initiator` is the page's origin) even where the request failed."""
    netlog = workdir / "netlog.json"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={workdir / 'profile'}",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={netlog}",
        "--dump-dom",
        "--virtual-time-budget=10000",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    log = json.loads(netlog.read_text())
    event_types = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    origin = re.match(r"https?://[^/]+", url).group(0)
    requested = [
        event["params"]["url"]
        for event in log["events"]
        if event_types.get(event["type"]) == "URL_REQUEST_START_JOB"
        and event.get("params", {}).get("initiator") == origin
    ]
    return done.stdout, requested


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = create_app(make_settings(tmp_path_factory.mktemp("docs-browser")))
    with serve(app) as base_url:
        yield base_url, app.openapi()


def operations(document: dict) -> list[dict]:
    return [op for ops in document["paths"].values() for op in ops.values()]


def test_swagger_ui_renders_the_operations_in_a_browser(served, tmp_path):
    base_url, document = served
    dom, requested = render(chromium(), f"{base_url}/docs", tmp_path)
    assert requested and all(url.startswith(base_url + "/") for url in requested), requested
    assert f"{base_url}/openapi.json" in requested
    blocks = re.findall(r'class="opblock opblock-(?:get|post|put|patch|delete)\b', dom)
    assert len(blocks) == len(operations(document)), dom[-2000:]
    assert 'data-path="/v1/jobs"' in dom and 'data-path="/v1/models/{name}/predict"' in dom
    for operation in operations(document):
        assert f">{operation['summary']}<" in dom, operation["summary"]


def test_redoc_renders_the_operations_in_a_browser(served, tmp_path):
    base_url, document = served
    dom, requested = render(chromium(), f"{base_url}/redoc", tmp_path)
    assert requested and all(url.startswith(base_url + "/") for url in requested), requested
    assert f"{base_url}/openapi.json" in requested
    assert "/v1/jobs" in dom and "/v1/models/{name}/predict" in dom, dom[-2000:]
    for operation in operations(document):
        assert f"operation/{operation['operationId']}" in dom, operation["operationId"]
        assert operation["summary"] in dom, operation["summary"]
