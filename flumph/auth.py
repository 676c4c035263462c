"""Access control shared by the dashboard and the ingest: a password check and signed tokens.

Pure: no I/O, the clock is a parameter. The dashboard checks the operator's password and issues
tokens; the ingest only verifies them, with the same shared secret (``auth_secret`` in both
configurations; one process in ``flumph up``), so the two never call each other.

Token: ``base64url(claims JSON) "." base64url(HMAC-SHA256(key, "flumph.v1." + claims part))``,
claims ``{"k": kind, "iat": unix s, "exp": unix s, "n": nonce[, "sub": subject]}``. Kinds:

- ``session``: the browser's login, carried in the ``flumph_session`` cookie (HttpOnly,
  SameSite=Strict) or as ``Authorization: Bearer`` by scripts; full access.
- ``viewer``: short-lived, put in the viewer WebSocket's URL (``?token=``) when the ingest is on
  another origin than the page; lets its holder watch, nothing else.

Why HMAC tokens rather than server-side sessions: the ingest can verify them without sharing a
session store with the dashboard, and a restart does not log anybody out. The price is that
revoking one before it expires needs a list: logging out puts the session token in
:class:`Revocations` until it would have expired, and every check that is given that list
refuses it. The dashboard keeps one, and ``flumph up`` hands the same one to its ingest; an
ingest in another process does not see it (its viewers hold ``viewer`` tokens of two minutes;
change the secret to end every session everywhere).

CSRF: a POST authenticated by the cookie must carry ``X-Flumph-CSRF`` equal to
:func:`csrf_token` of that session; a page on another site cannot read it (no CORS here) and so
cannot forge the header, and SameSite=Strict keeps the cookie off cross-site requests anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

SESSION_COOKIE = "flumph_session"
CSRF_HEADER = "X-Flumph-CSRF"
TOKEN_QUERY = "token"
MIN_SECRET_CHARS = 16
PBKDF2_PREFIX = "pbkdf2-sha256"
PBKDF2_ITERATIONS = 200_000
_SIGNING_CONTEXT = b"flumph.v1."
_CSRF_CONTEXT = b"flumph.csrf.v1."
MAX_TOKEN_CHARS = 2048

TokenKind = Literal["session", "viewer"]
KINDS: tuple[TokenKind, ...] = ("session", "viewer")


class AuthError(ValueError):
    """A token or password that does not grant access; the message says why (for the client)."""


@dataclass(frozen=True)
class Claims:
    kind: TokenKind
    issued: int
    expires: int
    subject: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _key(secret: str) -> bytes:
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"auth secret must be at least {MIN_SECRET_CHARS} characters")
    return secret.encode("utf-8")


def _sign(secret: str, context: bytes, message: str) -> bytes:
    return hmac.new(_key(secret), context + message.encode("ascii"), hashlib.sha256).digest()


def new_secret() -> str:
    """A random secret for a process that was given none (its tokens die with it)."""
    return secrets.token_urlsafe(32)


def issue(
    secret: str,
    kind: TokenKind,
    ttl_s: float,
    *,
    now: float,
    subject: str | None = None,
    nonce: str | None = None,
) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r} (known: {', '.join(KINDS)})")
    if ttl_s <= 0:
        raise ValueError(f"token lifetime must be positive, got {ttl_s}")
    claims: dict[str, object] = {
        "k": kind,
        "iat": int(now),
        "exp": int(now + ttl_s),
        "n": nonce if nonce is not None else secrets.token_urlsafe(9),
    }
    if subject is not None:
        claims["sub"] = subject
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_sign(secret, _SIGNING_CONTEXT, body))}"


class Revocations:
    """Tokens ended before their expiry (logout), each kept until it would have expired.

    Bounded: past ``limit`` the entries closest to their own expiry go first. Only a holder of a
    valid session can add one (by logging out), so the bound is never reached by an outsider.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._until: dict[bytes, int] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def revoke(self, token: str, expires: int, *, now: float) -> None:
        if expires <= now:
            return
        self._until[self._key(token)] = expires
        if len(self._until) > self.limit:
            self._until = {k: v for k, v in self._until.items() if v > now}
            while len(self._until) > self.limit:
                del self._until[min(self._until, key=self._until.__getitem__)]

    def revoked(self, token: str) -> bool:
        return self._key(token) in self._until

    def __len__(self) -> int:
        return len(self._until)


def verify(
    secret: str,
    token: str,
    kinds: Collection[TokenKind],
    *,
    now: float,
    revoked: Revocations | None = None,
) -> Claims:
    """The token's claims if it is genuine, unexpired, of an accepted kind and not revoked;
    else AuthError."""
    if not token:
        raise AuthError("no token")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError(f"token too long ({len(token)} characters)")
    body, dot, signature = token.partition(".")
    if not dot or not body or not signature:
        raise AuthError("malformed token: expected <claims>.<signature>")
    try:
        given = _unb64(signature)
        raw = _unb64(body)
    except (ValueError, binascii.Error):
        raise AuthError("malformed token: not base64url") from None
    # Constant-time comparison before any claim is read: nothing depends on forged contents.
    if not hmac.compare_digest(given, _sign(secret, _SIGNING_CONTEXT, body)):
        raise AuthError("token signature does not match (forged, or signed with another secret)")
    try:
        doc = json.loads(raw)
        kind, issued, expires = doc["k"], doc["iat"], doc["exp"]
        subject = doc.get("sub")
    except (ValueError, KeyError, TypeError):
        raise AuthError("malformed token claims") from None
    if kind not in KINDS or not isinstance(issued, int) or not isinstance(expires, int):
        raise AuthError("malformed token claims")
    if kind not in kinds:
        raise AuthError(f"a {kind} token does not grant this (needs: {', '.join(kinds)})")
    if now >= expires:
        raise AuthError(f"token expired {int(now - expires)} s ago: log in again")
    if revoked is not None and revoked.revoked(token):
        raise AuthError("this session was logged out: log in again")
    return Claims(kind, issued, expires, subject if isinstance(subject, str) else None)


def csrf_token(secret: str, session_token: str) -> str:
    """The anti-forgery value bound to one session token."""
    return _b64(_sign(secret, _CSRF_CONTEXT, _b64(session_token.encode()))[:18])


def check_csrf(secret: str, session_token: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), csrf_token(secret, session_token).encode())


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = 0) -> str:
    """``pbkdf2-sha256$<iterations>$<salt>$<hash>``: what a config may hold instead of the
    password itself."""
    if not password:
        raise ValueError("password must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    rounds = iterations or PBKDF2_ITERATIONS
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"{PBKDF2_PREFIX}${rounds}${_b64(salt)}${_b64(digest)}"


def check_password(given: str, expected: str) -> bool:
    """``expected`` is the configured password, plain or :func:`hash_password`'s form."""
    if expected.startswith(PBKDF2_PREFIX + "$"):
        try:
            _, rounds, salt, digest = expected.split("$")
            want = _unb64(digest)
            got = hashlib.pbkdf2_hmac("sha256", given.encode(), _unb64(salt), int(rounds))
        except (ValueError, binascii.Error):
            raise ValueError(
                "configured password hash is malformed (expected "
                f"{PBKDF2_PREFIX}$<iterations>$<salt>$<hash>)"
            ) from None
        return hmac.compare_digest(got, want)
    # Digests first so the comparison takes the same time whatever the lengths.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def request_token(
    query: Mapping[str, str], cookies: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[str | None, Literal["query", "cookie", "header", "none"]]:
    """Where a request carries its token, in order: ``?token=``, the cookie, a Bearer header."""
    if query.get(TOKEN_QUERY):
        return query[TOKEN_QUERY], "query"
    if cookies.get(SESSION_COOKIE):
        return cookies[SESSION_COOKIE], "cookie"
    token = bearer(headers.get("authorization"))
    if token:
        return token, "header"
    return None, "none"
