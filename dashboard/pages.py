"""The page, its static files, login/logout and what the page needs to start.

| route                       | what                                                          |
|-----------------------------|---------------------------------------------------------------|
| ``GET /``                   | the dashboard page (``/login`` first when a password is set)  |
| ``GET /login``              | the login form                                                |
| ``GET /static/{name}``      | the page's modules and style; ``player.js`` (and the modules  |
|                             | it imports) is the shared player of ``flumph/web`` (the       |
|                             | ingest's ``/view/{id}`` uses it)                              |
| ``POST /api/login``         | JSON ``{"password"}`` → ``{"token","csrf","expires_in"}`` +   |
|                             | cookie; a form post → cookie + redirect to ``/``              |
| ``POST /api/logout``        | clears the cookie                                             |
| ``GET /api/config``         | ``{"auth","banner","ingest_ws_url","csrf","viewer_tokens"}``  |
| ``GET /api/viewer-token``   | ``{"token","expires_in"}`` for the ingest's WebSocket URL     |

The static files hold no data, so they are served to anybody (the login page needs its style).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from flumph import auth

from .access import OPERATOR, Access, cross_site
from .bodies import json_object, read_body

STATIC = resources.files("flumph.dashboard") / "static"
SHARED_WEB = resources.files("flumph") / "web"
STATIC_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)")
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
MAX_LOGIN_BODY = 4096
OPEN_BANNER = "open: no password set"


def _static(name: str) -> Traversable | None:
    if not STATIC_NAME_RE.fullmatch(name):
        return None
    # One player for the ingest's preview page and the dashboard: its modules (player.js and
    # what it imports) are served from the core's files.
    shared = SHARED_WEB / name
    path = shared if name.endswith(".js") and shared.is_file() else STATIC / name
    return path if path.is_file() else None


def _file_response(path: Traversable) -> Response:
    kind = CONTENT_TYPES[path.name.rsplit(".", 1)[1]]
    # no-cache: revalidate, so an upgraded backend never runs with yesterday's modules.
    return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "no-cache"})


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


async def _login_password(request: Request) -> tuple[str | None, bool]:
    """(password, came from a form) from a JSON or url-encoded body; 400/413 for a body that
    cannot be read (too large, too deep, not JSON)."""
    body = await read_body(request, MAX_LOGIN_BODY)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        values = parse_qs(body.decode("utf-8", "replace")).get("password")
        return (values[0] if values else None), True
    doc = json_object(body, "login body", max_bytes=MAX_LOGIN_BODY, max_depth=2)
    password = doc.get("password")
    return (password if isinstance(password, str) else None), False


def add_page_routes(app: FastAPI, access: Access, *, ingest_ws_url: str | None) -> None:
    guarded = [Depends(access.guard)]

    @app.get("/", response_model=None)
    async def index(request: Request) -> Response:
        if not access.open and access.session(request) is None:
            return RedirectResponse("/login", status_code=303)
        page = _static("index.html")
        assert page is not None
        response = _file_response(page)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/login", response_model=None)
    async def login_page(request: Request) -> Response:
        if access.open or access.session(request) is not None:
            return RedirectResponse("/", status_code=303)
        page = _static("login.html")
        assert page is not None
        return _file_response(page)

    @app.get("/static/{name}", response_model=None)
    async def static(name: str) -> Response:
        path = _static(name)
        if path is None:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        return _file_response(path)

    @app.post("/api/login", response_model=None)
    async def login(request: Request) -> Response:
        why = cross_site(request)
        if why is not None:
            return JSONResponse({"detail": why}, status_code=403)
        password, form = await _login_password(request)
        if access.open:
            if form:
                return RedirectResponse("/", status_code=303)
            return JSONResponse({"detail": "no password is set: the dashboard is open"}, 409)
        client = request.client.host if request.client else "?"
        now = time.time()
        wait_s = access.throttle.retry_after(client, OPERATOR, now)
        if wait_s > 0:
            retry = math.ceil(wait_s)
            detail = f"too many failed logins; try again in {retry} s"
            if form:
                return RedirectResponse("/login?failed=limit", status_code=303)
            return JSONResponse(
                {"detail": detail}, status_code=429, headers={"Retry-After": str(retry)}
            )
        assert access.password is not None
        # A hashed password costs PBKDF2's iterations: off the event loop.
        ok = password is not None and await asyncio.to_thread(
            auth.check_password, password, access.password
        )
        if not ok:
            access.throttle.failed(client, OPERATOR, now)
            if form:
                return RedirectResponse("/login?failed=1", status_code=303)
            detail = "wrong password" if password is not None else "give {'password': ...}"
            return JSONResponse({"detail": detail}, status_code=401)
        access.throttle.succeeded(client, OPERATOR)
        token = access.issue_session(now)
        response: Response
        if form:
            response = RedirectResponse("/", status_code=303)
        else:
            response = JSONResponse(
                {
                    "token": token,
                    "csrf": access.csrf(token),
                    "expires_in": int(access.session_ttl_s),
                }
            )
        response.set_cookie(
            auth.SESSION_COOKIE,
            token,
            max_age=int(access.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=_https(request),
            path="/",
        )
        return response

    @app.post("/api/logout", response_model=None)
    async def logout(request: Request) -> Response:
        why = cross_site(request)
        if why is not None:
            return JSONResponse({"detail": why}, status_code=403)
        form = request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        )
        access.logout(request)  # the token is worthless from now on, wherever it was copied
        response: Response = (
            RedirectResponse("/login", status_code=303) if form else JSONResponse({"ok": True})
        )
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/config", dependencies=guarded)
    async def config(request: Request) -> dict[str, Any]:
        session = access.session(request)
        return {
            "auth": "open" if access.open else "password",
            "banner": OPEN_BANNER if access.open else None,
            # None: the ingest answers on the page's own origin; "{host}" is the page's host.
            "ingest_ws_url": ingest_ws_url,
            "csrf": access.csrf(session.token) if session is not None else None,
            "viewer_tokens": access.viewer_tokens,
            "session_expires": session.claims.expires if session is not None else None,
        }

    @app.get("/api/viewer-token", dependencies=guarded)
    async def viewer_token() -> dict[str, Any]:
        if not access.viewer_tokens:
            return {"token": None, "expires_in": None}
        return {
            "token": access.issue_viewer(time.time()),
            "expires_in": int(access.viewer_ttl_s),
        }
