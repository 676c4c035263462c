"""The fleet service's one MQTT connection: subscribing, handing messages to the loop, readiness.

paho runs its network loop in its own thread; every message hops onto the asyncio loop with
``call_soon_threadsafe``, so whatever handles it runs on the loop, serialized without locks. The
hop is bounded: when the loop has ``max_inflight`` messages not yet handled, paho's thread waits
(TCP back-pressure to the broker) rather than dropping a ``desired`` the merges depend on.

Ready means connected, subscribed, and the retained messages that follow the subscription have
stopped coming (``settle_s`` of quiet, at most ``settle_max_s``): only then is the retained state
known.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flumph.control import TopicKind, Topics
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import watch_connection

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger("flumph.dashboard.fleet")

# Subscription order matters: the retained desired documents arrive before anything that merges.
SUBSCRIBED: tuple[TopicKind, ...] = (
    "desired", "status", "reported", "telemetry", "snapshot", "ack", "cmd", "demand", "set",
)  # fmt: skip


class Unavailable(RuntimeError):
    """The broker is not connected (or the retained state is not known yet)."""


class FleetLink:
    """The connection; ``on_message`` (topic, payload, retain), ``on_ready`` and ``on_lost`` are
    called on the loop."""

    def __init__(
        self,
        mqtt: MqttSettings,
        topics: Topics,
        *,
        max_inflight: int,
        settle_s: float,
        settle_max_s: float,
        on_message: Callable[[str, bytes, bool], None],
        on_ready: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.mqtt = mqtt
        self.topics = topics
        self.settle_s = settle_s
        self.settle_max_s = settle_max_s
        self.on_message = on_message
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.connected = False
        self.ready = asyncio.Event()
        self.last_connect_error: str | None = None
        self.stopping = False
        self.client: paho.Client | None = None
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._last_retained = 0.0
        self._sub_mid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settle_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = make_client(self.mqtt, client_id=f"flumph-dashboard-{uuid.uuid4().hex[:8]}")
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_subscribe = self._paho_subscribe
        client.on_message = self._paho_message
        watch_connection(
            client, url=self.mqtt.url, host=self.mqtt.host, port=self.mqtt.port, log=log,
            flag="--mqtt", on_failure=lambda reason: self._post(self._unreachable, reason),
        )  # fmt: skip
        self.client = client
        # connect_async: the TCP connect happens in paho's thread, never on the loop.
        client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        client.loop_start()
        who = self.mqtt.username or "anonymous"
        log.info("fleet service connecting to %s as %s", self.mqtt.url, who)

    async def stop(self) -> None:
        """Disconnect; set ``stopping`` first (the fleet does, before its own tasks end)."""
        self.stopping = True
        if self._settle_task is not None:
            self._settle_task.cancel()
            await asyncio.gather(self._settle_task, return_exceptions=True)
        if self.client is not None:
            self.client.disconnect()
            await asyncio.to_thread(self.client.loop_stop)

    async def wait_ready(self, within_s: float) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), within_s)
        except TimeoutError:
            why = self.last_connect_error or "not connected"
            raise Unavailable(f"MQTT broker {self.mqtt.url} unavailable: {why}") from None

    # --- paho's thread ------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> bool:
        if self._loop is None:
            return False
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            return False
        return True

    def _paho_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._post(self._connect_failed, str(reason))
            return
        _, mid = client.subscribe([(self.topics.every(k), 1) for k in SUBSCRIBED])
        self._post(self._connected, mid)

    def _paho_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        refused = [k for k, rc in zip(SUBSCRIBED, codes, strict=False) if rc.is_failure]
        self._post(self._subscribed, mid, refused)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._post(self._disconnected, str(reason))

    def _paho_message(self, _c: Any, _u: Any, msg: Any) -> None:
        while not self._slots.acquire(timeout=0.5):
            if self.stopping:
                return
        if not self._post(self._dispatch, msg.topic, bytes(msg.payload), bool(msg.retain)):
            self._slots.release()

    # --- on the loop --------------------------------------------------------------------------

    def _dispatch(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            self._last_retained = time.monotonic()
        try:
            self.on_message(topic, payload, retain)
        except Exception:
            log.exception("unexpected error handling %s", topic)
        finally:
            self._slots.release()

    def _connect_failed(self, reason: str) -> None:
        self.last_connect_error = f"the broker refused the connection: {reason}"
        log.error("MQTT broker %s refused the connection: %s", self.mqtt.url, reason)

    def _unreachable(self, reason: str) -> None:
        self.last_connect_error = reason  # watch_connection logged it

    def _connected(self, mid: int) -> None:
        self.connected = True
        self.last_connect_error = None
        self._sub_mid = mid
        log.info("connected to %s", self.mqtt.url)

    def _subscribed(self, mid: int, refused: list[str]) -> None:
        if mid != self._sub_mid or self.stopping:
            return
        if refused:
            log.error("broker refused subscriptions to %s (ACL?)", ", ".join(refused))
        if self._settle_task is not None:
            self._settle_task.cancel()
        self._settle_task = asyncio.get_running_loop().create_task(
            self._settle(), name="fleet-settle"
        )

    def _disconnected(self, reason: str) -> None:
        if self.connected and not self.stopping:
            log.warning("lost the MQTT broker: %s", reason)
            self.last_connect_error = f"connection lost: {reason}"
        self.connected = False
        self.ready.clear()
        self.on_lost()
        if self._settle_task is not None:
            self._settle_task.cancel()

    async def _settle(self) -> None:
        """Ready once the retained messages that follow the subscription have stopped coming."""
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            quiet = now - max(t0, self._last_retained)
            if quiet >= self.settle_s or now - t0 >= self.settle_max_s:
                break
            await asyncio.sleep(0.05)
        self.ready.set()
        self.on_ready()
