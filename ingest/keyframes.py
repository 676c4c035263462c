"""Keyframes on demand: the ingest asks a device for one (MQTT ``<p>/<dev>/cmd/keyframe``) when a
viewer would otherwise wait on a long cached GOP, and when SRT reports losses it could not repair.

Why: devices now send a keyframe every 30 s at most (a keyframe costs 1-1.5 s of the stream's
bytes; see flumph/settings.py), so a viewer joining late would be handed up to 30 s of cached
frames to decode before the live picture, and a frame SRT gave up on would break the picture
until the next keyframe. A keyframe asked for costs the device one keyframe, only when someone
needs it.

- **Join**: a viewer joining an SRT stream whose cached GOP started more than ``JOIN_GOP_S`` ago
  gets the init segment at once and then waits for the fresh keyframe (about one RTT plus the SRT
  latency away); if none comes within ``JOIN_WAIT_S`` (a publisher that cannot make one: ffmpeg,
  a copied camera stream, no MQTT) it gets the cache as before. Viewers joining within the same
  ``MIN_INTERVAL_S`` share one request.
- **Loss**: the SRT receiver's too-late drop counter of a publisher grew since the last poll.

Bounded, because a viewer is an outsider and a keyframe costs the device's metered bytes: at most
one request per device per ``MIN_INTERVAL_S`` and ``MAX_PER_HOUR`` an hour; past that, joiners get
the cache. Only known devices (a retained status: provisioned or seen online) are asked, only
while an SRT publisher is connected, and the device's own rate controller still holds its
bitrate (a keyframe asked for is paid for by skipped frames, not by extra bytes; see
device-agent/ratecontrol.py).
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable

from flumph.media.streamid import DEVICE_ID_RE

log = logging.getLogger("flumph.ingest.keyframes")

JOIN_GOP_S = 1.0  # a cached GOP older than this is worth a fresh keyframe for a joiner
JOIN_WAIT_S = 1.5  # a joiner waits this long for it before getting the cache
MIN_INTERVAL_S = 2.0  # per device
MAX_PER_HOUR = 120  # per device
LOSS_POLL_S = 1.0  # how often the SRT receivers' drop counters are read (ingest/service.py)


class KeyframeRequests:
    """Decides and rate-limits; ``send(device_id, command_id)`` publishes the command."""

    def __init__(
        self,
        send: Callable[[str, str], None],
        *,
        is_known: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._is_known = is_known
        self._clock = clock
        self._recent: dict[str, collections.deque[float]] = {}
        self._ids = itertools.count(1)
        self.sent = 0
        self.refused = 0

    def ask(self, device_id: str, why: str) -> bool:
        """Ask ``device_id`` for a keyframe now; False when the limits say no (or a request went
        out within ``MIN_INTERVAL_S``, whose keyframe is on its way)."""
        if not DEVICE_ID_RE.fullmatch(device_id):
            return False
        if self._is_known is not None and not self._is_known(device_id):
            return False  # a publisher id nobody provisioned: not a device to spend bytes of
        now = self._clock()
        recent = self._recent.setdefault(device_id, collections.deque(maxlen=MAX_PER_HOUR))
        while recent and now - recent[0] > 3600:
            recent.popleft()
        if recent and now - recent[-1] < MIN_INTERVAL_S:
            return True  # one is on its way
        if len(recent) >= MAX_PER_HOUR:
            self.refused += 1
            return False
        recent.append(now)
        command_id = f"ingest-{next(self._ids)}"
        try:
            self._send(device_id, command_id)
        except Exception:  # asking is best effort: the viewer still gets the cache
            log.exception("could not ask %s for a keyframe", device_id)
            return False
        self.sent += 1
        log.info("asked %s for a keyframe (%s)", device_id, why)
        return True

    def forget(self, device_id: str) -> None:
        self._recent.pop(device_id, None)
