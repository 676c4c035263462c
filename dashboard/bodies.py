"""Request bodies read within a size limit and parsed within a depth limit.

Starlette's ``request.body()`` reads whatever the client sends into memory; these helpers stop
reading at the limit (413) and parse JSON through :mod:`flumph.jsonlimits` (400 naming the
problem), so no body can cost more than the limit or reach a recursive parser.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request

from flumph.jsonlimits import DEFAULT_MAX_DEPTH, JsonLimitError, loads_object

MAX_BODY_BYTES = 64 * 1024


async def read_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body, or 413 as soon as it grows past ``max_bytes`` (announced or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, detail=f"request body of {declared} bytes exceeds {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, detail=f"request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(
    body: bytes, what: str, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    """The body as a JSON object, or 400 naming the problem."""
    try:
        return loads_object(body, what, max_bytes=max_bytes, max_depth=max_depth)
    except JsonLimitError as e:
        raise HTTPException(400, detail=str(e)) from None
