"""/docs, /redoc and /openapi.json follow the API's rules: behind the login when a password is set,
open (as the whole dashboard is) when none is. The app is served in-process; these routes touch
neither MQTT nor the fleet, so its lifespan is not started."""

from __future__ import annotations

import httpx
import pytest

from flumph.dashboard.service import DashboardConfig, DashboardService

PASSWORD = "correct horse battery"
SECRET = "s3cret-shared-by-dashboard-and-ingest"
DOC_PATHS = ["/docs", "/redoc"]


def client(password: str | None) -> httpx.AsyncClient:
    cfg = DashboardConfig(password=password, auth_secret=SECRET if password else None)
    app = DashboardService(cfg).app()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash")


async def test_with_a_password_the_api_docs_need_a_login() -> None:
    async with client(PASSWORD) as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 401 and "log in" in r.json()["detail"], r.text
        for path in DOC_PATHS:
            r = await c.get(path)
            assert (r.status_code, r.headers["location"]) == (303, "/login"), path
        assert (await c.get("/docs/oauth2-redirect")).status_code == 404

        r = await c.post("/api/login", json={"password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        # The cookie (a browser) or the bearer token (a script) opens them.
        r = await c.get("/openapi.json")
        assert r.status_code == 200 and "/api/devices/{device_id}/set" in r.json()["paths"]
        for path in DOC_PATHS:
            r = await c.get(path)
            assert r.status_code == 200 and "/openapi.json" in r.text, path
        c.cookies.clear()
        assert (await c.get("/openapi.json")).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await c.get("/openapi.json", headers=bearer)).status_code == 200


@pytest.mark.parametrize("path", ["/openapi.json", *DOC_PATHS])
async def test_without_a_password_the_api_docs_stay_open(path: str) -> None:
    async with client(None) as c:
        r = await c.get(path)
    assert r.status_code == 200, r.text
