"""The agent's MQTT side: presence, the desired/reported shadow, one-shot commands, telemetry.

Topics and payloads are :mod:`flumph.control`'s; this module only follows them.

Threads: paho's network thread only sorts incoming messages into two mailboxes; every pipeline
call (opening an encoder, starting or stopping the camera, encoding a snapshot) runs on the
"agent-control" thread, so a slow one never delays a keepalive ping. Only the newest waiting
``desired`` is applied (an older one is superseded anyway); commands wait in a bounded queue and
one that finds it full is refused on ``ack`` at once.

Presence: the broker holds a retained will ``status {"state":"offline"}``; on every connect the
agent publishes the retained birth ``{"state":"online"}``, subscribes to its ``desired`` and
``cmd/+`` and republishes its ``reported`` (a broker that lost its retained store gets it back).
A clean stop publishes ``offline`` itself, since a clean DISCONNECT discards the will. The client
id is fixed per device (``flumph-dev-<id>``), so a rebooted device takes over its own half-open
session at once; with a random id the old session's will would fire up to 1.5 x keepalive later,
after the new birth, and show a live device offline.

Desired: each document is validated and merged over the settings in force (a key it leaves out
keeps its value, so ``mosquitto_pub -r -t .../desired -m '{"v":9,"streaming":true}'`` changes only
streaming); the backend's shadow merge only ever adds keys, so a restarted agent (the configured
settings under the same document) ends up where it was. A document whose ``v`` is not above the
applied one is a retained replay (after a reconnect) and is ignored; a fresh process has applied
nothing and takes whatever it finds. An invalid document, or settings the device cannot apply
(no encoder opens, the camera fails), leave ``applied_v`` and the running settings as they were
and put the reason on ``reported.error``. An empty retained ``desired`` (cleared with
``mosquitto_pub -r -n``) means "no wish": the settings stay as they are.

Commands: ``keyframe`` (refused while not streaming), ``snapshot`` (see :mod:`.snapshot`; the
picture is published retained on ``<p>/<dev>/snapshot`` before the ack, so whoever waits for the
ack finds it), ``restart`` (stops and starts the pipeline in this process: camera, encoder and SRT
connection are opened afresh, which is what recovers a wedged camera or link; restarting the
process is the service manager's job), ``grant`` (``{"id", "mb"}``: a one-shot data allowance for
this budget period; a stream the budget had stopped starts again at once). With the data budget
used up, ``restart`` and ``snapshot`` are refused on ``ack`` with the reason in words, and a
``desired`` that asks for streaming is applied but not honoured until there is room again
(``reported.budget`` says why; see :mod:`.budgetguard`). Every byte of this connection counts
against the budget (:mod:`.mqttmeter`). A command that cannot be parsed is acked with the problem,
with id "" when no id could be read from it. A retained command is refused: it would replay on
every reconnect.

Telemetry: every ``telemetry_interval_s`` (5 s) while streaming; while idle one heartbeat per
``heartbeat_interval_s`` (default one hour) and one after each connect. Idle cost at the default
keepalive of 360 s, IP level, plain TCP (52 B of IPv4 + TCP-with-timestamps headers a segment),
measured on a veth (bench/control_idle.py): a keepalive exchange is PINGREQ + PINGRESP + the
client's ACK, 3 segments and 4 B of MQTT = 160 B, 10 an hour = 1.60 KB/h; a heartbeat is a ~150 B
PUBLISH (compact JSON, nulls left out) plus the segments around it = 266 B. Total ~1.87 KB/h
plain (TLS adds ~22-29 B per record). A heartbeat every keepalive would
cost ~3.7 KB/h more. Presence comes from the will (1.5 x keepalive), so the heartbeat only backs
up a broker whose will fails. It cannot replace the ping either: paho pings whenever nothing came
*in* for a keepalive, and a QoS 0 publish gets no answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flumph import __version__
from flumph.agent.budget import mqtt_publish_cost
from flumph.agent.mqttmeter import MqttMeter
from flumph.agent.pipeline import MIN_RATE_SPAN_S
from flumph.agent.snapshot import MAX_BYTES, MAX_WIDTH, encode_snapshot
from flumph.agent.transport import PAYLOAD_SIZE
from flumph.control import (
    CONTRACT_VERSION,
    MAX_DEPTH,
    MAX_PAYLOAD,
    Ack,
    ContractError,
    Grant,
    Ladder,
    LinkStats,
    Message,
    Rate,
    Reported,
    SourceReport,
    Status,
    Telemetry,
    Topics,
    decode_command,
    decode_desired,
)
from flumph.jsonlimits import JsonLimitError, loads
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import watch_connection
from flumph.settings import StreamSettings

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

    from flumph.agent.pipeline import Pipeline

log = logging.getLogger("flumph.agent.control")

TELEMETRY_INTERVAL_S = 5.0
HEARTBEAT_INTERVAL_S = 3600.0
COMMAND_QUEUE = 8
MAX_QUEUED_PUBLISHES = 32  # paho's outgoing queue while disconnected (QoS 1 only)
STOP_PUBLISH_TIMEOUT_S = 3.0


class CommandError(ValueError):
    """A command the device understood but cannot carry out now; the message says why."""


def salvage_command_id(payload: bytes) -> str:
    """The ``id`` of a command that failed validation, if one can be read; else ""."""
    try:
        doc = loads(payload, "command", max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except JsonLimitError:
        return ""
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else ""


def compact(message: Message) -> bytes:
    """JSON without the null fields: telemetry goes out every 5 s on a metered link."""
    return message.model_dump_json(exclude_none=True).encode()


def _measured(source: dict[str, Any]) -> bool:
    """A forwarded source's report has its measured rates (10 s of packets, two keyframes)."""
    return all(source.get(k) is not None for k in ("fps", "bitrate_kbps", "keyint_s"))


def _grown(now: int, before: int) -> int:
    """Growth of a counter that restarts from zero on each SRT connection."""
    return now - before if now >= before else now


@dataclass(frozen=True)
class _Sample:
    """Counters at the previous telemetry message, for the rates in the next one."""

    at: float
    streaming: bool
    frames_sent: int = 0
    lost: int = 0
    bytes_sent: int = 0
    bursts: int = 0


class AgentControl:
    """Connects the pipeline to the broker; ``start`` once, ``stop`` once."""

    def __init__(
        self,
        pipeline: Pipeline,
        mqtt: MqttSettings,
        *,
        telemetry_interval_s: float = TELEMETRY_INTERVAL_S,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        snapshot_max_width: int = MAX_WIDTH,
        snapshot_max_bytes: int = MAX_BYTES,
    ) -> None:
        if telemetry_interval_s <= 0 or heartbeat_interval_s <= 0:
            raise ValueError("telemetry and heartbeat intervals must be positive")
        self.pipeline = pipeline
        self.mqtt = mqtt
        self.device_id = pipeline.device_id
        self.topics = Topics(mqtt.prefix)
        self.telemetry_interval_s = telemetry_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.snapshot_max_width = snapshot_max_width
        self.snapshot_max_bytes = snapshot_max_bytes
        self.applied_v: int | None = None
        self.error: str | None = None
        self.connects = 0
        self.stale_ignored = 0  # desired documents not newer than the applied one
        self._reported = b""
        self._reported_streaming = False
        self._reported_ladder: object = None
        self._reported_lock = threading.Lock()
        self._cond = threading.Condition()
        self._desired: bytes | None = None
        self._fault: tuple[str | None] | None = None  # news from the pipeline's watchdog
        self._fault_reported: str | None = None  # the watchdog's error now on reported.error
        self._source_measured = True  # reported.source carries the measured rates (or no source)
        self._commands: deque[tuple[str, bytes, bool]] = deque()
        self._telemetry_due = 0.0
        self._budget_changed = False
        self._stopping = False
        self._sample = _Sample(time.monotonic(), streaming=False)
        self._thread = threading.Thread(target=self._run, name="agent-control", daemon=True)

        t = self.topics
        self._client = make_client(mqtt, client_id=f"flumph-dev-{self.device_id}")
        self._client.will_set(
            t.status(self.device_id), Status(state="offline").payload(), qos=1, retain=True
        )
        self._client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        watch_connection(
            self._client, url=mqtt.url, host=mqtt.host, port=mqtt.port, log=log, flag="--mqtt"
        )
        pipeline.on_fault = self._on_pipeline_fault
        # Every byte of the control connection counts against the data budget (mqttmeter.py).
        self.meter = MqttMeter(pipeline.usage, tls=mqtt.tls)
        self.meter.attach(self._client)
        self.budget = pipeline.budget
        self.budget.add_pending(self.meter.pending)
        self.budget.pollers.append(self.meter.poll)
        self.budget.listeners.append(self._on_budget_change)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, initial_error: str | None = None) -> None:
        """Connect in the background (retrying with backoff) and start following ``desired``."""
        self.error = initial_error
        self._store_reported()
        self._thread.start()
        self._client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        self._client.loop_start()
        log.info(
            "MQTT %s as %s (keepalive %d s)", self.mqtt.url, self.device_id, self.mqtt.keepalive_s
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Say offline (a clean disconnect discards the will), disconnect, end the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._client.is_connected():
            status = Status(state="offline").payload()
            info = self._client.publish(
                self.topics.status(self.device_id), status, qos=1, retain=True
            )
            try:
                info.wait_for_publish(STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as e:
                log.warning("could not publish offline status: %s", e)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    # --- paho's network thread: sort, never block ----------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.mqtt.url, reason_code)
            return
        self.connects += 1
        t, dev = self.topics, self.device_id
        client.subscribe([(t.desired(dev), 1), (t.cmd_all(dev), 1)])
        birth = Status(
            state="online",
            agent=__version__,
            contract=CONTRACT_VERSION,
            usage=self.budget.usage_view(),
        ).payload()
        client.publish(t.status(dev), birth, qos=1, retain=True)
        with self._reported_lock:
            reported = self._reported
        client.publish(t.reported(dev), reported, qos=1, retain=True)
        with self._cond:
            self._telemetry_due = 0.0
            self._cond.notify_all()
        log.info("MQTT connected to %s (connection %d)", self.mqtt.url, self.connects)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if not self._stopping:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", reason_code)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        if any(code.is_failure for code in codes):
            # Usually the broker's ACL: the device would never hear its desired or commands.
            log.error("MQTT broker refused the subscriptions (%s)", ", ".join(map(str, codes)))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        try:
            parsed = self.topics.parse(message.topic)
        except ContractError as e:  # cmd/<unknown name> arrives through the cmd/+ filter
            self._ack(salvage_command_id(payload), str(e))
            return
        if parsed.device_id != self.device_id:
            return
        if parsed.kind == "desired":
            with self._cond:
                self._desired = payload
                self._cond.notify_all()
        elif parsed.kind == "cmd" and parsed.command is not None:
            with self._cond:
                full = len(self._commands) >= COMMAND_QUEUE
                if not full:
                    self._commands.append((parsed.command, payload, bool(message.retain)))
                    self._cond.notify_all()
            if full:
                busy = f"busy: {COMMAND_QUEUE} commands are already waiting; try again"
                self._ack(salvage_command_id(payload), busy)

    # --- the control thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while (
                    not self._stopping
                    and self._desired is None
                    and not self._commands
                    and self._fault is None
                    and not self._budget_changed
                ):
                    wait = self._telemetry_due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                desired, self._desired = self._desired, None
                command = self._commands.popleft() if self._commands else None
                fault, self._fault = self._fault, None
                budget_changed, self._budget_changed = self._budget_changed, False
            try:
                if fault is not None:
                    self._report_fault(fault[0])
                if budget_changed:
                    self._follow_budget()
                if desired is not None:
                    self._handle_desired(desired)
                if command is not None:
                    self._handle_command(*command)
                if time.monotonic() >= self._telemetry_due:
                    self._send_telemetry()
            except Exception:  # the control plane must outlive any one bad step
                log.exception("control step failed")

    def _on_pipeline_fault(self, fault: str | None) -> None:
        """The watchdog's thread: a worker died (the text), or frames flow again (None)."""
        with self._cond:
            self._fault = (fault,)
            self._cond.notify_all()

    def _report_fault(self, fault: str | None) -> None:
        if fault is None and self.error is not None and self.error != self._fault_reported:
            return  # recovered, but reported.error holds another problem: leave it
        self._fault_reported = fault
        self._report(error=fault)
        self._streaming_changed()

    def _handle_desired(self, payload: bytes) -> None:
        if not payload:
            log.info("desired cleared: keeping the current settings")
            return
        try:
            desired = decode_desired(payload)
        except ContractError as e:
            self._report(error=str(e))
            return
        if self.applied_v is not None and desired.v <= self.applied_v:
            log.info("ignoring desired v%d: v%d is applied", desired.v, self.applied_v)
            self.stale_ignored += 1
            return
        old = self.pipeline.settings
        try:
            settings = desired.apply_to(old)
        except ContractError as e:
            self._report(error=str(e))
            return
        changed = [
            k for k in StreamSettings.model_fields if getattr(old, k) != getattr(settings, k)
        ]
        was_streaming = self.pipeline.streaming
        try:
            self.pipeline.apply(settings)
        except Exception as e:  # whatever stops the device applying it: keep the old settings
            what = ", ".join(f"{k}={getattr(settings, k)!r}" for k in changed) or "settings"
            self._report(error=f"desired v{desired.v}: cannot apply {what}: {e}")
            return
        self.applied_v = desired.v
        log.info("applied desired v%d (%s)", desired.v, ", ".join(changed) or "no change")
        self._fault_reported = self.pipeline.fault
        self._report(error=self.pipeline.fault)  # a restart under way is still the device's error
        if self.pipeline.streaming != was_streaming:
            self._streaming_changed()

    def _handle_command(self, name: str, payload: bytes, retained: bool) -> None:
        try:
            command = decode_command(name, payload)
        except ContractError as e:
            command_id = salvage_command_id(payload)
            note = "" if command_id else '; no id could be read, so this ack carries id ""'
            self._ack(command_id, f"cmd/{name}: {e}{note}")
            return
        if retained:
            self._ack(
                command.id,
                f"cmd/{name} was retained and is not executed: retained commands replay on every "
                "reconnect; clear it with mosquitto_pub -r -n -t <topic>",
            )
            return
        try:
            if name == "keyframe":
                self._keyframe()
            elif name == "snapshot":
                self._snapshot()
            elif name == "restart":
                self._restart()
            elif name == "grant" and isinstance(command, Grant):
                self._grant(command.mb)
            else:  # the contract knows more commands than this agent
                raise CommandError(f"this agent does not implement cmd/{name}")
        except Exception as e:
            if not isinstance(e, ValueError | OSError | RuntimeError):
                log.exception("cmd/%s failed", name)
            self._ack(command.id, f"cmd/{name} failed: {e}")
            return
        self._ack(command.id, None)

    def _on_budget_change(self) -> None:
        """From the budget watch: state, cap, limit or streaming changed; report on this thread."""
        with self._cond:
            self._budget_changed = True
            self._cond.notify_all()

    def _follow_budget(self) -> None:
        was_streaming = self._reported_streaming
        self._report(error=self.error)
        if self.pipeline.streaming != was_streaming:
            self._streaming_changed()

    def _grant(self, mb: float) -> None:
        self.budget.grant(mb)
        self.pipeline.budget_resume()
        self._follow_budget()

    def _keyframe(self) -> None:
        if not self.pipeline.streaming:
            raise CommandError("not streaming: there is no stream to put a keyframe in")
        self.pipeline.request_keyframe()

    def _snapshot(self) -> None:
        refusal = self.budget.refusal()
        if refusal is not None:
            raise CommandError(f"no snapshot: {refusal}")
        frame = self.pipeline.snapshot_frame()
        snap = encode_snapshot(
            frame, max_width=self.snapshot_max_width, max_bytes=self.snapshot_max_bytes
        )
        if not self.connected:
            raise CommandError("not connected to the broker")
        topic = self.topics.snapshot(self.device_id)
        cost = mqtt_publish_cost(len(topic.encode()), len(snap.data), tls=self.mqtt.tls)
        if not self.budget.fits(cost):
            raise CommandError(
                f"no snapshot: its {len(snap.data)} bytes ({cost} on the wire) do not fit in "
                "what is left of the data budget"
            )
        self.meter.charge_snapshot(len(topic.encode()), len(snap.data))
        self._client.publish(topic, snap.data, qos=1, retain=True)
        log.info(
            "snapshot %dx%d %s, %d bytes (%s)",
            snap.width, snap.height, snap.mime, len(snap.data), snap.encoder,
        )  # fmt: skip

    def _restart(self) -> None:
        if not self.pipeline.streaming:
            if self.pipeline.budget_blocked is not None:
                raise CommandError(f"not streaming: {self.budget.refusal() or 'data budget'}")
            log.info("restart: not streaming, nothing to restart")
            return
        self.pipeline.stop()
        try:
            self.pipeline.start()
        except Exception as e:
            self._report(error=f"restart: streaming did not start again: {e}")
            self._streaming_changed()
            raise
        self._report(error=self.error)
        self._streaming_changed()

    # --- publishing ---------------------------------------------------------------------------

    def _ack(self, command_id: str, error: str | None) -> None:
        if error is not None:
            log.warning("cmd %r refused: %s", command_id, error)
        if self._client.is_connected():
            ack = Ack(id=command_id, ok=error is None, error=error)
            self._client.publish(self.topics.ack(self.device_id), ack.payload(), qos=1)

    def _store_reported(self) -> bytes:
        p = self.pipeline
        source = p.copy.report(time.monotonic()) if p.copy is not None else None
        self._source_measured = source is None or _measured(source)
        ladder = p.status().get("ladder")
        self._reported_ladder = ladder
        reported = Reported(
            applied_v=self.applied_v,
            settings=p.settings.model_dump(),
            encoder=p.encoder_name,
            encoder_reason=p.encoder_reason,
            streaming=p.streaming,
            state=p.state,
            source=SourceReport.model_validate(source) if source is not None else None,
            notice=p.notice,
            error=self.error,
            budget=self.budget.view(),
            ladder=Ladder.model_validate(ladder) if ladder else None,
        ).payload()
        with self._reported_lock:
            self._reported = reported
            self._reported_streaming = p.streaming
        return reported

    def _report(self, *, error: str | None) -> None:
        self.error = error
        if error is not None:
            log.warning("reported error: %s", error)
        reported = self._store_reported()
        if self._client.is_connected():
            topic = self.topics.reported(self.device_id)
            self._client.publish(topic, reported, qos=1, retain=True)

    def _streaming_changed(self) -> None:
        now = time.monotonic()
        streaming = self.pipeline.streaming
        self._sample = self._take_sample(now, streaming)
        interval = self.telemetry_interval_s if streaming else self.heartbeat_interval_s
        with self._cond:
            self._telemetry_due = now + interval

    def _take_sample(self, now: float, streaming: bool) -> _Sample:
        s = self.pipeline.status()
        return _Sample(
            now,
            streaming,
            int(s["frames_sent"]),
            int(s.get("srt_packets_lost_sent") or 0),
            int(s.get("srt_bytes_sent") or 0),
            int(s.get("srt_bursts_sent") or 0),
        )

    def telemetry(self) -> Telemetry:
        """What the next telemetry message says.

        ``fps`` (frames sent) and ``srt.loss_pct`` cover the time since the previous message;
        ``loss_pct`` is packets the receiver reported lost against data packets sent, estimated
        from bytes and bursts. ``frames_dropped`` counts since streaming started and
        ``srt.retransmits`` over the current SRT connection: totals survive a lost QoS 0 message.
        """
        now = time.monotonic()
        s = self.pipeline.status()
        usage = self.budget.usage_view()
        view = self.budget.view()
        # No budget: the usage says it all, in fewer bytes every 5 s.
        budget = view if view.budget_bytes is not None else None
        streaming = bool(s["streaming"])
        previous, self._sample = self._sample, self._take_sample(now, streaming)
        if not streaming:
            return Telemetry(
                streaming=False, usage=usage, budget=budget, heartbeat_s=self.heartbeat_interval_s
            )
        settings = self.pipeline.settings
        fps = loss_pct = None
        span = now - previous.at
        # Rates over a short window are noise (see MIN_RATE_SPAN_S): unknown rather than wrong.
        if previous.streaming and span >= MIN_RATE_SPAN_S:
            fps = round((self._sample.frames_sent - previous.frames_sent) / span, 2)
            # Data packets sent, estimated: full packets plus the partial last one of each burst.
            sent = _grown(self._sample.bytes_sent, previous.bytes_sent) / PAYLOAD_SIZE
            sent += _grown(self._sample.bursts, previous.bursts) / 2
            lost = _grown(self._sample.lost, previous.lost)
            loss_pct = round(100 * lost / (sent + lost), 2) if sent + lost > 0 else 0.0
        dropped = sum(
            int(s.get(k) or 0)
            for k in ("frames_dropped_busy", "frames_dropped_offline", "frames_skipped_late")
        )
        link = None
        if "srt_rtt_ms" in s:
            link = LinkStats(
                rtt_ms=s["srt_rtt_ms"], loss_pct=loss_pct, retransmits=s["srt_retransmitted"]
            )
        width, height = settings.width, settings.height
        if "source" in s:  # forwarding: the size is the source's
            width, height = s["source"]["width"], s["source"]["height"]
        if s.get("ladder") != self._reported_ladder:
            self._report(error=self.error)  # the ladder is retained state: on reported
        return Telemetry(
            streaming=True,
            rate=Rate.model_validate(s["rate"]) if s.get("rate") else None,
            fps=fps,
            bitrate_kbps=s["bitrate_kbps"],
            encoder=s["encoder"],
            width=width,
            height=height,
            frames_dropped=dropped,
            srt=link,
            usage=usage,
            budget=budget,
        )

    def _send_telemetry(self) -> None:
        if not self._client.is_connected():
            # Not measured while nobody hears it: the rates of the next message then cover the
            # time since the last one sent, not the moments between a discarded one and connect.
            interval = self.telemetry_interval_s
            with self._cond:
                self._telemetry_due = time.monotonic() + interval
            return
        message = self.telemetry()
        interval = self.telemetry_interval_s if message.streaming else self.heartbeat_interval_s
        with self._cond:
            self._telemetry_due = time.monotonic() + interval
        topic = self.topics.telemetry(self.device_id)
        self._client.publish(topic, compact(message), qos=0)
        copy = self.pipeline.copy
        if (
            not self._source_measured
            and copy is not None
            and _measured(copy.report(time.monotonic()))
        ):
            self._report(error=self.error)  # once per session: the source's measured rates
