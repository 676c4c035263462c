"""The fleet service: the backend's view of every device, fed by one MQTT connection.

It follows ``status``, ``reported``, ``telemetry``, ``snapshot``, ``ack``, ``cmd``, ``desired``,
``set`` and ``demand`` of every device under the prefix, owns the shadow merge (``set`` →
retained ``desired`` with the version + 1, answered on ``set/accepted`` or ``set/rejected``: see
:mod:`.set_answers`) and on-demand streaming, and sends commands.

paho runs its network loop in its own thread; every message hops onto the asyncio loop with
``call_soon_threadsafe`` and all state lives on the loop, so merges are serialized without locks.
The hop is bounded: when the loop has ``max_inflight`` messages not yet handled, paho's thread
waits (TCP back-pressure to the broker) rather than dropping a ``desired`` the merges depend on.

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
import collections
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from flumph.control import (
    Ack,
    ContractError,
    Demand,
    Desired,
    ParsedTopic,
    PatchError,
    Reported,
    Status,
    Telemetry,
    TopicKind,
    Topics,
    check_device_id,
    decode,
    decode_command,
    decode_desired,
    decode_set,
)
from flumph.lifecycle import UnknownDevice, makes_known
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import watch_connection

from .ondemand import OnDemand
from .registry import Registry
from .set_answers import SetAnswers
from .shadow import Shadow

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger("flumph.dashboard.fleet")

# Subscription order matters: the retained desired documents arrive before anything that merges.
SUBSCRIBED: tuple[TopicKind, ...] = (
    "desired", "status", "reported", "telemetry", "snapshot", "ack", "cmd", "demand", "set",
)  # fmt: skip
COMMANDS_KEPT = 32  # per device, newest last
HELD_SETS = 1000  # patches received before the retained state is known
HOUSEKEEPING_S = 0.25
PUBLISH_WAIT_S = 5.0

Presence = Literal["online", "offline", "offline (silent)", "unknown"]
CommandState = Literal["pending", "acked", "failed", "timeout"]


class Unavailable(RuntimeError):
    """The broker is not connected (or the retained state is not known yet)."""


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


def image_type(data: bytes) -> str:
    """The content type of a snapshot, from its first bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and len(data) >= 16:
        size = int.from_bytes(data[:4], "big")
        brands = data[8:12] + data[16 : min(max(size, 16), 64)]
        for brand, kind in ((b"avif", "image/avif"), (b"avis", "image/avif"),
                            (b"heic", "image/heic"), (b"mif1", "image/heif")):  # fmt: skip
            if any(brands[i : i + 4] == brand for i in range(0, len(brands) - 3, 4)):
                return kind
    return "application/octet-stream"


@dataclass
class CommandRecord:
    id: str
    device_id: str
    name: str
    sent_at: float  # wall clock
    sent_mono: float
    state: CommandState = "pending"
    error: str | None = None
    done_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device_id,
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "sent_at": self.sent_at,
            "done_at": self.done_at,
        }


@dataclass
class DeviceState:
    device_id: str
    status: Status | None = None
    last_seen: float | None = None  # wall clock, for display
    last_seen_mono: float | None = None
    reported: Reported | None = None
    reported_at: float | None = None
    telemetry: Telemetry | None = None
    telemetry_at: float | None = None
    heartbeat_s: float | None = None
    snapshot: bytes | None = None
    snapshot_type: str | None = None
    snapshot_at: float | None = None
    commands: collections.OrderedDict[str, CommandRecord] = field(
        default_factory=collections.OrderedDict
    )
    last_ack: Ack | None = None
    last_set_error: dict[str, Any] | None = None
    errors: int = 0
    last_error: str | None = None
    presence: Presence = "unknown"  # as last announced to listeners

    def seen(self) -> None:
        self.last_seen = time.time()
        self.last_seen_mono = time.monotonic()

    def streaming_now(self) -> bool | None:
        """Whether it streams now: whichever of reported and telemetry came last says."""
        rep, tel = self.reported, self.telemetry
        if rep is not None and (tel is None or (self.reported_at or 0) >= (self.telemetry_at or 0)):
            return rep.streaming
        return tel.streaming if tel is not None else None

    def presence_at(self, now_mono: float, grace_s: float) -> Presence:
        if self.status is not None and self.status.state == "offline":
            return "offline"
        if self.last_seen_mono is None:
            return "unknown"
        if now_mono - self.last_seen_mono > grace_s:
            return "offline (silent)"
        return "online"

    def add_command(self, rec: CommandRecord) -> None:
        self.commands[rec.id] = rec
        while len(self.commands) > COMMANDS_KEPT:
            self.commands.popitem(last=False)


class Fleet:
    def __init__(self, mqtt: MqttSettings, options: FleetOptions | None = None) -> None:
        self.mqtt = mqtt
        self.options = options or FleetOptions()
        self.topics = Topics(mqtt.prefix)
        self.devices: dict[str, DeviceState] = {}
        self.shadow = Shadow()
        self.ondemand = OnDemand(
            linger_s=self.options.ondemand_linger_s,
            merge=self._ondemand_merge,
            current=self.shadow.current,
            own_always_on=self._reports_always_on,
        )
        self.listeners: list[Callable[[str], None]] = []  # called with a device id on change
        self.answers = SetAnswers(self.topics, self._publish_answer)
        self.registry = Registry(self)
        self.connected = False
        self.ready = asyncio.Event()
        self.last_connect_error: str | None = None
        self.stray_messages = 0  # topics under the prefix that are not the contract's
        self.dropped_devices = 0  # messages for devices beyond max_devices
        self.snapshot_bytes = 0
        self.snapshots_evicted = 0
        self._held_sets: collections.deque[tuple[str, bytes]] = collections.deque()
        self._pending_cmds: dict[str, CommandRecord] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._slots = threading.BoundedSemaphore(self.options.max_inflight)
        self._last_retained = 0.0
        self._sub_mid: int | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._settle_task: asyncio.Task[None] | None = None
        self._handlers: dict[str, Callable[[DeviceState, ParsedTopic, bytes, bool], bool]] = {
            "status": self._on_status,
            "reported": self._on_reported,
            "telemetry": self._on_telemetry,
            "snapshot": self._on_snapshot,
            "ack": self._on_ack,
            "cmd": self._on_cmd,
            "desired": self._on_desired,
            "set": self._on_set,
            "demand": self._on_demand,
        }

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
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
        self._client = client
        # connect_async: the TCP connect happens in paho's thread, never on the loop.
        client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        client.loop_start()
        self._spawn(self._housekeep(), "fleet-housekeeping")
        who = self.mqtt.username or "anonymous"
        log.info("fleet service connecting to %s as %s", self.mqtt.url, who)

    async def stop(self) -> None:
        self._stopping = True
        self.ondemand.deactivate()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._waiters.values():
            fut.cancel()
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
            if self._stopping:
                return
        if not self._post(self._dispatch, msg.topic, bytes(msg.payload), bool(msg.retain)):
            self._slots.release()

    # --- connection state (on the loop) -------------------------------------------------------

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
        if mid != self._sub_mid or self._stopping:
            return
        if refused:
            log.error("broker refused subscriptions to %s (ACL?)", ", ".join(refused))
        if self._settle_task is not None:
            self._settle_task.cancel()
        self._settle_task = self._spawn(self._settle(), "fleet-settle")

    def _disconnected(self, reason: str) -> None:
        if self.connected and not self._stopping:
            log.warning("lost the MQTT broker: %s", reason)
            self.last_connect_error = f"connection lost: {reason}"
        self.connected = False
        self.ready.clear()
        self.ondemand.deactivate()
        if self._settle_task is not None:
            self._settle_task.cancel()

    async def _settle(self) -> None:
        """Ready once the retained messages that follow the subscription have stopped coming."""
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            quiet = now - max(t0, self._last_retained)
            if quiet >= self.options.settle_s or now - t0 >= self.options.settle_max_s:
                break
            await asyncio.sleep(0.05)
        self.ready.set()
        log.info("fleet ready: %d devices known", len(self.devices))
        held, self._held_sets = list(self._held_sets), collections.deque()
        for device_id, payload in held:
            self._apply_set(device_id, payload)
        if self.options.ondemand:
            self.ondemand.activate()

    async def wait_ready(self, within_s: float) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), within_s)
        except TimeoutError:
            why = self.last_connect_error or "not connected"
            raise Unavailable(f"MQTT broker {self.mqtt.url} unavailable: {why}") from None

    # --- messages (on the loop) ---------------------------------------------------------------

    def _dispatch(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            self.handle(topic, payload, retain)
        except Exception:
            log.exception("unexpected error handling %s", topic)
        finally:
            self._slots.release()

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """One message from the broker, on the loop (paho's thread hands them over here)."""
        if retain:
            self._last_retained = time.monotonic()
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
            self._changed(dev)

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
            self._changed(oldest)

    def _on_ack(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        ack = decode(Ack, payload)
        dev.seen()
        dev.last_ack = ack
        rec = dev.commands.get(ack.id)
        if rec is not None:
            rec.state = "acked" if ack.ok else "failed"
            rec.error, rec.done_at = ack.error, time.time()
            self._pending_cmds.pop(ack.id, None)
        waiter = self._waiters.pop(ack.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _on_cmd(self, dev: DeviceState, topic: ParsedTopic, payload: bytes, _r: bool) -> bool:
        if topic.command is None:
            return False
        cmd = decode_command(topic.command, payload)
        if cmd.id in dev.commands:
            return False  # our own, echoed
        rec = CommandRecord(cmd.id, dev.device_id, topic.command, time.time(), time.monotonic())
        dev.add_command(rec)
        self._track(rec)
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

    def _on_set(self, dev: DeviceState, topic: ParsedTopic, payload: bytes, retain: bool) -> bool:
        if not payload:
            return False  # a retained patch being deleted, not a patch
        if retain:
            # A retained patch would be merged again at every start of the backend: delete it.
            if self._client is not None:
                self._client.publish(self.topics.set(dev.device_id), b"", qos=1, retain=True)
            self._set_error(dev, "a retained patch on set was ignored and deleted "
                            "(publish patches without retain)", payload)  # fmt: skip
            return True
        if not self.ready.is_set():
            if len(self._held_sets) >= HELD_SETS:
                self._set_error(dev, "backend not ready and too many patches waiting", payload)
                return True
            self._held_sets.append((dev.device_id, payload))
            return False
        self._apply_set(dev.device_id, payload)
        return False

    def _on_demand(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, _r: bool) -> bool:
        viewers = decode(Demand, payload).viewers if payload else None
        self.ondemand.viewers(dev.device_id, viewers)
        return True

    # --- shadow merge -------------------------------------------------------------------------

    def _publish_answer(self, topic: str, payload: bytes) -> None:
        if self._client is not None:
            self._client.publish(topic, payload, qos=1, retain=False)

    def reject_set(
        self,
        device_id: str,
        error: str,
        payload: bytes | None = None,
        fields: tuple[str, ...] = (),
    ) -> None:
        """Answer a ``set`` of ``device_id`` on ``set/rejected`` with ``error`` (which names the
        field); ``payload`` is the refused message (its ``client_token`` is echoed). Creates no
        device state, so it may answer a set for a device the backend refuses to know (an
        unknown device: see :mod:`.registry`)."""
        self.answers.rejected(device_id, error, fields=fields, payload=payload)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> Any:
        """Publish at QoS 1; paho's message info (``is_published()``)."""
        if self._client is None or self._stopping:
            raise Unavailable("the fleet service is not running")
        return self._client.publish(topic, payload, qos=1, retain=retain)

    def known(self, device_id: str) -> DeviceState:
        """The state of a known device; UnknownDevice (a ContractError) otherwise."""
        dev = self.devices.get(check_device_id(device_id))
        if dev is None:
            raise UnknownDevice(device_id)
        return dev

    def _set_error(
        self, dev: DeviceState, error: ContractError | str, payload: bytes | None
    ) -> None:
        text = payload[:200].decode("utf-8", "replace") if payload is not None else None
        dev.last_set_error = {"error": str(error), "patch": text, "at": time.time()}
        fields = error.fields if isinstance(error, PatchError) else ()
        self.reject_set(dev.device_id, str(error), payload, fields)

    def hold_set(self, device_id: str, payload: bytes) -> None:
        """A patch for a device not known yet, before the retained statuses are all in: decided
        once they are (its status may still be on its way)."""
        if len(self._held_sets) >= HELD_SETS:
            self.reject_set(device_id, "backend not ready and too many patches waiting", payload)
            return
        self._held_sets.append((device_id, payload))

    def _apply_set(self, device_id: str, payload: bytes) -> None:
        dev = self.device(device_id)
        if dev is None:
            self.reject_set(device_id, str(UnknownDevice(device_id)), payload)
            return
        try:
            req = decode_set(payload)
            self.merge(device_id, req.patch, operator=True, client_token=req.client_token)
        except ContractError as e:
            self._set_error(dev, e, payload)
            self._changed(dev)

    def merge(
        self,
        device_id: str,
        patch: dict[str, Any],
        *,
        operator: bool,
        client_token: str | None = None,
    ) -> tuple[Desired, Any]:
        """Merge a patch, publish the new retained ``desired``; returns it and paho's info.

        Synchronous on the loop, so two merges can never start from the same version. An
        operator's patch is answered on ``set/accepted`` (echoing ``client_token``).
        Raises ContractError (naming the field) for a patch that cannot be merged.
        """
        if self._client is None or self._stopping:
            raise Unavailable("the fleet service is not running")
        dev = self.known(device_id)
        doc, planned = self.shadow.merge(device_id, patch)
        info = self._client.publish(
            self.topics.desired(device_id), doc.payload(), qos=1, retain=True
        )
        log.info("%s: desired v%d after %s patch %s", device_id, doc.v,
                 "operator" if operator else "on-demand", planned)  # fmt: skip
        if operator:
            dev.last_set_error = None
            self.ondemand.operator_patch(device_id, planned)
            self.answers.accepted(device_id, doc.v, planned, client_token)
        self._changed(dev)
        return doc, info

    def _ondemand_merge(self, device_id: str, patch: dict[str, Any]) -> None:
        if self._stopping:
            return
        try:
            self.merge(device_id, patch, operator=False)
        except (ContractError, Unavailable) as e:
            log.error("%s: on-demand patch %s failed: %s", device_id, patch, e)

    async def set(self, device_id: str, payload: bytes) -> tuple[Desired, bool]:
        """The HTTP API's patch, through the same merge as the ``set`` topic.

        Returns the new document and whether the broker acknowledged it in time; raises
        ContractError (recorded as the device's ``last_set_error`` and answered on
        ``set/rejected``, as a patch on the topic would be) or Unavailable.
        """
        check_device_id(device_id)
        try:
            req = decode_set(payload)
            await self.wait_ready(PUBLISH_WAIT_S)
            doc, info = self.merge(
                device_id, req.patch, operator=True, client_token=req.client_token
            )
        except ContractError as e:
            dev = self.device(device_id)
            if dev is not None:
                self._set_error(dev, e, payload)
                self._changed(dev)
            else:
                self.reject_set(device_id, str(e), payload)
            raise
        return doc, await self._published(info, PUBLISH_WAIT_S)

    @staticmethod
    async def _published(info: Any, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not info.is_published():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # --- commands -----------------------------------------------------------------------------

    def _track(self, rec: CommandRecord) -> None:
        self._pending_cmds[rec.id] = rec
        if len(self._pending_cmds) > self.options.max_devices:
            oldest = next(iter(self._pending_cmds))
            self._pending_cmds.pop(oldest).state = "timeout"

    async def command(
        self, device_id: str, name: str, wait_s: float | None, args: dict[str, Any] | None = None
    ) -> CommandRecord:
        """Publish ``cmd/<name>`` with a fresh id (and ``args``, e.g. a grant's ``mb``); with
        ``wait_s``, wait that long for its ack."""
        topic = self.topics.cmd(device_id, name)  # ContractError: bad device or command
        rec_id = uuid.uuid4().hex[:16]
        payload = decode_command(name, json.dumps({**(args or {}), "id": rec_id}))
        if not self.connected or self._client is None:
            raise Unavailable(f"MQTT broker {self.mqtt.url} unavailable")
        dev = self.known(device_id)
        rec = CommandRecord(rec_id, device_id, name, time.time(), time.monotonic())
        dev.add_command(rec)
        self._track(rec)
        waiter: asyncio.Future[None] | None = None
        if wait_s:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[rec.id] = waiter
        self._client.publish(topic, payload.payload(), qos=1)
        self._changed(dev)
        if waiter is not None:
            try:
                await asyncio.wait_for(waiter, wait_s)
            except TimeoutError:
                pass
            finally:
                self._waiters.pop(rec.id, None)
        return rec

    # --- presence, timeouts, listeners --------------------------------------------------------

    def grace_s(self, dev: DeviceState) -> float:
        if self.options.presence_grace_s is not None:
            return self.options.presence_grace_s
        beat = dev.heartbeat_s or self.options.heartbeat_default_s
        return self.options.presence_grace_factor * beat

    def presence(self, dev: DeviceState) -> Presence:
        return dev.presence_at(time.monotonic(), self.grace_s(dev))

    def _changed(self, dev: DeviceState) -> None:
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
                    self._changed(dev)
            timeout = self.options.command_timeout_s
            for rec in [r for r in self._pending_cmds.values() if now - r.sent_mono > timeout]:
                del self._pending_cmds[rec.id]
                if rec.state == "pending":
                    rec.state, rec.done_at = "timeout", time.time()
                    owner = self.devices.get(rec.device_id)
                    if owner is not None:
                        self._changed(owner)
