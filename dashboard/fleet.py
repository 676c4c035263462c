"""The fleet service: the backend's view of every device, fed by one MQTT connection.

It follows ``status``, ``reported``, ``telemetry``, ``snapshot``, ``ack``, ``cmd``, ``desired``,
``set`` and ``demand`` of every device under the prefix, owns the shadow merge (``set`` →
retained ``desired`` with the version + 1, answered on ``set/accepted`` or ``set/rejected``: see
:mod:`.set_answers`) and on-demand streaming, and sends commands.

Its parts: the connection in :mod:`.fleet_link` (messages hop from paho's thread onto the loop,
so all state lives on the loop and merges are serialized without locks), each device's state in
:mod:`.device_state`, commands in flight in :mod:`.fleet_commands`.

Presence: ``online``/``offline`` from the retained birth and the broker's will, and also
``offline (silent)`` when nothing came from the device for longer than a grace (1.5 × the
heartbeat interval its telemetry announces, else 1.5 × 300 s): a broker with a long keepalive,
or one that never fires the will of a half-open connection, must not leave a dead camera
"online". Retained messages received at (re)subscription count as "seen now": the backend gives a
device the benefit of the doubt for one grace after it starts.

A malformed message is logged and counted on that device (``errors``, ``last_error``); it never
affects another device or the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flumph.control import (
    Ack,
    ContractError,
    Demand,
    Desired,
    ParsedTopic,
    Reported,
    Status,
    Telemetry,
    Topics,
    check_device_id,
    decode,
    decode_command,
    decode_desired,
)
from flumph.lifecycle import UnknownDevice, makes_known
from flumph.media.imagetype import image_type
from flumph.mqtt import MqttSettings

from .device_state import CommandRecord, DeviceState, Presence
from .fleet_commands import CommandTracker
from .fleet_link import FleetLink, Unavailable
from .fleet_sets import SetPath
from .ondemand import OnDemand
from .registry import Registry
from .set_answers import SetAnswers
from .shadow import Shadow

log = logging.getLogger("flumph.dashboard.fleet")

HOUSEKEEPING_S = 0.25


@dataclass(frozen=True)
class FleetOptions:
    presence_grace_s: float | None = None  # fixed grace; None: from each device's heartbeat
    heartbeat_default_s: float = 300.0
    presence_grace_factor: float = 1.5
    ondemand: bool = True
    ondemand_linger_s: float = 30.0
    command_timeout_s: float = 30.0
    max_devices: int = 10000
    snapshot_max_bytes: int = 4 * 1024 * 1024
    snapshot_total_bytes: int = 256 * 1024 * 1024
    max_inflight: int = 10000
    settle_s: float = 0.3  # quiet time after subscribing before the retained state counts
    settle_max_s: float = 10.0


class Fleet:
    def __init__(self, mqtt: MqttSettings, options: FleetOptions | None = None) -> None:
        self.mqtt = mqtt
        self.options = options or FleetOptions()
        self.topics = Topics(mqtt.prefix)
        self.devices: dict[str, DeviceState] = {}
        self.shadow = Shadow()
        self.sets = SetPath(self)
        self.ondemand = OnDemand(
            linger_s=self.options.ondemand_linger_s,
            merge=self.sets.ondemand_merge,
            current=self.shadow.current,
            own_always_on=self._reports_always_on,
        )
        self.listeners: list[Callable[[str], None]] = []  # called with a device id on change
        self.answers = SetAnswers(self.topics, self._publish_answer)
        self.registry = Registry(self)
        self.link = FleetLink(
            mqtt, self.topics, max_inflight=self.options.max_inflight,
            settle_s=self.options.settle_s, settle_max_s=self.options.settle_max_s,
            on_message=self.handle, on_ready=self._ready, on_lost=self.ondemand.deactivate,
        )  # fmt: skip
        self.in_flight = CommandTracker(self.options.max_devices, self.options.command_timeout_s)
        self.stray_messages = 0  # topics under the prefix that are not the contract's
        self.dropped_devices = 0  # messages for devices beyond max_devices
        self.snapshot_bytes = 0
        self.snapshots_evicted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[DeviceState, ParsedTopic, bytes, bool], bool]] = {
            "status": self._on_status,
            "reported": self._on_reported,
            "telemetry": self._on_telemetry,
            "snapshot": self._on_snapshot,
            "ack": self._on_ack,
            "cmd": self._on_cmd,
            "desired": self._on_desired,
            "set": self.sets.on_set,
            "demand": self._on_demand,
        }

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def ready(self) -> asyncio.Event:
        """Set once the retained state is known (see :mod:`.fleet_link`)."""
        return self.link.ready

    @property
    def last_connect_error(self) -> str | None:
        return self.link.last_connect_error

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.link.start()
        self._spawn(self._housekeep(), "fleet-housekeeping")

    async def stop(self) -> None:
        self.link.stopping = True
        self.ondemand.deactivate()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.in_flight.cancel_waiters()
        await self.link.stop()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ready(self) -> None:
        log.info("fleet ready: %d devices known", len(self.devices))
        self.sets.release_held()
        if self.options.ondemand:
            self.ondemand.activate()

    async def wait_ready(self, within_s: float) -> None:
        await self.link.wait_ready(within_s)

    # --- messages (on the loop) ---------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """One message from the broker, on the loop (the link hands them over here)."""
        try:
            parsed = self.topics.parse(topic)
        except ContractError as e:
            self.stray_messages += 1
            if self.stray_messages <= 10 or self.stray_messages % 1000 == 0:
                log.warning("ignoring message #%d off the contract: %s", self.stray_messages, e)
            return
        # Only a status (a device's birth or will, or a provisioning) makes a device known.
        known = parsed.kind == "status" and makes_known(payload)
        dev = self.device(parsed.device_id, create=known)
        if dev is None or (parsed.kind == "status" and not known):
            self.registry.not_known(parsed, payload, retain)
            return
        try:
            changed = self._handlers[parsed.kind](dev, parsed, payload, retain)
        except ContractError as e:
            dev.errors += 1
            dev.last_error = str(e)
            if dev.errors <= 10 or dev.errors % 100 == 0:
                log.warning("%s: bad %s message (#%d): %s", dev.device_id, parsed.kind,
                            dev.errors, e)  # fmt: skip
            changed = True
        if changed:
            self.changed(dev)

    def device(self, device_id: str, *, create: bool = False) -> DeviceState | None:
        dev = self.devices.get(device_id)
        if dev is None and create:
            if len(self.devices) >= self.options.max_devices:
                self.dropped_devices += 1
                if self.dropped_devices == 1 or self.dropped_devices % 1000 == 0:
                    log.error("more than %d devices; dropped %d messages for new ones",
                              self.options.max_devices, self.dropped_devices)  # fmt: skip
                return None
            dev = self.devices[device_id] = DeviceState(check_device_id(device_id))
        return dev

    def _on_status(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        dev.status = decode(Status, payload) if payload else None
        if dev.status is not None and dev.status.state == "online":
            dev.seen()
        return True

    def _on_reported(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        dev.reported = decode(Reported, payload) if payload else None
        dev.reported_at = time.time()
        if dev.reported is not None:
            dev.seen()
            if dev.reported.applied_v is not None:
                self.shadow.floor(dev.device_id, dev.reported.applied_v)
        self.ondemand.device_changed(dev.device_id)
        return True

    def _reports_always_on(self, device_id: str) -> bool:
        dev = self.devices.get(device_id)
        rep = dev.reported if dev is not None else None
        return rep is not None and rep.settings.get("always_on") is True

    def _on_telemetry(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        tel = decode(Telemetry, payload)
        dev.telemetry, dev.telemetry_at = tel, time.time()
        if tel.heartbeat_s is not None and tel.heartbeat_s > 0:
            dev.heartbeat_s = tel.heartbeat_s
        dev.seen()
        return True

    def _on_snapshot(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        if len(payload) > self.options.snapshot_max_bytes:
            raise ContractError(
                f"snapshot: {len(payload)} bytes exceeds {self.options.snapshot_max_bytes}"
            )
        self.snapshot_bytes -= len(dev.snapshot or b"")
        if not payload:
            dev.snapshot = dev.snapshot_type = dev.snapshot_at = None
            return True
        dev.snapshot, dev.snapshot_type, dev.snapshot_at = payload, image_type(payload), time.time()
        self.snapshot_bytes += len(payload)
        self._evict_snapshots(keep=dev)
        dev.seen()
        return True

    def _evict_snapshots(self, keep: DeviceState) -> None:
        """Bound the stills held for the whole fleet, not only per device: oldest go first."""
        while self.snapshot_bytes > self.options.snapshot_total_bytes:
            held = [d for d in self.devices.values() if d.snapshot is not None and d is not keep]
            if not held:
                return
            oldest = min(held, key=lambda d: d.snapshot_at or 0.0)
            self.snapshot_bytes -= len(oldest.snapshot or b"")
            oldest.snapshot = oldest.snapshot_type = oldest.snapshot_at = None
            self.snapshots_evicted += 1
            self.changed(oldest)

    def _on_ack(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        ack = decode(Ack, payload)
        dev.seen()
        dev.last_ack = ack
        self.in_flight.acked(dev, ack)
        return True

    def _on_cmd(self, dev: DeviceState, topic: ParsedTopic, payload: bytes, _r: bool) -> bool:
        if topic.command is None:
            return False
        cmd = decode_command(topic.command, payload)
        if cmd.id in dev.commands:
            return False  # our own, echoed
        rec = CommandRecord(cmd.id, dev.device_id, topic.command, time.time(), time.monotonic())
        dev.add_command(rec)
        self.in_flight.track(rec)
        return True

    def _on_desired(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        if payload:
            try:
                desired: Desired | None = decode_desired(payload)
            except ContractError:
                self.shadow.observe_invalid(dev.device_id, payload)
                raise
        else:
            desired = None
        changed = self.shadow.observe(dev.device_id, desired)
        if changed:
            self.ondemand.desired_changed(dev.device_id)
        return changed

    def _on_demand(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        viewers = decode(Demand, payload).viewers if payload else None
        self.ondemand.viewers(dev.device_id, viewers)
        return True

    # --- publishing ------------------------------------------------------------------------

    def _publish_answer(self, topic: str, payload: bytes) -> None:
        if self.link.client is not None:
            self.link.client.publish(topic, payload, qos=1, retain=False)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> Any:
        """Publish at QoS 1; paho's message info (``is_published()``)."""
        if self.link.client is None or self.link.stopping:
            raise Unavailable("the fleet service is not running")
        return self.link.client.publish(topic, payload, qos=1, retain=retain)

    def known(self, device_id: str) -> DeviceState:
        """The state of a known device; UnknownDevice (a ContractError) otherwise."""
        dev = self.devices.get(check_device_id(device_id))
        if dev is None:
            raise UnknownDevice(device_id)
        return dev

    # --- commands -----------------------------------------------------------------------------

    async def command(
        self, device_id: str, name: str, wait_s: float | None, args: dict[str, Any] | None = None
    ) -> CommandRecord:
        """Publish ``cmd/<name>`` with a fresh id (and ``args``, e.g. a grant's ``mb``); with
        ``wait_s``, wait that long for its ack."""
        topic = self.topics.cmd(device_id, name)  # ContractError: bad device or command
        rec_id = uuid.uuid4().hex[:16]
        payload = decode_command(name, json.dumps({**(args or {}), "id": rec_id}))
        if not self.connected or self.link.client is None:
            raise Unavailable(f"MQTT broker {self.mqtt.url} unavailable")
        dev = self.known(device_id)
        rec = CommandRecord(rec_id, device_id, name, time.time(), time.monotonic())
        dev.add_command(rec)
        self.in_flight.track(rec)
        waiter = self.in_flight.waiter(rec.id) if wait_s else None
        self.link.client.publish(topic, payload.payload(), qos=1)
        self.changed(dev)
        if waiter is not None and wait_s:
            await self.in_flight.wait(rec.id, waiter, wait_s)
        return rec

    # --- presence, timeouts, listeners --------------------------------------------------------

    def grace_s(self, dev: DeviceState) -> float:
        if self.options.presence_grace_s is not None:
            return self.options.presence_grace_s
        beat = dev.heartbeat_s or self.options.heartbeat_default_s
        return self.options.presence_grace_factor * beat

    def presence(self, dev: DeviceState) -> Presence:
        return dev.presence_at(time.monotonic(), self.grace_s(dev))

    def changed(self, dev: DeviceState) -> None:
        dev.presence = self.presence(dev)
        self.notify(dev.device_id)

    def notify(self, device_id: str) -> None:
        """Tell the listeners ``device_id`` changed (or went: no longer in ``devices``)."""
        for listener in self.listeners:
            try:
                listener(device_id)
            except Exception:
                log.exception("fleet listener failed")

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = time.monotonic()
            for dev in list(self.devices.values()):
                p = dev.presence_at(now, self.grace_s(dev))
                if p != dev.presence:
                    if p == "offline (silent)":
                        log.warning("%s: silent for %.0f s, shown offline", dev.device_id,
                                    self.grace_s(dev))  # fmt: skip
                    self.changed(dev)
            for rec in self.in_flight.expire(now):
                owner = self.devices.get(rec.device_id)
                if owner is not None:
                    self.changed(owner)
