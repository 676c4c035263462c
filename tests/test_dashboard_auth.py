"""Access control: signed tokens and the password check (pure), the dashboard's login, session
cookie, CSRF and Origin checks, and the ingest's refusal of anonymous viewers, streamers and API
calls, against real processes in the split deployment (dashboard and ingest on two ports sharing
``auth_secret``); then the page in Chromium: login form, grid, and a tile that plays through the
ingest on the other origin with a viewer token."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from flumph import auth
from flumph.dashboard.access import Access, cross_site
from flumph.dashboard.service import DashboardConfig
from flumph.ingest.service import IngestConfig
from flumph.lifecycle import provisioned_status
from tests.brokers import Probe, start_embedded
from tests.browser import chromium
from tests.conftest import ARTIFACTS, Ingest, free_port, start_ingest, stop_ingest
from tests.test_dashboard_page import (
    Backend,
    card,
    spawn,
    start_up_demo,
    wait_playing,
    wait_until,
)

SECRET = "s3cret-shared-by-dashboard-and-ingest"
PASSWORD = "correct horse battery"
NOW = 1_800_000_000.0
SESSION: tuple[auth.TokenKind, ...] = ("session",)

# --- tokens and passwords (pure) ------------------------------------------------------------


def test_token_round_trip_and_claims() -> None:
    token = auth.issue(SECRET, "session", 60, now=NOW, subject="operator", nonce="n1")
    claims = auth.verify(SECRET, token, SESSION, now=NOW + 59)
    assert claims == auth.Claims("session", int(NOW), int(NOW) + 60, "operator")
    # Deterministic for a given nonce; different nonces give different tokens.
    assert token == auth.issue(SECRET, "session", 60, now=NOW, subject="operator", nonce="n1")
    assert token != auth.issue(SECRET, "session", 60, now=NOW, subject="operator")


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: t, "a viewer token does not grant this (needs: session)"),
        (lambda t: t + "x", "signature does not match"),
        (lambda t: "A" + t[1:], "signature does not match"),
        (lambda t: t.replace(".", ""), "malformed token"),
        (lambda t: "", "no token"),
        (lambda t: "é." + t, "malformed token: not base64url"),
        (lambda t: "x" * 3000, "token too long"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(mangle: Any, message: str) -> None:
    token = auth.issue(SECRET, "viewer", 60, now=NOW)
    with pytest.raises(auth.AuthError, match=re.escape(message)):
        auth.verify(SECRET, mangle(token), SESSION, now=NOW)


def test_expired_and_foreign_tokens() -> None:
    token = auth.issue(SECRET, "viewer", 30, now=NOW)
    assert auth.verify(SECRET, token, auth.KINDS, now=NOW + 29).kind == "viewer"
    with pytest.raises(auth.AuthError, match="expired 10 s ago"):
        auth.verify(SECRET, token, auth.KINDS, now=NOW + 40)
    with pytest.raises(auth.AuthError, match="another secret"):
        auth.verify("another-secret-of-16+chars", token, auth.KINDS, now=NOW)
    with pytest.raises(ValueError, match="at least 16 characters"):
        auth.issue("short", "viewer", 30, now=NOW)
    with pytest.raises(ValueError, match="unknown token kind"):
        auth.issue(SECRET, "admin", 30, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lifetime must be positive"):
        auth.issue(SECRET, "viewer", 0, now=NOW)


@given(st.text(max_size=300))
def test_verify_only_ever_raises_auth_error(garbage: str) -> None:
    with contextlib.suppress(auth.AuthError):
        auth.verify(SECRET, garbage, auth.KINDS, now=NOW)


@given(st.binary(max_size=200))
def test_forged_claims_never_pass(claims: bytes) -> None:
    body = auth._b64(claims)
    forged = f"{body}.{auth._b64(b'0' * 32)}"
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, forged, auth.KINDS, now=NOW)


def test_csrf_token_is_bound_to_the_session() -> None:
    a = auth.issue(SECRET, "session", 60, now=NOW)
    b = auth.issue(SECRET, "session", 60, now=NOW)
    assert auth.check_csrf(SECRET, a, auth.csrf_token(SECRET, a))
    assert not auth.check_csrf(SECRET, b, auth.csrf_token(SECRET, a))
    assert not auth.check_csrf(SECRET, a, None)
    assert not auth.check_csrf(SECRET, a, "")


def test_passwords_plain_and_hashed() -> None:
    assert auth.check_password(PASSWORD, PASSWORD)
    assert not auth.check_password(PASSWORD + " ", PASSWORD)
    hashed = auth.hash_password(PASSWORD, iterations=1000)
    assert hashed.startswith("pbkdf2-sha256$1000$")
    assert auth.check_password(PASSWORD, hashed)
    assert not auth.check_password("wrong", hashed)
    with pytest.raises(ValueError, match="password hash is malformed"):
        auth.check_password(PASSWORD, "pbkdf2-sha256$x$y")
    with pytest.raises(ValueError, match="must not be empty"):
        auth.hash_password("")


def test_where_a_request_carries_its_token() -> None:
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("Basic abc") is None
    assert auth.bearer("Bearer ") is None
    cookie = {auth.SESSION_COOKIE: "c"}
    assert auth.request_token({"token": "q"}, cookie, {}) == ("q", "query")
    assert auth.request_token({}, cookie, {"authorization": "Bearer h"}) == ("c", "cookie")
    assert auth.request_token({}, {}, {"authorization": "Bearer h"}) == ("h", "header")
    assert auth.request_token({}, {}, {}) == (None, "none")


def test_configs_check_secrets_and_urls() -> None:
    with pytest.raises(ValueError, match="auth_secret"):
        IngestConfig(auth_secret="short")
    with pytest.raises(ValueError, match="password"):
        DashboardConfig(password="short")
    with pytest.raises(ValueError, match="password hash is malformed"):
        DashboardConfig(password="pbkdf2-sha256$1$2")
    with pytest.raises(ValueError, match="must start with ws:// or wss://"):
        DashboardConfig(ingest_ws_url="http://{host}:8080")
    assert DashboardConfig(ingest_ws_url="ws://{host}:8080/").ingest_ws_url == "ws://{host}:8080"


# --- the dashboard's checks (no network) ------------------------------------------------------


def _request(method: str, headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "method": method,
        "path": "/api/x",
        "headers": raw,
        "scheme": "http",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"host": "127.0.0.1:8000"}, None),
        ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, None),
        ({"host": "cams.example", "origin": "https://cams.example"}, None),
        ({"host": "cams.example:80", "origin": "http://cams.example"}, None),
        ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8080"}, "cross-origin"),
        ({"host": "127.0.0.1:8000", "origin": "http://evil.example"}, "cross-origin"),
        ({"host": "127.0.0.1:8000", "origin": "null"}, "opaque origin"),
        ({"host": "127.0.0.1:8000", "sec-fetch-site": "cross-site"}, "cross-site"),
        (
            {
                "host": "10.0.0.1:8000",
                "x-forwarded-host": "cams.example",
                "origin": "https://cams.example",
            },
            None,
        ),
    ],
)
def test_cross_site_requests_are_recognised(headers: dict[str, str], refused: str | None) -> None:
    why = cross_site(_request("POST", headers))
    assert (why is None) if refused is None else (why is not None and refused in why), why


def test_open_access_still_issues_no_viewer_tokens_unless_a_secret_is_shared() -> None:
    assert not Access(password=None, secret=None, session_ttl_s=60, viewer_ttl_s=60).viewer_tokens
    assert Access(password=None, secret=SECRET, session_ttl_s=60, viewer_ttl_s=60).viewer_tokens
    assert Access(password=PASSWORD, secret=None, session_ttl_s=60, viewer_ttl_s=60).viewer_tokens


# --- real processes: dashboard with a password, ingest with the shared secret ----------------


@dataclass
class Guarded(Backend):
    ingest: Ingest | None = None


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    tmp = tmp_path_factory.mktemp("guarded")
    broker = start_embedded(tmp)
    # Devices the tests set or wait for without running an agent: added, as `flumph ctl add`.
    ops = Probe(broker)
    for device_id in ("cam7", "cam9"):
        ops.publish(f"flumph/{device_id}/status", provisioned_status(), retain=True)
    ops.close()
    ingest = start_ingest(
        tmp,
        env_extra={"FLUMPH_INGEST_AUTH_SECRET": SECRET},
        args=["--mqtt", broker.url, "--reconnect-grace-s", "2"],
    )
    dash_port = free_port()
    dash = spawn(
        tmp,
        "dashboard",
        [
            "dashboard",
            "--host",
            "127.0.0.1",
            "--port",
            str(dash_port),
            "--mqtt",
            broker.url,
            "--ondemand-linger-s",
            "2",
            "--ingest-ws-url",
            f"ws://{{host}}:{ingest.http_port}",
        ],
        env={"FLUMPH_DASHBOARD_PASSWORD": PASSWORD, "FLUMPH_DASHBOARD_AUTH_SECRET": SECRET},
    )
    b = Guarded(f"http://127.0.0.1:{dash_port}", broker.url, ingest.srt_port, [dash], tmp, ingest)
    try:
        wait_until(
            lambda: httpx.get(f"{b.dash}/login", timeout=2).status_code == 200, 30, "dashboard up"
        )
        yield b
    finally:
        b.stop()
        stop_ingest(ingest)
        broker.stop()
    assert "Traceback" not in b.logs(), b.logs()
    assert "Traceback" not in ingest.log(), ingest.log()


def login(b: Guarded) -> dict[str, Any]:
    r = httpx.post(f"{b.dash}/api/login", json={"password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    doc["cookie"] = r.headers["set-cookie"]
    return doc


def test_dashboard_refuses_anonymous_use(guarded: Guarded) -> None:
    d = guarded.dash
    for path in (
        "/api/devices",
        "/api/events",
        "/api/config",
        "/api/health",
        "/api/viewer-token",
        "/api/devices/cam1/snapshot",
    ):
        r = httpx.get(d + path, timeout=10)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.json()["detail"] == "authentication required: log in at /login"
    r = httpx.post(f"{d}/api/devices/cam1/set", json={"streaming": True}, timeout=10)
    assert r.status_code == 401
    r = httpx.get(d + "/", timeout=10)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    page = httpx.get(d + "/login", timeout=10)
    assert page.status_code == 200 and 'action="/api/login"' in page.text
    assert httpx.get(d + "/static/app.js", timeout=10).status_code == 200  # no data in it
    assert httpx.get(d + "/static/player.js", timeout=10).status_code == 200
    assert httpx.get(d + "/static/../service.py", timeout=10).status_code == 404
    # A forged session (right shape, unknown secret) and an expired one.
    forged = auth.issue("some-other-secret-1234", "session", 60, now=time.time())
    r = httpx.get(d + "/api/devices", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert r.status_code == 401 and "signature does not match" in r.json()["detail"]
    old = auth.issue(SECRET, "session", 60, now=time.time() - 120)
    r = httpx.get(d + "/api/devices", cookies={auth.SESSION_COOKIE: old}, timeout=10)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    # A viewer token watches; it does not drive the fleet.
    viewer = auth.issue(SECRET, "viewer", 60, now=time.time())
    r = httpx.get(d + "/api/devices", headers={"Authorization": f"Bearer {viewer}"}, timeout=10)
    assert r.status_code == 401 and "viewer token does not grant" in r.json()["detail"]


def test_login_cookie_csrf_and_origin(guarded: Guarded) -> None:
    d = guarded.dash
    r = httpx.post(f"{d}/api/login", json={"password": "wrong password"}, timeout=10)
    assert (r.status_code, r.json()["detail"]) == (401, "wrong password")
    r = httpx.post(
        f"{d}/api/login",
        content=b"password=nope",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/login?failed=1")
    r = httpx.post(
        f"{d}/api/login",
        json={"password": PASSWORD},
        timeout=10,
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403, r.text

    doc = login(guarded)
    cookie = doc["cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    session = {auth.SESSION_COOKIE: doc["token"]}
    with httpx.Client(base_url=d, cookies=session, timeout=10) as c:
        cfg = c.get("/api/config").json()
        assert cfg["auth"] == "password" and cfg["banner"] is None
        assert cfg["csrf"] == doc["csrf"] and cfg["viewer_tokens"] is True
        assert guarded.ingest is not None
        assert cfg["ingest_ws_url"] == f"ws://{{host}}:{guarded.ingest.http_port}"
        assert c.get("/api/devices").status_code == 200
        assert c.get("/", follow_redirects=False).status_code == 200
        assert c.get("/login", follow_redirects=False).headers["location"] == "/"
        # The cookie alone does not make a POST: the CSRF header must match this session.
        r = c.post("/api/devices/cam9/set", json={"fps": 10})
        assert r.status_code == 403 and "X-Flumph-CSRF" in r.json()["detail"]
        other = auth.csrf_token(SECRET, auth.issue(SECRET, "session", 60, now=time.time()))
        r = c.post("/api/devices/cam9/set", json={"fps": 10}, headers={auth.CSRF_HEADER: other})
        assert r.status_code == 403
        r = c.post(
            "/api/devices/cam9/set",
            json={"fps": 10},
            headers={auth.CSRF_HEADER: doc["csrf"], "Origin": "http://127.0.0.1:1"},
        )
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = c.post(
            "/api/devices/cam9/set", json={"fps": 10}, headers={auth.CSRF_HEADER: doc["csrf"]}
        )
        assert r.status_code == 200, r.text
        assert c.post("/api/logout").json() == {"ok": True}
    # A script with the token as a Bearer header needs no CSRF header (no ambient credential).
    # (A fresh login: the one above was logged out, which revoked its token.)
    r = httpx.post(
        f"{d}/api/devices/cam9/set",
        json={"fps": 12},
        timeout=10,
        headers={"Authorization": f"Bearer {login(guarded)['token']}"},
    )
    assert r.status_code == 200 and r.json()["fps"] == 12


def _ws_first(url: str, message: dict[str, Any] | None) -> tuple[list[dict[str, Any]], int | None]:
    """Text messages until the server closes (or 2 s of quiet), and the close code."""
    texts: list[dict[str, Any]] = []
    ws = connect(url, open_timeout=10)
    try:
        if message is not None:
            # A refusing server may already have closed: its reason is still in the buffer.
            with contextlib.suppress(ConnectionClosed):
                ws.send(json.dumps(message))
        while len(texts) < 4:
            m = ws.recv(timeout=2)
            if isinstance(m, str):
                texts.append(json.loads(m))
    except TimeoutError:
        return texts, None
    except ConnectionClosed as e:
        return texts, e.rcvd.code if e.rcvd else None
    finally:
        with contextlib.suppress(ConnectionClosed):
            ws.close()
    return texts, None


def test_ingest_refuses_anonymous_viewers_streamers_and_api(guarded: Guarded) -> None:
    ingest = guarded.ingest
    assert ingest is not None
    sub = {"type": "subscribe", "stream_id": "cam7", "wait": True}
    texts, code = _ws_first(f"{ingest.ws}/ws/view/cam7", sub)
    assert code == 1008 and texts[0]["type"] == "error", texts
    assert texts[0]["message"].startswith("unauthorized: log in to the dashboard"), texts
    forged = auth.issue("some-other-secret-1234", "viewer", 60, now=time.time())
    texts, code = _ws_first(f"{ingest.ws}/ws/view/cam7?token={forged}", sub)
    assert code == 1008 and "signature does not match" in texts[0]["message"], texts
    reg = {"type": "register", "stream_id": None}
    texts, code = _ws_first(f"{ingest.ws}/ws/stream", reg)
    assert code == 1008 and texts[0]["message"].startswith("unauthorized"), texts
    assert httpx.get(f"{ingest.http}/api/streams", timeout=10).status_code == 401
    assert httpx.get(f"{ingest.http}/api/errors", timeout=10).status_code == 401
    assert httpx.get(f"{ingest.http}/health", timeout=10).status_code == 200  # seed: open

    # The dashboard's viewer token opens the viewer WebSocket (and only that).
    session = login(guarded)["token"]
    r = httpx.get(
        f"{guarded.dash}/api/viewer-token", cookies={auth.SESSION_COOKIE: session}, timeout=10
    )
    viewer = r.json()["token"]
    assert r.json()["expires_in"] == 120
    texts, _ = _ws_first(f"{ingest.ws}/ws/view/cam7?token={viewer}", sub)
    assert [t["type"] for t in texts[:2]] == ["subscribed", "waiting"], texts
    texts, code = _ws_first(f"{ingest.ws}/ws/stream?token={viewer}", reg)
    assert code == 1008 and "viewer token does not grant" in texts[0]["message"], texts
    texts, _ = _ws_first(f"{ingest.ws}/ws/stream?token={session}", reg)
    assert texts[0]["type"] == "registered", texts
    bearer = {"Authorization": f"Bearer {session}"}
    assert httpx.get(f"{ingest.http}/api/streams", headers=bearer, timeout=10).status_code == 200
    cookie = {auth.SESSION_COOKIE: session}
    assert httpx.get(f"{ingest.http}/api/streams", cookies=cookie, timeout=10).status_code == 200


def test_login_page_then_grid_and_video_through_the_other_origin(guarded: Guarded) -> None:
    guarded.agent("cam1", "--codec", "av1")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(guarded.dash + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=password]", "not it")
        page.click("button[type=submit]")
        page.wait_for_selector("#failed:visible")
        assert page.inner_text("#failed") == "Wrong password."
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector(f"{card('cam1')}[data-presence=online]", timeout=30_000)
        assert not page.is_visible("#banner") and page.is_visible("#logout")
        page.click(f"{card('cam1')} button.watch")  # ingest on another port: viewer token
        wait_playing(page, "cam1", 320)
        page.click(f"{card('cam1')} button.snapshot")  # a POST through the CSRF check
        page.wait_for_function(
            f"() => document.querySelector('{card('cam1')} .result').textContent"
            " === 'snapshot: done'",
            timeout=30_000,
        )
        # The snapshot is the card's picture (shown in place of the live tile once it closes).
        page.wait_for_selector(f"{card('cam1')} .stage[data-picture=snapshot]", timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-logged-in.png"))
        page.click("#logout button")
        page.wait_for_url("**/login")
        assert httpx.get(f"{guarded.dash}/api/devices", timeout=10).status_code == 401


def test_logout_revokes_the_session(guarded: Guarded) -> None:
    """A copy of the session token (cookie or Bearer) is worthless once its session logs out;
    other sessions carry on."""
    d = guarded.dash
    doc = login(guarded)
    other = login(guarded)
    cookie = {auth.SESSION_COOKIE: doc["token"]}
    with httpx.Client(base_url=d, timeout=10, cookies=cookie) as c:
        assert c.get("/api/devices").status_code == 200
        assert c.post("/api/logout").json() == {"ok": True}
    with httpx.Client(base_url=d, timeout=10, cookies=cookie) as c:  # a copy of the cookie
        r = c.get("/api/devices")
        assert r.status_code == 401 and "logged out" in r.json()["detail"], r.text
        assert c.get("/", follow_redirects=False).status_code == 303
    with httpx.Client(base_url=d, timeout=10) as c:
        r = c.get("/api/devices", headers={"Authorization": f"Bearer {doc['token']}"})
        assert r.status_code == 401 and "logged out" in r.json()["detail"], r.text
        bearer = {"Authorization": f"Bearer {other['token']}"}
        assert c.get("/api/devices", headers=bearer).status_code == 200


def test_failed_logins_back_off_but_never_lock_the_password_out(guarded: Guarded) -> None:
    """Guessing from one address meets a growing wait (429, unchecked); the right password gets
    in as soon as the current wait is over, never minutes later; another address is not slowed.
    Last in the module: it leaves 127.0.0.1 in backoff."""
    url = f"{guarded.dash}/api/login"
    codes = []
    for i in range(40):
        r = httpx.post(url, json={"password": f"guess {i}"}, timeout=10)
        codes.append(r.status_code)
        if r.status_code == 429:
            # Keep guessing as fast as the server allows: 5 free, then 1, 2, 4 s ...
            assert "too many failed logins" in r.json()["detail"]
            wait = int(r.headers["retry-after"])
            assert 1 <= wait <= 30, wait
            if codes.count(401) >= 8:
                break
            time.sleep(wait)
    assert codes[:5] == [401] * 5 and 429 in codes, codes
    # Another address is not slowed by this one (the account allows 20 failures in all).
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    with other:
        assert other.post(url, json={"password": PASSWORD}).status_code == 200
    # The right password from the guessing address waits out the current backoff, no more.
    r = httpx.post(url, json={"password": PASSWORD}, timeout=10)
    assert r.status_code == 429
    wait = int(r.headers["retry-after"])
    assert wait <= 30
    time.sleep(wait + 0.2)
    r = httpx.post(url, json={"password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text


def test_one_process_with_a_password(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`flumph up` with a password: page, API and viewer WebSocket on one origin, one secret."""
    env = {
        "FLUMPH_DASHBOARD_PASSWORD": PASSWORD,
        "FLUMPH_DASHBOARD_AUTH_SECRET": SECRET,
        "FLUMPH_INGEST_AUTH_SECRET": SECRET,
    }
    up = start_up_demo(tmp_path_factory.mktemp("up-guarded"), env)
    try:
        ws = up.dash.replace("http://", "ws://")
        texts, code = _ws_first(f"{ws}/ws/view/demo", {"type": "subscribe", "stream_id": "demo"})
        assert code == 1008 and texts[0]["message"].startswith("unauthorized"), texts
        assert httpx.get(f"{up.dash}/api/streams", timeout=10).status_code == 401
        assert httpx.get(f"{up.dash}/api/devices", timeout=10).status_code == 401
        with chromium() as browser:
            page = browser.new_page()
            page.goto(up.dash + "/")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector(f"{card('demo')}[data-presence=online]", timeout=60_000)
            page.click(f"{card('demo')} button.watch")
            wait_playing(page, "demo", 640)
        # Logging out ends the session in the ingest of the same process too.
        token = httpx.post(f"{up.dash}/api/login", json={"password": PASSWORD}, timeout=10)
        bearer = {"Authorization": f"Bearer {token.json()['token']}"}
        assert httpx.get(f"{up.dash}/api/streams", headers=bearer, timeout=10).status_code == 200
        assert httpx.post(f"{up.dash}/api/logout", headers=bearer, timeout=10).status_code == 200
        r = httpx.get(f"{up.dash}/api/streams", headers=bearer, timeout=10)
        assert r.status_code == 401 and "logged out" in r.json()["detail"], r.text
        sub = {"type": "subscribe", "stream_id": "demo"}
        texts, code = _ws_first(f"{ws}/ws/view/demo?token={token.json()['token']}", sub)
        assert code == 1008 and "logged out" in texts[0]["message"], texts
    finally:
        up.stop()
    assert "Traceback" not in up.logs(), up.logs()
