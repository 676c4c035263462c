"""SRT stream ids of publishers, in the two forms MediaMTX accepts.

``publish:<id>`` (optionally ``publish:<id>:<user>:<pass>``) and the SRT access-control form
``#!::r=<id>,m=publish[,u=<user>][,s=<pass>]...``. MediaMTX reads ``s=`` as the password
(the SRT document calls it a session id); we keep that reading so the same publisher
configuration works against both servers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEVICE_ID_RE: re.Pattern[str] = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")

_ACCESS_CONTROL_PREFIX = "#!::"
_ACCESS_CONTROL_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\Z")
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class PublishRequest:
    stream_id: str
    user: str | None
    # Never printed: a stream id may carry a MediaMTX-style password.
    password: str | None = field(default=None, repr=False)


def _shown(text: str) -> str:
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS] + "…")
    return repr(text)


def _checked_id(candidate: str, whole: str) -> str:
    if not candidate:
        raise ValueError(f"stream id {_shown(whole)} names no device id")
    if not DEVICE_ID_RE.match(candidate):
        raise ValueError(
            f"device id {_shown(candidate)} in stream id {_shown(whole)} is invalid: "
            "it must match [a-z0-9][a-z0-9-]{0,63}"
        )
    return candidate


def _parse_colon_form(s: str) -> PublishRequest:
    parts = s.split(":")
    if parts[0] != "publish":
        if parts[0] == "read":
            raise ValueError(f"stream id {_shown(s)} asks to read; the ingest accepts publishers")
        raise ValueError(
            f"stream id {_shown(s)} is neither 'publish:<id>' nor '#!::r=<id>,m=publish'"
        )
    if len(parts) == 2:
        return PublishRequest(stream_id=_checked_id(parts[1], s), user=None)
    if len(parts) == 4:
        user = parts[2] or None
        password = parts[3] or None
        return PublishRequest(stream_id=_checked_id(parts[1], s), user=user, password=password)
    raise ValueError(
        f"stream id {_shown(s)} has {len(parts) - 1} ':'-separated fields after 'publish'; "
        "expected 'publish:<id>' or 'publish:<id>:<user>:<pass>'"
    )


def _parse_access_control(s: str) -> PublishRequest:
    body = s[len(_ACCESS_CONTROL_PREFIX) :]
    if not body:
        raise ValueError(f"stream id {_shown(s)} has no keys after '#!::'")
    values: dict[str, str] = {}
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"stream id {_shown(s)}: item {_shown(item)} is not key=value")
        if not _ACCESS_CONTROL_KEY_RE.match(key):
            raise ValueError(f"stream id {_shown(s)}: key {_shown(key)} is not a valid key")
        if key in values:
            raise ValueError(f"stream id {_shown(s)}: key {key!r} appears twice")
        values[key] = value
    # The SRT access-control document makes 'request' the default mode.
    mode = values.get("m", "request")
    if mode != "publish":
        raise ValueError(
            f"stream id {_shown(s)} has mode m={_shown(mode)}; the ingest accepts only m=publish"
        )
    if "r" not in values:
        raise ValueError(f"stream id {_shown(s)} has no r=<device id>")
    stream_id = _checked_id(values["r"], s)
    return PublishRequest(
        stream_id=stream_id, user=values.get("u") or None, password=values.get("s") or None
    )


def parse_publish_streamid(s: str) -> PublishRequest:
    """Parse the stream id a publisher sent; ValueError names what is wrong with it."""
    if not s:
        raise ValueError("stream id is empty; expected 'publish:<id>' or '#!::r=<id>,m=publish'")
    if s.startswith(_ACCESS_CONTROL_PREFIX):
        return _parse_access_control(s)
    if s.startswith("#!:"):
        raise ValueError(
            f"stream id {_shown(s)} uses an access-control syntax other than '#!::key=value,...'"
        )
    return _parse_colon_form(s)
