"""The agent's MQTT session: presence, the desired/reported shadow, and when commands and
telemetry go (what they do and say: :mod:`.commands`, :mod:`.telemetry`).

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

Desired: each document is validated and merged over the settings in force (see :mod:`.desired`);
one the device cannot apply (no encoder opens, the camera fails) leaves ``applied_v`` and the
running settings as they were and puts the reason on ``reported.error``.

Commands are carried out on the control thread by :mod:`.commands`. With the data budget used
up, a ``desired`` that asks for streaming is applied but not honoured until there is room again
(``reported.budget`` says why; see :mod:`.budgetguard`). Every byte of this connection counts
against the budget (:mod:`.mqttmeter`).

Telemetry (what it says and what it costs: :mod:`.telemetry`): every ``telemetry_interval_s``
(5 s) while streaming; while idle one heartbeat per ``heartbeat_interval_s`` (default one hour)
and one after each connect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from flumph import __version__
from flumph.agent.commands import Commands, salvage_command_id
from flumph.agent.desired import StaleDesired, plan_desired
from flumph.agent.mqttmeter import MqttMeter
from flumph.agent.snapshot import MAX_BYTES, MAX_WIDTH
from flumph.agent.telemetry import Sample, compact, measured, sample_of, streaming_telemetry
from flumph.control import (
    CONTRACT_VERSION,
    Ack,
    ContractError,
    Ladder,
    Reported,
    SourceReport,
    Status,
    Telemetry,
    Topics,
)
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import watch_connection

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
        self._sample = Sample(time.monotonic(), streaming=False)
        self._thread = threading.Thread(target=self._run, name="agent-control", daemon=True)
        self.commands = Commands(self)

        t = self.topics
        self.client = make_client(mqtt, client_id=f"flumph-dev-{self.device_id}")
        self.client.will_set(
            t.status(self.device_id), Status(state="offline").payload(), qos=1, retain=True
        )
        self.client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        watch_connection(
            self.client, url=mqtt.url, host=mqtt.host, port=mqtt.port, log=log, flag="--mqtt"
        )
        pipeline.on_fault = self._on_pipeline_fault
        # Every byte of the control connection counts against the data budget (mqttmeter.py).
        self.meter = MqttMeter(pipeline.usage, tls=mqtt.tls)
        self.meter.attach(self.client)
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
        self.client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        self.client.loop_start()
        log.info(
            "MQTT %s as %s (keepalive %d s)", self.mqtt.url, self.device_id, self.mqtt.keepalive_s
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Say offline (a clean disconnect discards the will), disconnect, end the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self.client.is_connected():
            status = Status(state="offline").payload()
            info = self.client.publish(
                self.topics.status(self.device_id), status, qos=1, retain=True
            )
            try:
                info.wait_for_publish(STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as e:
                log.warning("could not publish offline status: %s", e)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected())

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
            self.ack(salvage_command_id(payload), str(e))
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
                self.ack(salvage_command_id(payload), busy)

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
                    self.follow_budget()
                if desired is not None:
                    self._handle_desired(desired)
                if command is not None:
                    self.commands.handle(*command)
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
        self.report(error=fault)
        self.streaming_changed()

    def _handle_desired(self, payload: bytes) -> None:
        try:
            change = plan_desired(payload, self.applied_v, self.pipeline.settings)
        except StaleDesired as e:
            log.info("%s", e)
            self.stale_ignored += 1
            return
        except ContractError as e:
            self.report(error=str(e))
            return
        if change is None:
            log.info("desired cleared: keeping the current settings")
            return
        was_streaming = self.pipeline.streaming
        try:
            self.pipeline.apply(change.settings)
        except Exception as e:  # whatever stops the device applying it: keep the old settings
            self.report(error=f"desired v{change.v}: cannot apply {change.what()}: {e}")
            return
        self.applied_v = change.v
        log.info("applied desired v%d (%s)", change.v, ", ".join(change.changed) or "no change")
        self._fault_reported = self.pipeline.fault
        self.report(error=self.pipeline.fault)  # a restart under way is still the device's error
        if self.pipeline.streaming != was_streaming:
            self.streaming_changed()

    def _on_budget_change(self) -> None:
        """From the budget watch: state, cap, limit or streaming changed; report on this thread."""
        with self._cond:
            self._budget_changed = True
            self._cond.notify_all()

    def follow_budget(self) -> None:
        was_streaming = self._reported_streaming
        self.report(error=self.error)
        if self.pipeline.streaming != was_streaming:
            self.streaming_changed()

    # --- publishing ---------------------------------------------------------------------------

    def ack(self, command_id: str, error: str | None) -> None:
        if error is not None:
            log.warning("cmd %r refused: %s", command_id, error)
        if self.client.is_connected():
            ack = Ack(id=command_id, ok=error is None, error=error)
            self.client.publish(self.topics.ack(self.device_id), ack.payload(), qos=1)

    def _store_reported(self) -> bytes:
        p = self.pipeline
        source = p.copy.report(time.monotonic()) if p.copy is not None else None
        self._source_measured = source is None or measured(source)
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

    def report(self, *, error: str | None) -> None:
        self.error = error
        if error is not None:
            log.warning("reported error: %s", error)
        reported = self._store_reported()
        if self.client.is_connected():
            topic = self.topics.reported(self.device_id)
            self.client.publish(topic, reported, qos=1, retain=True)

    def streaming_changed(self) -> None:
        now = time.monotonic()
        streaming = self.pipeline.streaming
        self._sample = self._take_sample(now, streaming)
        interval = self.telemetry_interval_s if streaming else self.heartbeat_interval_s
        with self._cond:
            self._telemetry_due = now + interval

    def _take_sample(self, now: float, streaming: bool) -> Sample:
        return sample_of(self.pipeline.status(), now, streaming)

    def telemetry(self) -> Telemetry:
        """What the next telemetry message says (see :func:`.telemetry.streaming_telemetry`)."""
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
        if s.get("ladder") != self._reported_ladder:
            self.report(error=self.error)  # the ladder is retained state: on reported
        return streaming_telemetry(
            s, self.pipeline.settings, previous, self._sample, usage=usage, budget=budget
        )

    def _send_telemetry(self) -> None:
        if not self.client.is_connected():
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
        self.client.publish(topic, compact(message), qos=0)
        copy = self.pipeline.copy
        if (
            not self._source_measured
            and copy is not None
            and measured(copy.report(time.monotonic()))
        ):
            self.report(error=self.error)  # once per session: the source's measured rates
