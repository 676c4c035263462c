"""Publishes how many viewers watch or wait for each device: retained ``<p>/<dev>/demand``.

The backend's on-demand logic turns this into ``streaming`` true/false; the ingest itself
decides nothing about devices. A retained count left by an earlier ingest run (a crash) would
keep a camera streaming for nobody, so on connect the publisher zeroes every retained demand it
does not hold itself.

Only known devices get a demand (``is_known``, see :mod:`flumph.lifecycle`): a viewer of any
other id must not leave a retained topic behind. A retained demand of an id that is not known (a
leftover from before this rule, or a forgotten device) is deleted. That decision relies on the
retained statuses arriving before the retained demands: ``<p>/+/status`` is subscribed first in
the same SUBSCRIBE, and the embedded broker and mosquitto both send retained messages filter by
filter, in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flumph.control import Command, ContractError, Demand, TopicKind, Topics, decode
from flumph.media.streamid import DEVICE_ID_RE
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import watch_connection

log = logging.getLogger("flumph.ingest.demand")


class DemandPublisher:
    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._client = make_client(settings, client_id=None)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        watch_connection(
            self._client, url=settings.url, host=settings.host, port=settings.port, log=log,
            flag="--mqtt",
        )  # fmt: skip
        # Other retained device documents the ingest follows on this connection: kind ->
        # handler(device id, payload), called in paho's thread.
        self.followers: dict[TopicKind, Callable[[str, bytes], None]] = {}
        self.is_known: Callable[[str], bool] = lambda _device_id: True

    def follow(self, kind: TopicKind, handler: Callable[[str, bytes], None]) -> None:
        """Also subscribe to ``<p>/+/<kind>`` and hand each message to ``handler``."""
        self.followers[kind] = handler

    def start(self) -> None:
        """Connects in paho's own thread; never blocks the caller on the network."""
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=min(self.settings.keepalive_s, 60)
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def update(self, stream_id: str, viewers: int) -> None:
        """Called on the event loop whenever a stream's viewer count changes."""
        if not DEVICE_ID_RE.fullmatch(stream_id):
            return  # relay ids from WebSocket streamers are not devices
        if not self.is_known(stream_id):
            with self._lock:
                self._counts.pop(stream_id, None)
            return
        with self._lock:
            if self._counts.get(stream_id, 0) == viewers:
                return
            if viewers:
                self._counts[stream_id] = viewers
            else:
                self._counts.pop(stream_id, None)
        self._publish(stream_id, viewers)

    def ask_keyframe(self, device_id: str, command_id: str) -> None:
        """``cmd/keyframe`` to the device (never retained, QoS 1; the ingest's account needs
        publish rights on ``<p>/<dev>/cmd/keyframe``: the backend account has them). Any thread."""
        payload = Command(id=command_id).payload()
        self._client.publish(self.topics.cmd(device_id, "keyframe"), payload, qos=1)

    def _publish(self, stream_id: str, viewers: int) -> None:
        # paho queues while disconnected and sends on reconnect; publish is thread-safe.
        self._client.publish(
            self.topics.demand(stream_id), Demand(viewers=viewers).payload(), qos=1, retain=True
        )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connection refused: %s", reason)
            return
        # The followed kinds (status) first: see the module docstring.
        client.subscribe([(self.topics.every(k), 1) for k in (*self.followers, "demand")])
        with self._lock:
            held = dict(self._counts)
        for stream_id, n in held.items():
            self._publish(stream_id, n)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self._followed(msg):
            return
        if not msg.retain:
            return
        try:
            device = self.topics.parse(msg.topic).device_id
            demand = decode(Demand, msg.payload)
        except ContractError as e:
            log.warning("ignoring retained demand on %s: %s", msg.topic, e)
            return
        with self._lock:
            ours = self._counts.get(device, 0)
        if not self.is_known(device):
            log.info("deleting the demand of %s: not a known device", device)
            self._client.publish(self.topics.demand(device), b"", qos=1, retain=True)
        elif demand.viewers and not ours:
            log.info("clearing stale demand for %s (%d viewers)", device, demand.viewers)
            self._publish(device, 0)

    def _followed(self, msg: Any) -> bool:
        """Hand a followed kind's message to its handler; False for everything else."""
        try:
            parsed = self.topics.parse(msg.topic)
        except ContractError:
            return False
        handler = self.followers.get(parsed.kind)
        if handler is None:
            return False
        try:
            handler(parsed.device_id, bytes(msg.payload))
        except Exception:  # following must never break demand publishing
            log.exception("handling %s failed", msg.topic)
        return True
