"""The API's own documentation (``/docs``, ``/redoc``, ``/openapi.json``) behind the same login
as the API when a password is set.

FastAPI adds those routes to every app when it is created, open to anybody. They hold no device
data, but they map every route and parameter of a dashboard that was meant to be closed, so with
a password they follow the rules of the API: ``/openapi.json`` answers 401 without a session,
and the two pages send a browser to ``/login`` first. Without a
password nothing changes: the dashboard is open, and says so.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from .access import Access


def _path(route: BaseRoute) -> str | None:
    return getattr(route, "path", None)


def guard_api_docs(app: FastAPI, access: Access) -> None:
    if access.open or app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    pages = {url for url in (app.docs_url, app.redoc_url) if url is not None}
    # The OAuth2 redirect helper only serves Swagger's OAuth flows, which nothing here uses.
    oauth = app.swagger_ui_oauth2_redirect_url
    dropped = {openapi_url, *pages, *([oauth] if oauth else [])}
    app.router.routes[:] = [r for r in app.router.routes if _path(r) not in dropped]

    @app.get(openapi_url, include_in_schema=False, dependencies=[Depends(access.guard)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    def page(request: Request, render: HTMLResponse) -> Response:
        if access.session(request) is None:
            return RedirectResponse("/login", status_code=303)
        render.headers["Cache-Control"] = "no-store"
        return render

    if app.docs_url is not None:

        @app.get(app.docs_url, include_in_schema=False, response_model=None)
        async def swagger(request: Request) -> Response:
            html = get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} — API")
            return page(request, html)

    if app.redoc_url is not None:

        @app.get(app.redoc_url, include_in_schema=False, response_model=None)
        async def redoc(request: Request) -> Response:
            html = get_redoc_html(openapi_url=openapi_url, title=f"{app.title} — API")
            return page(request, html)
