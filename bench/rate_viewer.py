"""A viewer for the rate benchmarks and tests: subscribes to an ingest stream over the relay
protocol on its own thread and records when each media fragment arrived."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@dataclass
class ViewerLog:
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each fragment
    sizes: list[int] = field(default_factory=list)
    texts: list[dict[str, object]] = field(default_factory=list)
    error: str | None = None

    def frames_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.arrivals if start <= t < end)

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """(longest time without a fragment within [start, end], when it began)."""
        times = [start] + [t for t in self.arrivals if start <= t < end] + [end]
        gap, at = 0.0, start
        for a, b in itertools.pairwise(times):
            if b - a > gap:
                gap, at = b - a, a
        return gap, at


class Viewer:
    def __init__(self, ws_base: str, stream_id: str, *, wait: bool = True) -> None:
        self.url = f"{ws_base}/ws/view/{stream_id}"
        self.stream_id = stream_id
        self.wait = wait
        self.log = ViewerLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"viewer-{stream_id}", daemon=True)

    def start(self) -> Viewer:
        self._thread.start()
        return self

    def stop(self) -> ViewerLog:
        self._stop.set()
        self._thread.join(10)
        return self.log

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=5) as ws:
                    ws.send(json.dumps({"type": "subscribe", "stream_id": self.stream_id}))
                    init_next = False
                    while not self._stop.is_set():
                        try:
                            msg = ws.recv(timeout=0.2)
                        except TimeoutError:
                            continue
                        if isinstance(msg, bytes):
                            if init_next:  # an init segment, not a frame
                                init_next = False
                                continue
                            self.log.arrivals.append(time.monotonic())
                            self.log.sizes.append(len(msg))
                        else:
                            doc = json.loads(msg)
                            self.log.texts.append(doc)
                            init_next = doc.get("type") == "media"
                            if doc.get("type") == "error" and time.monotonic() < deadline:
                                break  # not published yet: subscribe again
                    else:
                        return
            except (OSError, ConnectionClosed) as e:
                self.log.error = str(e)
            if not self.wait or time.monotonic() > deadline:
                return
            time.sleep(0.2)
