"""The JSON text messages of the WebSocket relay protocol (seeds/002), as pure functions.

Kept exactly as the seed specifies: ``register``/``registered`` for streamers,
``subscribe``/``subscribed``/``error`` for viewers. Flumph's additions: ``media`` (mime of the fMP4
that follows), ``skipped`` (frames a slow viewer lost), ``ended``, ``waiting`` and
``unavailable`` (a waiting viewer's camera may not stream now, e.g. its data budget is used up).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from flumph.jsonlimits import JsonLimitError, loads_object
from flumph.media.streamid import DEVICE_ID_RE

# Custom ids from WebSocket streamers: the 8-char generated form and device ids both fit.
STREAM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_TEXT_MESSAGE = 4096
MAX_DEPTH = 4  # the protocol's messages are flat objects


@dataclass(frozen=True)
class Register:
    stream_id: str | None


@dataclass(frozen=True)
class Subscribe:
    stream_id: str
    # Flumph extension: wait for a device that is not streaming yet (on-demand start) instead
    # of the seed's "stream not found".
    wait: bool = False
    # Flumph extension: the newest keyframe only, then a close (see still.py); not a viewer.
    still: bool = False


def _object(text: str) -> dict[str, object]:
    if len(text) > MAX_TEXT_MESSAGE:
        raise ValueError(f"message too long: {len(text)} characters (limit {MAX_TEXT_MESSAGE})")
    try:
        return loads_object(text, "malformed message", max_depth=MAX_DEPTH)
    except JsonLimitError as e:
        raise ValueError(str(e)) from None


def _stream_id(doc: dict[str, object], *, required: bool) -> str | None:
    sid = doc.get("stream_id")
    if sid is None:
        if required:
            raise ValueError("malformed message: stream_id is required")
        return None
    if not isinstance(sid, str) or not STREAM_ID_RE.fullmatch(sid):
        raise ValueError(
            f"malformed message: stream_id must be 1-64 letters, digits, '-' or '_' (got {sid!r})"
        )
    return sid


def parse_register(text: str) -> Register:
    doc = _object(text)
    if doc.get("type") != "register":
        raise ValueError(f"expected a register message, got type {doc.get('type')!r}")
    return Register(_stream_id(doc, required=False))


def parse_subscribe(text: str) -> Subscribe:
    doc = _object(text)
    if doc.get("type") != "subscribe":
        raise ValueError(f"expected a subscribe message, got type {doc.get('type')!r}")
    sid = _stream_id(doc, required=True)
    assert sid is not None
    wait = doc.get("wait", False)
    if not isinstance(wait, bool):
        raise ValueError(f"malformed message: wait must be true or false (got {wait!r})")
    if wait and not DEVICE_ID_RE.fullmatch(sid):
        raise ValueError(f"wait is only for device ids ([a-z0-9][a-z0-9-]{{0,63}}), not {sid!r}")
    still = doc.get("still", False)
    if not isinstance(still, bool):
        raise ValueError(f"malformed message: still must be true or false (got {still!r})")
    if still and wait:
        raise ValueError("give wait or still, not both: a still never waits for a stream")
    return Subscribe(sid, wait, still)


def registered(stream_id: str) -> str:
    return json.dumps({"type": "registered", "stream_id": stream_id})


def subscribed(stream_id: str) -> str:
    return json.dumps({"type": "subscribed", "stream_id": stream_id})


def waiting(stream_id: str) -> str:
    return json.dumps({"type": "waiting", "stream_id": stream_id})


def unavailable(stream_id: str, reason: str, message: str) -> str:
    """Flumph extension: a waiting viewer's device cannot stream now, and why in words."""
    return json.dumps(
        {"type": "unavailable", "stream_id": stream_id, "reason": reason, "message": message}
    )


def error(message: str) -> str:
    return json.dumps({"type": "error", "message": message})
