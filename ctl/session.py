"""One synchronous MQTT session for a ctl command: connect, subscribe, publish, read messages.

paho's network thread puts incoming messages in a bounded queue (overflow counted in
``dropped``); the command reads them with a deadline. A failure is a :class:`CtlError`.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flumph.control import Topics
from flumph.ctl.config import CtlConfig
from flumph.mqtt import make_client
from flumph.mqttwatch import failure_reason

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CtlError(Exception):
    """A runtime failure: exit code 1."""


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool


class Session:
    """A paho client used synchronously: connect, subscribe, publish, read messages."""

    def __init__(self, cfg: CtlConfig) -> None:
        self.cfg = cfg
        self.settings = cfg.mqtt
        self.topics = Topics(cfg.mqtt.prefix)
        self.messages: queue.Queue[Msg] = queue.Queue(maxsize=10000)
        self.dropped = 0
        self._connected = threading.Event()
        self._refused: str | None = None
        self._filters: list[str] = []
        self._subacks: set[int] = set()
        self._lock = threading.Lock()
        self.client = make_client(self.settings, client_id=f"flumph-ctl-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        if self._filters:  # a reconnect (clean session): subscribe again
            client.subscribe([(f, 1) for f in self._filters])
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        with self._lock:
            self._subacks.add(mid)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            self.messages.put_nowait(Msg(msg.topic, bytes(msg.payload), bool(msg.retain)))
        except queue.Full:
            self.dropped += 1

    def connect(self) -> None:
        s = self.settings
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except OSError as e:
            why = failure_reason(e, s.host, s.port)
            raise CtlError(f"cannot reach MQTT broker {s.url}: {why}; check --mqtt") from None
        self.client.loop_start()
        deadline = time.monotonic() + self.cfg.timeout_s
        while not self._connected.wait(0.05):
            if self._refused is not None:
                why = f"{self._refused}; check --username and --password"
                raise CtlError(f"MQTT broker {s.url} refused the connection: {why}")
            if time.monotonic() > deadline:
                raise CtlError(f"no answer from {s.url} in {self.cfg.timeout_s} s; check --mqtt")

    def subscribe(self, filters: list[str]) -> None:
        self._filters += filters
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            with self._lock:
                if mid in self._subacks:
                    return
            if time.monotonic() > deadline:
                raise CtlError("the broker did not confirm the subscription")
            time.sleep(0.01)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.cfg.timeout_s)
        except (RuntimeError, ValueError) as e:
            raise CtlError(f"publish to {topic} failed: {e}") from None
        if not info.is_published():
            raise CtlError(f"the broker did not acknowledge the publish to {topic}")

    def next(self, deadline: float | None) -> Msg | None:
        """The next message, or None once ``deadline`` (monotonic) has passed."""
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return self.messages.get(timeout=wait)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
