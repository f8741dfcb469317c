"""/docs (Swagger UI) and /redoc (ReDoc) from files in the package, so that they work with no
internet: FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from
Google), and without it /docs is a blank page.

The files are under app/api/static/ (versions, sources and sha256 in VERSIONS.json), served at
/static/docs. The pages, the files and /openapi.json need no API key (GuardMiddleware guards
/v1 only) and are not in the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_URL", "REDOC_URL", "STATIC_DIR", "STATIC_URL", "add_docs"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/static/docs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
SWAGGER_JS = "swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui/swagger-ui.css"
FAVICON = "swagger-ui/favicon-32x32.png"
REDOC_JS = "redoc/redoc.standalone.js"
# Swagger UI would show a badge image fetched from validator.swagger.io: none, no request.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# The pages may load and fetch from this server only: ReDoc's sidebar would otherwise fetch
# its maker's logo from cdn.redoc.ly (hidden when blocked). Inline: Swagger UI's start script
# and both pages' styles; blob: ReDoc's search worker.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",  # blob: an image response in Swagger UI
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)


def add_docs(app: FastAPI) -> None:
    """The two pages, Swagger UI's OAuth2 redirect page (at the app's
    `swagger_ui_oauth2_redirect_url`, unless None) and the static files, on `app`, which is
    built with `docs_url=None, redoc_url=None` so that FastAPI adds no pages of its own.
    Every URL in the pages is relative to the server (behind a proxy, under its root path)."""
    if not app.openapi_url:
        return
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    parameters = SWAGGER_UI_PARAMETERS | (app.swagger_ui_parameters or {})

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def local_only(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{STATIC_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{base}{STATIC_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{base}{STATIC_URL}/{FAVICON}",
            oauth2_redirect_url=base + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )
        return local_only(page)

    async def swagger_ui_oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{STATIC_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{base}{STATIC_URL}/{FAVICON}",
            with_google_fonts=False,
        )
        return local_only(page)

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    if oauth2_redirect_url:
        app.add_route(oauth2_redirect_url, swagger_ui_oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")
