"""Data budget and usage routes of the dashboard, and the vendored chart library.

| route                                  | what                                                  |
|----------------------------------------|-------------------------------------------------------|
| ``GET /api/usage``                     | every device: budget state, period to date, budget,   |
|                                        | projection to the period's end                        |
| ``GET /api/devices/{id}/usage``        | one device: that, plus the last 48 h by the hour (per |
|                                        | kind) and the period to date hour by hour             |
| ``POST /api/devices/{id}/grant``       | ``{"mb": N}`` → ``cmd/grant``: a one-shot allowance   |
|                                        | for this period; ``?wait=S`` waits for the ack        |
| ``GET /static/vendor/{name}``          | the chart library (``static/vendor/README.md``)       |

The budget itself (``data_budget_mb``, ``budget_reset_day``, ``budget_pacing``) is a setting: it
goes through ``POST /api/devices/{id}/set`` like any other.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from flumph.control import ContractError
from flumph.jsonlimits import JsonLimitError, loads
from flumph.lifecycle import UnknownDevice

from .access import Access
from .bodies import read_body
from .fleet import Fleet
from .fleet_link import Unavailable
from .usage_tracker import UsageTracker

VENDOR = resources.files("flumph.dashboard") / "static" / "vendor"
VENDOR_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:js|css)")
MAX_GRANT_BODY = 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def _grant_args(body: bytes) -> dict[str, Any]:
    """``{"mb": N}`` and nothing else; ContractError names what is wrong."""
    try:
        doc = loads(body or b"null", "grant", max_bytes=MAX_GRANT_BODY, max_depth=2)
    except JsonLimitError as e:
        raise ContractError(f'{e} (the body must be JSON, e.g. {{"mb": 50}})') from None
    if not isinstance(doc, dict) or set(doc) != {"mb"}:
        raise ContractError('grant: the body must be {"mb": N} (megabytes, > 0)')
    return doc


def add_usage_routes(
    app: FastAPI, fleet: Fleet, usage: UsageTracker, access: Access | None = None
) -> None:
    router = APIRouter(dependencies=[Depends(access.guard)] if access is not None else [])

    @router.get("/api/usage")
    async def fleet_usage() -> list[dict[str, Any]]:
        out = []
        for dev in sorted(fleet.devices.values(), key=lambda d: d.device_id):
            if dev.status is None and usage.mark(dev.device_id) is None:
                continue  # not a known device
            doc = await usage.document(dev)
            for key in ("hourly", "cumulative"):
                del doc[key]
            out.append(doc)
        return out

    @router.get("/api/devices/{device_id}/usage", response_model=None)
    async def device_usage(device_id: str) -> dict[str, Any] | JSONResponse:
        dev = fleet.devices.get(device_id)
        if dev is None:
            return _error(404, f"no device {device_id!r} has been seen")
        return await usage.document(dev)

    @router.post("/api/devices/{device_id}/grant", response_model=None)
    async def grant(
        device_id: str, request: Request, wait: float | None = Query(default=None, ge=0, le=60)
    ) -> JSONResponse:
        try:
            args = _grant_args(await read_body(request, MAX_GRANT_BODY))
            rec = await fleet.command(device_id, "grant", wait, args)
        except UnknownDevice as e:
            return _error(404, str(e))
        except ContractError as e:
            return _error(422, str(e))
        except Unavailable as e:
            return _error(503, str(e))
        view = rec.view() | {"mb": args["mb"]}
        if wait and rec.state == "pending":
            return JSONResponse(status_code=504, content=view)
        return JSONResponse(status_code=200 if wait else 202, content=view)

    app.include_router(router)
    # Read once here, not per request: file reads would block the event loop.
    vendored = {
        f.name: f.read_bytes()
        for f in VENDOR.iterdir()
        if f.is_file() and VENDOR_NAME_RE.fullmatch(f.name)
    }

    @app.get("/static/vendor/{name}", response_model=None)
    async def vendor(name: str) -> Response:
        data = vendored.get(name)
        if data is None:
            return _error(404, f"no vendored file {name!r}")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(
            data, media_type=f"{kind}; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )
