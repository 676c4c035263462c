"""Who may use the dashboard: the operator's password, the session cookie, CSRF and Origin checks.

- Open (no password configured): everything answers, and the page says so in a banner. POSTs
  are still refused when a browser says they come from another site (``Origin`` or
  ``Sec-Fetch-Site``), so a web page cannot drive a camera through a dashboard on loopback.
- With a password: the page redirects to ``/login``; the API and the live feed answer 401
  without a session token (the ``flumph_session`` cookie: HttpOnly, SameSite=Strict; or
  ``Authorization: Bearer`` for scripts, from ``POST /api/login``). A POST authenticated by the
  cookie must also carry ``X-Flumph-CSRF`` (from ``GET /api/config``).

Failed logins back off per client address and per account (:mod:`.throttle`), so the password
cannot be guessed at the speed of the network and the right one never waits more than 30 s.
Logging out revokes the session token (:class:`flumph.auth.Revocations`) until it would have
expired: a copy of the cookie is worth nothing after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from flumph import auth

from .throttle import LoginThrottle

SESSION_ONLY: tuple[auth.TokenKind, ...] = ("session",)  # viewer tokens only watch
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPERATOR = "operator"  # the one account: the operator's password


@dataclass
class Session:
    token: str
    claims: auth.Claims
    via: str  # "cookie" or "header"


def _netloc(url_or_host: str, scheme: str) -> str:
    """host[:port] with the default port dropped, lower-cased."""
    host = url_or_host if "//" in url_or_host else f"{scheme}://{url_or_host}"
    parts = urlsplit(host)
    name = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return "?"
    if ":" in name:
        name = f"[{name}]"
    return name if port in (None, default) else f"{name}:{port}"


def cross_site(request: HTTPConnection) -> str | None:
    """Why a browser's request comes from another site, or None (non-browser clients send no
    Origin and pass)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        return "request from an opaque origin refused"
    scheme = request.url.scheme
    hosts = (request.headers.get("host", ""), request.headers.get("x-forwarded-host", ""))
    mine = {_netloc(h, scheme) for h in hosts if h}
    if _netloc(origin, "http") not in mine:
        return f"cross-origin request from {origin} refused"
    return None


class Access:
    def __init__(
        self,
        *,
        password: str | None,
        secret: str | None,
        session_ttl_s: float,
        viewer_ttl_s: float,
    ) -> None:
        self.password = password
        # Without a configured secret, tokens are signed with one that dies with the process:
        # sessions end at a restart, and an ingest elsewhere cannot verify them.
        self.secret = secret or auth.new_secret()
        self.secret_configured = secret is not None
        self.session_ttl_s = session_ttl_s
        self.viewer_ttl_s = viewer_ttl_s
        self.throttle = LoginThrottle()
        self.revocations = auth.Revocations()

    @property
    def open(self) -> bool:
        return self.password is None

    @property
    def viewer_tokens(self) -> bool:
        """Whether the page should put a viewer token in the ingest's WebSocket URL."""
        return not self.open or self.secret_configured

    def session(self, conn: HTTPConnection) -> Session | None:
        token, via = auth.request_token({}, conn.cookies, conn.headers)
        if token is None:
            return None
        try:
            claims = auth.verify(
                self.secret, token, SESSION_ONLY, now=time.time(), revoked=self.revocations
            )
        except auth.AuthError:
            return None
        return Session(token, claims, via)

    def _authenticate(self, conn: HTTPConnection) -> Session:
        token, via = auth.request_token({}, conn.cookies, conn.headers)
        if token is None:
            raise HTTPException(
                401,
                detail="authentication required: log in at /login",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            claims = auth.verify(
                self.secret, token, SESSION_ONLY, now=time.time(), revoked=self.revocations
            )
        except auth.AuthError as e:
            raise HTTPException(
                401, detail=f"unauthorized: {e}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        return Session(token, claims, via)

    async def guard(self, request: Request) -> None:
        """FastAPI dependency on every protected route."""
        unsafe = request.method not in SAFE_METHODS
        if unsafe:
            why = cross_site(request)
            if why is not None:
                raise HTTPException(403, detail=why)
        if self.open:
            return
        session = self._authenticate(request)
        if unsafe and session.via == "cookie":
            given = request.headers.get(auth.CSRF_HEADER)
            if not auth.check_csrf(self.secret, session.token, given):
                raise HTTPException(
                    403, detail=f"missing or wrong {auth.CSRF_HEADER} header (see /api/config)"
                )

    def logout(self, conn: HTTPConnection) -> bool:
        """Revoke the session the request carries; whether there was a live one."""
        session = self.session(conn)
        if session is None:
            return False
        self.revocations.revoke(session.token, session.claims.expires, now=time.time())
        return True

    def issue_session(self, now: float) -> str:
        return auth.issue(self.secret, "session", self.session_ttl_s, now=now, subject="operator")

    def issue_viewer(self, now: float) -> str:
        return auth.issue(self.secret, "viewer", self.viewer_ttl_s, now=now)

    def csrf(self, session_token: str) -> str:
        return auth.csrf_token(self.secret, session_token)
