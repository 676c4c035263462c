"""Viewer process: one WebSocket viewer per stream, each joining while its stream runs.

Run by ingest_fanout (``python -m bench.ingest_viewer``): prints ``{"event": "ready"}``, reads one
JSON plan line on stdin, connects each viewer at its ``join_at`` (time.monotonic), subscribes, and
records when the init segment and the first keyframe fragment arrive and, for every fragment, its
decode time and arrival time. Viewers leave at ``stop_at`` (or on ``ended``); the result goes to the
plan's result file.

Like a browser, the client offers permessage-deflate unless the plan says otherwise: what the server
then does with video fragments is part of what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from .ingest_fmp4 import fragment_info, init_timescale


@dataclass
class ViewerLog:
    stream_id: str
    join_at: float
    t_connect: float = 0.0  # just before the TCP connect
    t_open: float = 0.0  # WebSocket handshake done
    t_subscribed: float = 0.0
    t_init: float = 0.0
    t_first_key: float = 0.0  # init and a keyframe fragment received: the first decodable frame
    timescale: int = 0
    frames: list[tuple[int, float, bool]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)
    ended: bool = False
    error: str | None = None


async def _receive(ws: ClientConnection, log: ViewerLog) -> None:
    async for message in ws:
        now = time.monotonic()
        if isinstance(message, str):
            kind = json.loads(message).get("type")
            if kind != "media" or len(log.texts) < 20:
                log.texts.append(message[:200])
            if kind == "subscribed":
                log.t_subscribed = now
            elif kind == "ended":
                log.ended = True
                return
            elif kind == "error":
                log.error = message[:200]
                return
            continue
        if not log.timescale:
            log.timescale = init_timescale(message)
            log.t_init = now
            continue
        decode_time, sync = fragment_info(message)
        log.frames.append((decode_time, now, sync))
        if sync and not log.t_first_key:
            log.t_first_key = now


async def _view(url: str, log: ViewerLog, stop_at: float, deflate: bool) -> None:
    await asyncio.sleep(max(0.0, log.join_at - time.monotonic()))
    log.t_connect = time.monotonic()
    try:
        async with asyncio.timeout(max(0.1, stop_at - time.monotonic())):
            async with connect(
                url + log.stream_id,
                max_size=16 * 1024 * 1024,
                compression="deflate" if deflate else None,
                open_timeout=30,
            ) as ws:
                log.t_open = time.monotonic()
                log.extensions = [type(e).__name__ for e in ws.protocol.extensions]
                await ws.send(json.dumps({"type": "subscribe", "stream_id": log.stream_id}))
                await _receive(ws, log)
    except TimeoutError:
        pass  # stop_at reached: the normal way out while the stream still runs
    except Exception as e:
        log.error = log.error or f"{type(e).__name__}: {e}"


async def run(plan: dict[str, Any]) -> list[ViewerLog]:
    logs = [ViewerLog(v["id"], float(v["join_at"])) for v in plan["viewers"]]
    stop_at = float(plan["stop_at"])
    deflate = bool(plan.get("deflate", True))
    async with asyncio.TaskGroup() as group:
        for log in logs:
            group.create_task(_view(plan["url"], log, stop_at, deflate))
    return logs


def main() -> int:
    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        return 0
    plan = json.loads(line)
    logs = asyncio.run(run(plan))
    result = [vars(log) for log in logs]
    Path(plan["result_path"]).write_text(json.dumps(result), encoding="utf-8")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps({"event": "done"}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
