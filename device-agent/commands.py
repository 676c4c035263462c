"""The agent's one-shot commands: parsed, refused when they cannot run now, carried out, acked.

Run on the "agent-control" thread (see :mod:`.control`), one at a time.

``keyframe`` (refused while not streaming), ``snapshot`` (see :mod:`.snapshot`; the picture is
published retained on ``<p>/<dev>/snapshot`` before the ack, so whoever waits for the ack finds
it), ``restart`` (stops and starts the pipeline in this process: camera, encoder and SRT
connection are opened afresh, which is what recovers a wedged camera or link; restarting the
process is the service manager's job), ``grant`` (``{"id", "mb"}``: a one-shot data allowance for
this budget period; a stream the budget had stopped starts again at once). With the data budget
used up, ``restart`` and ``snapshot`` are refused on ``ack`` with the reason in words (see
:mod:`.budgetguard`). A command that cannot be parsed is acked with the problem, with id "" when
no id could be read from it. A retained command is refused: it would replay on every reconnect.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flumph.agent.budget import mqtt_publish_cost
from flumph.agent.snapshot import encode_snapshot
from flumph.control import MAX_DEPTH, MAX_PAYLOAD, ContractError, Grant, decode_command
from flumph.jsonlimits import JsonLimitError, loads

if TYPE_CHECKING:
    from flumph.agent.control import AgentControl

log = logging.getLogger("flumph.agent.control")


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


class Commands:
    """Carries out the commands of one :class:`~.control.AgentControl` on its pipeline."""

    def __init__(self, control: AgentControl) -> None:
        self.control = control

    def handle(self, name: str, payload: bytes, retained: bool) -> None:
        """``cmd/<name>``: carry it out and answer on ``ack``."""
        ack = self.control.ack
        try:
            command = decode_command(name, payload)
        except ContractError as e:
            command_id = salvage_command_id(payload)
            note = "" if command_id else '; no id could be read, so this ack carries id ""'
            ack(command_id, f"cmd/{name}: {e}{note}")
            return
        if retained:
            ack(
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
            ack(command.id, f"cmd/{name} failed: {e}")
            return
        ack(command.id, None)

    def _grant(self, mb: float) -> None:
        control = self.control
        control.budget.grant(mb)
        control.pipeline.budget_resume()
        control.follow_budget()

    def _keyframe(self) -> None:
        if not self.control.pipeline.streaming:
            raise CommandError("not streaming: there is no stream to put a keyframe in")
        self.control.pipeline.request_keyframe()

    def _snapshot(self) -> None:
        control = self.control
        refusal = control.budget.refusal()
        if refusal is not None:
            raise CommandError(f"no snapshot: {refusal}")
        frame = control.pipeline.snapshot_frame()
        snap = encode_snapshot(
            frame, max_width=control.snapshot_max_width, max_bytes=control.snapshot_max_bytes
        )
        if not control.connected:
            raise CommandError("not connected to the broker")
        topic = control.topics.snapshot(control.device_id)
        cost = mqtt_publish_cost(len(topic.encode()), len(snap.data), tls=control.mqtt.tls)
        if not control.budget.fits(cost):
            raise CommandError(
                f"no snapshot: its {len(snap.data)} bytes ({cost} on the wire) do not fit in "
                "what is left of the data budget"
            )
        control.meter.charge_snapshot(len(topic.encode()), len(snap.data))
        control.client.publish(topic, snap.data, qos=1, retain=True)
        log.info(
            "snapshot %dx%d %s, %d bytes (%s)",
            snap.width, snap.height, snap.mime, len(snap.data), snap.encoder,
        )  # fmt: skip

    def _restart(self) -> None:
        control, pipeline = self.control, self.control.pipeline
        if not pipeline.streaming:
            if pipeline.budget_blocked is not None:
                raise CommandError(f"not streaming: {control.budget.refusal() or 'data budget'}")
            log.info("restart: not streaming, nothing to restart")
            return
        pipeline.stop()
        try:
            pipeline.start()
        except Exception as e:
            control.report(error=f"restart: streaming did not start again: {e}")
            control.streaming_changed()
            raise
        control.report(error=control.error)
        control.streaming_changed()
