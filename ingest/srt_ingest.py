"""SRT publishers: stream-id admission, demuxing chosen per stream, results onto the hub.

Threads: libsrt's listen callback calls :meth:`check`; the ``srt-epoll`` thread calls
``on_connect``/``on_data``/``on_close``/``on_round_end``. Live Matroska is demuxed right there
(:class:`~.mkv_demux.MatroskaDemux`: a frame becomes a fragment as its last byte arrives); MPEG-TS,
and Matroska the pure reader hands over, go to a :class:`LiveDemuxer` thread (PyAV) per connection.
Results reach the event loop through one bounded :class:`~.handoff.LoopHandoff`, woken at most once
per receive round, and only when a round brought something a viewer waits for: the frames of a
stream nobody watches (the GOP cache a joiner starts from, the counters) are handed on every
``UNWATCHED_HANDOFF_S``, or at once when a viewer joins; such a stream's socket is itself read
only every lazy period of the SrtServer (``SrtSocket.read_lazily``). Only :meth:`_deliver_batch`
on the loop touches the hub's streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flumph import srt
from flumph.media.streamid import parse_publish_streamid

from .demux import (
    EBML_MAGIC,
    ByteFeed,
    DemuxEnd,
    DemuxEvent,
    DemuxFragment,
    DemuxInit,
    DemuxSession,
    FeedOverflow,
    LiveDemuxer,
)
from .handoff import LoopHandoff
from .hub import Hub, HubError
from .mkv_demux import MatroskaDemux
from .stream import MediaInit, Stream

log = logging.getLogger("flumph.ingest.srt")


@dataclass
class Publisher:
    conn: srt.SrtSocket
    stream_id: str
    # The same id's previous session, until this one's demuxer takes its repackager over.
    previous: DemuxSession | None = None
    feed: ByteFeed | None = None  # PyAV's input, when a LiveDemuxer thread demuxes
    demuxer: LiveDemuxer | MatroskaDemux | None = None  # chosen by the first message
    ended: bool = False  # its DemuxEnd was handed on (the srt-epoll thread's view)
    stream: Stream | None = None
    token: int = 0
    connected_at: float = field(default_factory=time.monotonic)
    last_in: float = 0.0  # monotonic arrival of the newest message; 0 before the first
    last_stats: srt.SrtStats | None = None
    dropped: bool = False  # by the idle watch

    def close_input(self) -> None:
        if self.feed is not None:
            self.feed.close()


IDLE_CHECK_S = 0.5
# Waking the event loop for every receive round cost the ingest 12-14 % of its CPU with no viewer
# at all (bench/README.md, peer_nms.py: ~290 wake-ups a second at 50 streams, ~40 us each). Frames
# that no viewer waits for are handed on this often instead. Under the SrtServer's lazy period
# (0.1 s), at which such streams are read: each lazy round's frames go on at its end.
UNWATCHED_HANDOFF_S = 0.05


def idle_reason(
    last_in: float, connected_at: float, now: float, first_data_s: float, idle_s: float
) -> str | None:
    """Why a publisher should be dropped for silence (``last_in`` 0: nothing received yet)."""
    if not last_in:
        if now - connected_at > first_data_s:
            return f"sent no data within {first_data_s:g} s of connecting"
        return None
    if now - last_in > idle_s:
        return f"sent no data for {idle_s:g} s"
    return None


class Claim:
    """Hand-off item: make the publisher its stream's owner on the loop."""


CLAIM = Claim()
HandoffItem = tuple[Publisher, DemuxEvent | Claim]


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
        first_data_s: float = 5.0,
        idle_s: float = 15.0,
    ) -> None:
        self.hub = hub
        self.loop = loop
        self.passphrases = dict(passphrases or {})
        self.default_passphrase = default_passphrase
        self.feed_max_bytes = feed_max_bytes
        self.first_data_s = first_data_s
        self.idle_s = idle_s
        self.publishers: dict[int, Publisher] = {}
        # Touched only by the srt-epoll thread.
        self.last_demuxer: dict[str, LiveDemuxer | MatroskaDemux] = {}
        self.handoff: LoopHandoff[HandoffItem] = LoopHandoff(loop, self._deliver_batch)
        hub.catch_up = self.handoff.drain_now
        # Set by any thread that put something a viewer (or the hub) waits for; the srt-epoll
        # thread's round end reads and clears it.
        self._urgent = False
        self._handed_at = 0.0  # monotonic time of the last hand-off (the srt-epoll thread's)
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
        # Forget sessions whose streams have ended; keep the one a returning publisher continues.
        # A stream without an init segment is a new one (re-created empty by a viewer waiting
        # for an on-demand start): continuing the old session would never send it an init.
        for sid in list(self.last_demuxer):
            stream = self.hub.get(sid)
            if stream is None or stream.init is None:
                del self.last_demuxer[sid]
        pub = Publisher(conn, req.stream_id, previous=self.last_demuxer.get(req.stream_id))
        self.publishers[conn.sid] = pub
        self.handoff.put_always((pub, CLAIM))
        self._urgent = True
        log.info("SRT publisher %s:%d connected as %s", *conn.peer, req.stream_id)

    def on_data(self, conn: srt.SrtSocket, data: bytes) -> None:
        pub = self.publishers.get(conn.sid)
        if pub is None or pub.ended:
            return
        pub.last_in = conn.last_received_at
        # Nobody waits for this stream's frames: read it every SrtServer lazy period. A viewer
        # who joins gets the cached GOP at once and the live edge from the next period on. Data
        # read that way arrived up to a period before it was read: no arrival time, so its frames
        # count in no latency figure (the honest one starts at the arrival of the last byte).
        read_lazily = conn.read_lazily  # as the server read this data
        stream = pub.stream  # set on the loop; a list's or a set's truth is one atomic read
        # Not before a cached GOP: a viewer joining would wait for it.
        conn.read_lazily = stream is not None and bool(stream.gop) and not stream.viewers
        demuxer = pub.demuxer
        if isinstance(demuxer, MatroskaDemux):
            t_in = 0.0 if read_lazily else pub.last_in
            try:
                resume = demuxer.feed(data, t_in, conn.lost_before)
            except ValueError as e:
                self._end(pub, str(e) or type(e).__name__)
                return
            if resume is not None:
                self._start_pyav(pub, resume, demuxer, continues=True)
            return
        if demuxer is None:
            if data.startswith(EBML_MAGIC):
                mkv = MatroskaDemux(pub.stream_id, self._emitter(pub), pub.previous)
                pub.demuxer, pub.previous = mkv, None
                self.last_demuxer[pub.stream_id] = mkv
                self.on_data(conn, data)
                return
            self._start_pyav(pub, b"", pub.previous)
        self._feed(pub, data)

    def _start_pyav(
        self,
        pub: Publisher,
        first: bytes,
        previous: DemuxSession | None,
        *,
        continues: bool = False,
    ) -> None:
        feed = ByteFeed(self.feed_max_bytes)
        emit = self._emitter(pub, threaded=True)
        demuxer = LiveDemuxer(pub.stream_id, feed, emit, previous, continues=continues)
        pub.feed, pub.demuxer, pub.previous = feed, demuxer, None
        self.last_demuxer[pub.stream_id] = demuxer
        demuxer.start()
        if first:
            self._feed(pub, first)

    def _feed(self, pub: Publisher, data: bytes) -> None:
        assert pub.feed is not None
        try:
            pub.feed.feed(data)
        except FeedOverflow as e:
            self._record(pub.conn.peer, pub.stream_id, str(e))
            pub.feed.close()
            pub.conn.close()

    def _emitter(self, pub: Publisher, *, threaded: bool = False) -> Callable[[DemuxEvent], None]:
        handoff = self.handoff

        def emit(ev: DemuxEvent) -> None:
            if isinstance(ev, DemuxFragment):
                if not handoff.put((pub, ev)):
                    self._overflow(pub)
                    return
                stream = pub.stream  # set on the loop; a set's truth is one atomic read
                if stream is None or not stream.viewers:
                    return  # nobody waits: the periodic hand-off takes it
            else:
                handoff.put_always((pub, ev))
            if threaded:  # a demux thread has no receive round: wake the loop now
                handoff.flush()
            else:
                self._urgent = True

        return emit

    def _overflow(self, pub: Publisher) -> None:
        if pub.conn.closed:
            return
        reason = (
            f"the event loop fell {self.handoff.max_items} frames behind the SRT receive "
            "thread: publisher dropped"
        )
        self._record(pub.conn.peer, pub.stream_id, reason)
        pub.close_input()
        pub.conn.close()

    def _end(self, pub: Publisher, error: str | None) -> None:
        """The Matroska path's end of a session (a LiveDemuxer thread reports its own)."""
        if pub.ended:
            return
        pub.ended = True
        if error:
            log.warning("stream %s: %s", pub.stream_id, error)
        self.handoff.put_always((pub, DemuxEnd(error)))
        self._urgent = True

    def on_close(self, conn: srt.SrtSocket, error: str | None) -> None:
        pub = self.publishers.pop(conn.sid, None)
        if pub is None:
            return
        if isinstance(pub.demuxer, LiveDemuxer):
            pub.close_input()  # the thread reports the end once it has read what was fed
        else:
            self._end(pub, None)
        log.info("SRT publisher %s disconnected%s", pub.stream_id, f": {error}" if error else "")

    def on_round_end(self) -> None:
        now = time.monotonic()
        if self._urgent or now - self._handed_at >= UNWATCHED_HANDOFF_S:
            self._urgent = False
            self._handed_at = now
            self.handoff.flush()

    # --- event loop ----------------------------------------------------------------------------
    def _deliver_batch(self, batch: list[HandoffItem]) -> None:
        for pub, ev in batch:
            if isinstance(ev, Claim):
                self._claim(pub)
            else:
                self._deliver(pub, ev)

    def _claim(self, pub: Publisher) -> None:
        if pub.dropped:
            return
        try:
            pub.stream, pub.token = self.hub.claim(pub.stream_id, "srt")
        except HubError as e:
            # Lost a race with another publisher between check() and now.
            self._record(pub.conn.peer, pub.stream_id, str(e))
            pub.close_input()
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

    async def watch_idle(self) -> None:
        """Drop publishers that hold an id and send nothing. Measured before: an SRT caller that
        connected as publish:cam-a and sent no byte held the id for over 40 s (libsrt keeps an
        idle connection alive), and the real device was refused as busy (1409)."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            now = time.monotonic()
            for pub in list(self.publishers.values()):
                why = idle_reason(pub.last_in, pub.connected_at, now,
                                  self.first_data_s, self.idle_s)  # fmt: skip
                if why is None or pub.dropped:
                    continue
                pub.dropped = True
                # Free the id here, not when the SRT thread sees the close: a real camera that
                # connects in between must not be refused as busy by a publisher already dropped.
                if pub.stream is not None:
                    self.hub.publisher_gone(pub.stream, pub.token, grace=False)
                self._record(pub.conn.peer, pub.stream_id, f"{why}: dropped, its id is free")
                pub.close_input()
                pub.conn.close()

    def stats(self) -> dict[str, srt.SrtStats]:
        out: dict[str, srt.SrtStats] = {}
        for pub in list(self.publishers.values()):
            try:
                out[pub.stream_id] = pub.conn.stats()
            except srt.SrtError:
                continue
        return out
