"""SRT publishers: stream-id admission, one demux thread per connection, results onto the hub.

Threads: libsrt's listen callback calls :meth:`check`; the ``srt-epoll`` thread calls
``on_connect``/``on_data``/``on_close``; each connection's :class:`LiveDemuxer` runs in its own
thread. Only :meth:`_deliver`, scheduled with ``call_soon_threadsafe``, touches the hub's streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from flumph import srt
from flumph.media.streamid import parse_publish_streamid

from .demux import (
    ByteFeed,
    DemuxEnd,
    DemuxEvent,
    DemuxFragment,
    DemuxInit,
    FeedOverflow,
    LiveDemuxer,
)
from .hub import Hub, HubError, MediaInit, Stream

log = logging.getLogger("flumph.ingest.srt")


@dataclass
class Publisher:
    conn: srt.SrtSocket
    stream_id: str
    feed: ByteFeed
    demuxer: LiveDemuxer
    stream: Stream | None = None
    token: int = 0
    connected_at: float = field(default_factory=time.monotonic)
    last_stats: srt.SrtStats | None = None


@dataclass(frozen=True)
class RejectRecord:
    at: float
    peer: str
    stream_id: str
    reason: str


class SrtIngest(srt.SrtServerHandler):
    def __init__(
        self,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        *,
        passphrases: Mapping[str, str] | None = None,
        default_passphrase: str | None = None,
        feed_max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.hub = hub
        self.loop = loop
        self.passphrases = dict(passphrases or {})
        self.default_passphrase = default_passphrase
        self.feed_max_bytes = feed_max_bytes
        self.publishers: dict[int, Publisher] = {}
        self.last_demuxer: dict[str, LiveDemuxer] = {}  # touched only by the srt-epoll thread
        # Bounded record of recent refusals, for /api/errors and the tests.
        self.errors: deque[RejectRecord] = deque(maxlen=100)
        self.refused_total = 0

    def _record(self, peer: tuple[str, int] | str, stream_id: str, reason: str) -> None:
        p = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else peer
        self.errors.append(RejectRecord(time.time(), p, stream_id, reason))
        self.refused_total += 1
        log.warning("SRT publisher %s (%s) refused: %s", p, stream_id or "-", reason)

    # --- libsrt listen callback thread ---------------------------------------------------------
    def check(self, streamid: str, peer: tuple[str, int]) -> srt.Accept | srt.Reject:
        try:
            req = parse_publish_streamid(streamid)
        except ValueError as e:
            self._record(peer, streamid, str(e))
            return srt.Reject(srt.REJECT_BAD_REQUEST, str(e))
        try:
            self.hub.check_publish(req.stream_id, "srt")
        except HubError as e:
            reason = srt.REJECT_CONFLICT if "busy" in str(e) else srt.REJECT_OVERLOAD
            self._record(peer, req.stream_id, str(e))
            return srt.Reject(reason, str(e))
        secret = self.passphrases.get(req.stream_id, self.default_passphrase)
        return srt.Accept(passphrase=secret)

    # --- srt-epoll thread ----------------------------------------------------------------------
    def on_connect(self, conn: srt.SrtSocket) -> None:
        try:
            req = parse_publish_streamid(conn.streamid)
        except ValueError as e:  # check() already refused these; defence in depth
            self._record(conn.peer, conn.streamid, str(e))
            conn.close()
            return
        feed = ByteFeed(self.feed_max_bytes)
        # Forget sessions whose streams have ended; keep the one a returning publisher continues.
        # A stream without an init segment is a new one (re-created empty by a viewer waiting
        # for an on-demand start): continuing the old session would never send it an init.
        for sid in list(self.last_demuxer):
            stream = self.hub.get(sid)
            if stream is None or stream.init is None:
                del self.last_demuxer[sid]
        previous = self.last_demuxer.get(req.stream_id)

        def emit(ev: DemuxEvent) -> None:
            self.loop.call_soon_threadsafe(self._deliver, pub, ev)

        demuxer = LiveDemuxer(req.stream_id, feed, emit, previous)
        pub = Publisher(conn, req.stream_id, feed, demuxer)
        self.last_demuxer[req.stream_id] = demuxer
        self.publishers[conn.sid] = pub
        self.loop.call_soon_threadsafe(self._claim, pub)
        pub.demuxer.start()
        log.info("SRT publisher %s:%d connected as %s", *conn.peer, req.stream_id)

    def on_data(self, conn: srt.SrtSocket, data: bytes) -> None:
        pub = self.publishers.get(conn.sid)
        if pub is None:
            return
        try:
            pub.feed.feed(data)
        except FeedOverflow as e:
            self._record(conn.peer, pub.stream_id, str(e))
            pub.feed.close()
            conn.close()

    def on_close(self, conn: srt.SrtSocket, error: str | None) -> None:
        pub = self.publishers.pop(conn.sid, None)
        if pub is None:
            return
        pub.feed.close()
        log.info("SRT publisher %s disconnected%s", pub.stream_id, f": {error}" if error else "")

    # --- event loop ----------------------------------------------------------------------------
    def _claim(self, pub: Publisher) -> None:
        try:
            pub.stream, pub.token = self.hub.claim(pub.stream_id, "srt")
        except HubError as e:
            # Lost a race with another publisher between check() and now.
            self._record(pub.conn.peer, pub.stream_id, str(e))
            pub.feed.close()
            pub.conn.close()
            return
        self.hub.resumed(pub.stream)

    def _deliver(self, pub: Publisher, ev: DemuxEvent) -> None:
        stream = pub.stream
        if isinstance(ev, DemuxEnd):
            if ev.error:
                self._record(pub.conn.peer, pub.stream_id, ev.error)
                pub.conn.close()
            if stream is not None:
                self.hub.publisher_gone(stream, pub.token, grace=ev.error is None)
            return
        if stream is None or stream.publisher_token != pub.token:
            return
        if isinstance(ev, DemuxInit):
            t = ev.segment.track
            stream.publish_init(MediaInit(t.mime, ev.segment.data, t.codec, t.width, t.height))
        elif isinstance(ev, DemuxFragment):
            stream.publish_fragment(ev.fragment.data, ev.fragment.keyframe, ev.t_in)

    def stats(self) -> dict[str, srt.SrtStats]:
        out: dict[str, srt.SrtStats] = {}
        for pub in list(self.publishers.values()):
            try:
                out[pub.stream_id] = pub.conn.stats()
            except srt.SrtError:
                continue
        return out
