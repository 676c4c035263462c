"""The SRT receive floor: a process that accepts every SRT caller with Flumph's libsrt binding
(``flumph.srt.SrtServer``, the ingest's listener) and discards what arrives. What it costs is the
part of the ingest's cost that is SRT itself.

    python -m bench.srt_floor --port 9000   # prints {"event": "ready", ...}; runs until SIGTERM

``--no-tsbpd`` receives without libsrt's timestamp-based delivery (``SrtOptions(tsbpd=False)``);
``--timeline FILE`` records when each message tagged by bench/srt_tsbpd.py arrived (JSON, at exit).
Otherwise a round's messages reach the handler joined, as the ingest receives them. ``--lazy``
reads every connection once per lazy period (``SrtSocket.read_lazily``), as the ingest reads a
stream nobody watches.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import threading
import time
from pathlib import Path

from flumph import srt

# bench/srt_tsbpd.py's message header: magic, stream, frame, packet, packets in frame, sent at (s).
TAG = struct.Struct("!4sHIHHd")
TAG_MAGIC = b"TSBP"
MAX_TIMELINE = 2_000_000


class Discard:
    def __init__(self, timeline: bool = False, lazy: bool = False) -> None:
        self.lazy = lazy
        self.connections = 0
        self.bytes = 0
        self.timeline: list[tuple[float, int, int, int, int, float]] | None = (
            [] if timeline else None
        )

    def check(self, streamid: str, peer: tuple[str, int]) -> srt.Accept | srt.Reject:
        return srt.Accept()

    def on_connect(self, conn: srt.SrtSocket) -> None:
        self.connections += 1

    def on_data(self, conn: srt.SrtSocket, data: bytes) -> None:
        conn.read_lazily = self.lazy
        self.bytes += len(data)
        timeline = self.timeline
        if timeline is not None and len(timeline) < MAX_TIMELINE and data[:4] == TAG_MAGIC:
            _, stream, frame, packet, packets, sent = TAG.unpack_from(data)
            timeline.append((time.monotonic(), stream, frame, packet, packets, sent))

    def on_close(self, conn: srt.SrtSocket, error: str | None) -> None:
        pass


def _extra_options(server: srt.SrtServer, extra: list[tuple[int, ...]]) -> None:
    from flumph.srt.options import _set_int

    options = server._options
    plain = type(options)._apply

    class Options(type(options)):  # type: ignore[misc]
        def _apply(self, sid: int, *, caller: bool) -> None:
            plain(self, sid, caller=caller)
            for number, value in extra:
                _set_int(sid, number, value, f"SRT_SOCKOPT {number}")

    server._options = Options(**{f: getattr(options, f) for f in options.__dataclass_fields__})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.srt_floor", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=int, default=120)
    p.add_argument("--no-tsbpd", action="store_true", help="SrtOptions(tsbpd=False)")
    p.add_argument("--timeline", type=Path, help="write tagged messages' arrivals here at exit")
    p.add_argument("--lazy", action="store_true", help="read each connection once a lazy period")
    p.add_argument("--sockopt", action="append", default=[], metavar="NUMBER=INT",
                   help="experiment: an extra integer libsrt option (SRT_SOCKOPT number) set on "
                        "the listener, which accepted sockets inherit; repeatable")  # fmt: skip
    args = p.parse_args(argv)
    srt.set_libsrt_log_level(2)
    handler = Discard(timeline=args.timeline is not None, lazy=args.lazy)
    options = srt.SrtOptions(latency_ms=args.latency_ms, tsbpd=not args.no_tsbpd)
    # As the ingest receives (a round's messages joined), except where each message is looked at.
    join = args.timeline is None
    server = srt.SrtServer(args.host, args.port, options, handler, join_messages=join)
    if args.sockopt:
        _extra_options(server, [tuple(map(int, x.split("=", 1))) for x in args.sockopt])
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sys.stdout.write(json.dumps({"event": "ready", "port": server.port}) + "\n")
    sys.stdout.flush()
    stop.wait()
    server.stop()
    if args.timeline is not None and handler.timeline is not None:
        args.timeline.write_text(json.dumps(handler.timeline), encoding="utf-8")
    sys.stdout.write(json.dumps({"event": "done", "connections": handler.connections,
                                 "bytes": handler.bytes}) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
