"""Viewer processes for bench/peer_fanout.py: many light viewers of one stream, in one asyncio
process (uvloop when installed), reading and counting rather than decoding.

    python -m bench.fanout_viewers      # reads a JSON plan on stdin, prints one JSON result line

Plan: ``{"kind": "flumph" | "nms", "host", "port", "stream", "viewers": N, "spread_s",
"seconds", "fps", "timescale"}``. A Flumph viewer speaks WebSocket by hand (handshake, one masked
subscribe), parses frame headers, reads each fMP4 fragment's ``tfdt`` and counts frames, skip
notices and gaps in the decode timeline (lost frames); it notes the time from the start of its TCP
connect to the end of its first media fragment (the first decodable frame: the GOP cache starts
at a keyframe). An NMS viewer GETs HTTP-FLV and counts bytes and the time to its first 64 KB.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from typing import Any, cast

_FIRST_FLV_BYTES = 64 * 1024


class FlumphViewer(asyncio.Protocol):
    def __init__(self, plan: dict[str, Any], started: float, done: asyncio.Future[None]) -> None:
        self.plan = plan
        self.started = started
        self.done = done
        self.buf = bytearray()
        self.handshaken = False
        self.skip = 0  # payload bytes of the current frame still to discard
        self.frames = 0
        self.binaries = 0
        self.bytes = 0
        self.dropped_told = 0
        self.first_frame_s: float | None = None
        self.first_dts: int | None = None
        self.last_dts: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        p = self.plan
        self.transport.write(
            f"GET /ws/view/{p['stream']} HTTP/1.1\r\nHost: {p['host']}:{p['port']}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.skip:
            if len(data) <= self.skip:
                self.skip -= len(data)
                return
            data = data[self.skip :]
            self.skip = 0
        self.buf += data
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buf[: end + 4]
            self.handshaken = True
            text = json.dumps({"type": "subscribe", "stream_id": self.plan["stream"]}).encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
            assert self.transport is not None
            self.transport.write(bytes((0x81, 0x80 | len(text))) + mask + masked)
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
            head = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, head = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, head = int.from_bytes(buf[2:10], "big"), 10
            want = min(length, 68) if opcode == 2 else length  # a moof's tfdt ends at 68
            if len(buf) < head + want:
                return
            payload = bytes(buf[head : head + want])
            if opcode == 2:
                self._binary(payload)
            elif opcode == 1:
                message = json.loads(payload)
                if message.get("type") == "skipped":
                    self.dropped_told += int(message["dropped"])
            have = len(buf) - head
            if have >= length:
                del buf[: head + length]
            else:
                self.skip = length - have
                buf.clear()
                return

    def _binary(self, payload: bytes) -> None:
        self.binaries += 1
        if payload[4:8] != b"moof":
            return
        dts = int.from_bytes(payload[60:68], "big")
        self.frames += 1
        if self.first_frame_s is None:
            self.first_frame_s = time.monotonic() - self.started
        if self.first_dts is None:
            self.first_dts = dts
        self.last_dts = dts

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def result(self) -> dict[str, Any]:
        expected = 0
        if self.first_dts is not None and self.last_dts is not None:
            span = self.last_dts - self.first_dts
            expected = round(span * self.plan["fps"] / self.plan["timescale"]) + 1
        return {
            "frames": self.frames,
            "expected": expected,
            "lost": max(0, expected - self.frames),
            "dropped_told": self.dropped_told,
            "bytes": self.bytes,
            "first_frame_ms": None if self.first_frame_s is None else self.first_frame_s * 1000,
        }


class FlvViewer(asyncio.Protocol):
    def __init__(self, plan: dict[str, Any], started: float, done: asyncio.Future[None]) -> None:
        self.plan = plan
        self.started = started
        self.done = done
        self.bytes = 0
        self.first_s: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        p = self.plan
        request = f"GET /live/{p['stream']}.flv HTTP/1.1\r\nHost: {p['host']}:{p['port']}\r\n\r\n"
        cast(asyncio.Transport, transport).write(request.encode())

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.first_s is None and self.bytes >= _FIRST_FLV_BYTES:
            self.first_s = time.monotonic() - self.started

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def result(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "first_64k_ms": None if self.first_s is None else self.first_s * 1000,
        }


async def _one(plan: dict[str, Any], delay: float, end: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    started = time.monotonic()
    kind = FlumphViewer if plan["kind"] == "flumph" else FlvViewer
    viewer: FlumphViewer | FlvViewer = kind(plan, started, done)
    try:
        transport, _ = await loop.create_connection(lambda: viewer, plan["host"], plan["port"])
    except OSError as e:
        return {"error": repr(e)}
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, max(0.1, end - time.monotonic()))
    transport.close()
    return viewer.result()


async def run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    n = int(plan["viewers"])
    end = time.monotonic() + float(plan["spread_s"]) + float(plan["seconds"])
    delays = [float(plan["spread_s"]) * k / max(1, n) for k in range(n)]
    return await asyncio.gather(*(_one(plan, d, end) for d in delays))


def main() -> int:
    plan = json.loads(sys.stdin.readline())
    try:
        import uvloop

        results = uvloop.run(run(plan))
    except ImportError:
        results = asyncio.run(run(plan))
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
