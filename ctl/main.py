"""`flumph ctl`: the ops tool, on the MQTT contract, against any broker.

    flumph ctl devices                       table of every device's retained state
    flumph ctl start ID | stop ID            patch {"streaming": true|false} on <p>/ID/set
    flumph ctl set ID key=value...           any settings patch on <p>/ID/set
                                             (each waits until ID applied it; --no-wait)
    flumph ctl snapshot ID [-o FILE]         cmd/snapshot, then the new retained still
    flumph ctl cmd ID keyframe|restart       one-shot command, waits for its ack
    flumph ctl grant ID MB                   one-shot data allowance for this budget period
    flumph ctl watch [ID] [--count N]        status/telemetry/... lines until Ctrl-C
    flumph ctl usage [ID]                    data used vs budget (+ 48 h by the hour), from
                                             the dashboard's API (see flumph.ctl.usage)
    flumph ctl add ID | forget ID            make a device known / remove it (ctl.lifecycle)

Patches go to ``set`` (never straight to ``desired``) so that whichever backend owns the shadow
merges them. Each carries a fresh ``client_token``; the backend's answer with that token on
``set/accepted`` gives the version, and then ctl waits until the device reports ``applied_v`` at
least that version (``--no-wait``: only for the backend's answer). A rejection, an offline device,
a device error or the timeout ends it with exit code 1 and the reason (see
:mod:`flumph.ctl.setwait`).
Values in ``key=value`` are JSON when they parse (``bitrate_kbps=300``, ``streaming=true``), else
strings (``codec=av1``), and are validated here before anything is sent. Broker and account:
``--mqtt URL --username U --password P`` or ``FLUMPH_CTL_MQTT_URL``, ``FLUMPH_CTL_MQTT_USERNAME``,
``FLUMPH_CTL_MQTT_PASSWORD`` (or a ``[ctl.mqtt]`` table, like every component's; the older
``FLUMPH_CTL_MQTT``, ``FLUMPH_CTL_USERNAME``, ... and flat ``[ctl]`` keys still work, told once).

Exit codes: 0 done; 1 runtime failure (broker unreachable or refusing, timeout, a patch refused,
a device offline or in error); 2 usage or validation error (the message names the key or value),
or a device that is not known.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from flumph.clihelp import default_of
from flumph.config import ConfigError, StrictModel, load_config
from flumph.control import (
    CLIENT_TOKEN,
    Ack,
    Command,
    ContractError,
    Demand,
    Grant,
    Message,
    Reported,
    SetAccepted,
    SetRejected,
    Status,
    Telemetry,
    TopicKind,
    Topics,
    check_device_id,
    decode,
    decode_desired,
    validate_patch,
)
from flumph.ctl import lifecycle as ctl_lifecycle
from flumph.ctl import usage as ctl_usage
from flumph.ctl.setwait import SetWait
from flumph.mqtt import MqttSettings, make_client
from flumph.mqttwatch import failure_reason

ENV_PREFIX = "FLUMPH_CTL_"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
WATCHED: tuple[TopicKind, ...] = (
    "status", "telemetry", "reported", "desired", "ack", "demand", "snapshot",
    "set/accepted", "set/rejected",
)  # fmt: skip


class CtlError(Exception):
    """A runtime failure: exit code 1."""


class CtlMqtt(MqttSettings):
    """ctl's broker connection: a short-lived tool notices a dead broker within a minute."""

    keepalive_s: int = Field(default=60, ge=5, le=3600, title="MQTT keepalive")


# ctl's flat keys before its mqtt table, each mapped to its place in it (also as FLUMPH_CTL_<KEY>).
RENAMED = {
    "mqtt": "mqtt.url",
    "username": "mqtt.username",
    "password": "mqtt.password",
    "ca_file": "mqtt.ca_file",
    "prefix": "mqtt.prefix",
}


class CtlConfig(StrictModel):
    mqtt: CtlMqtt = Field(
        default_factory=lambda: CtlMqtt(),
        title="the broker and an ops account: the [ctl.mqtt] table",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=3600, title="connect and wait timeout")
    dashboard: str = Field(default="http://127.0.0.1:8000", title="the dashboard's URL (for usage)")
    dashboard_password: str | None = Field(
        default=None, title="the dashboard's operator password (for usage)"
    )

    @field_validator("dashboard")
    @classmethod
    def _dashboard(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v.split("//", 1)[1]) == 0:
            raise ValueError("must be an http:// or https:// URL naming a host")
        return v


# --- pure helpers ---------------------------------------------------------------------------


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["bitrate_kbps=300", "codec=av1"]`` → a validated patch; ContractError names the item."""
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ContractError(f"{item!r} is not key=value")
        try:
            patch[key] = json.loads(text)
        except ValueError:
            patch[key] = text
    if not patch:
        raise ContractError("give at least one key=value")
    return validate_patch(patch)


def snapshot_extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and b"avi" in data[8:64]:
        return "avif"
    return "bin"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB" if n < 1e9 else f"{n / 1e9:.2f}GB"


def describe(kind: str, payload: bytes) -> str:
    """One human line for one message (the ``watch`` output); never raises on bad payloads."""
    try:
        return _describe(kind, payload)
    except ContractError as e:
        return f"INVALID: {e}"


def _describe(kind: str, payload: bytes) -> str:
    if kind == "snapshot":
        return f"{len(payload)} bytes ({snapshot_extension(payload)})" if payload else "cleared"
    if not payload:
        return "cleared"
    if kind == "status":
        return decode(Status, payload).state
    if kind == "set/accepted":
        acc = decode(SetAccepted, payload)
        return f"v{acc.v} {json.dumps(acc.patch, sort_keys=True)}"
    if kind == "set/rejected":
        return f"REFUSED: {decode(SetRejected, payload).error}"
    if kind == "desired":
        d = decode_desired(payload)
        return f"v{d.v} {json.dumps(d.settings_patch(), sort_keys=True)}"
    if kind == "reported":
        r = decode(Reported, payload)
        state = r.state or ("streaming" if r.streaming else "idle")
        err = f" error={r.error}" if r.error else ""
        notice = f" notice={r.notice}" if r.notice else ""
        budget = f" budget={r.budget.state}" if r.budget is not None else ""
        return f"applied v{r.applied_v} {state} encoder={r.encoder}{err}{notice}{budget}"
    if kind == "ack":
        a = decode(Ack, payload)
        return f"{a.id} ok" if a.ok else f"{a.id} FAILED: {a.error}"
    if kind == "demand":
        return f"viewers={decode(Demand, payload).viewers}"
    t = decode(Telemetry, payload)
    parts = ["streaming" if t.streaming else "idle"]
    if t.fps is not None:
        parts.append(f"fps={t.fps:.1f}")
    if t.bitrate_kbps is not None:
        parts.append(f"kbps={t.bitrate_kbps:.0f}")
    if t.srt is not None and t.srt.rtt_ms is not None:
        parts.append(f"rtt={t.srt.rtt_ms:.0f}ms loss={t.srt.loss_pct or 0:.1f}%")
    if t.usage is not None:
        used = t.usage.bytes_sent + t.usage.bytes_received
        budget = f"/{_mb(t.usage.budget_bytes)}" if t.usage.budget_bytes else ""
        parts.append(f"used={_mb(used)}{budget}")
    if t.budget is not None and t.budget.state != "ok":
        parts.append(f"budget={t.budget.state}")
        if t.budget.cap_kbps is not None:
            parts.append(f"cap={t.budget.cap_kbps}kbps")
    if t.heartbeat_s is not None:
        parts.append(f"heartbeat={t.heartbeat_s:.0f}s")
    return " ".join(parts)


# --- one synchronous MQTT session -----------------------------------------------------------


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


# --- commands -------------------------------------------------------------------------------


def cmd_devices(s: Session, ns: argparse.Namespace) -> int:
    kinds: tuple[TopicKind, ...] = ("status", "reported", "desired", "demand")
    s.subscribe([s.topics.every(k) for k in kinds])
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + ns.wait
    while (msg := s.next(deadline)) is not None:
        try:
            parsed = s.topics.parse(msg.topic)
        except ContractError:
            continue
        row = rows.setdefault(parsed.device_id, {"device": parsed.device_id})
        row[parsed.kind] = _field(parsed.kind, msg.payload)
    table = [rows[k] for k in sorted(rows)]
    if ns.json:
        print(json.dumps(table, indent=2))
        return EXIT_OK
    if not table:
        print("no devices (no retained status, reported or desired)", file=sys.stderr)
        return EXIT_OK
    header = ("DEVICE", "STATUS", "STREAMING", "WANTED", "DESIRED", "APPLIED", "VIEWERS",
              "ENCODER", "ERROR")  # fmt: skip
    lines = [header] + [_row(r) for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def _field(kind: str, payload: bytes) -> Any:
    if not payload:
        return None
    try:
        if kind == "desired":
            return json.loads(decode_desired(payload).payload())
        models: dict[str, type[Message]] = {
            "status": Status, "reported": Reported, "demand": Demand,
        }  # fmt: skip
        return decode(models[kind], payload).model_dump()
    except ContractError as e:
        return {"invalid": str(e)}


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    def get(kind: str, key: str) -> Any:
        doc = r.get(kind)
        if isinstance(doc, dict) and "invalid" in doc:
            return "invalid"
        return doc.get(key) if isinstance(doc, dict) else None

    def text(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    return (
        r["device"],
        text(get("status", "state")),
        text(get("reported", "streaming")),
        text(get("desired", "streaming")),
        text(get("desired", "v")),
        text(get("reported", "applied_v")),
        text(get("demand", "viewers")),
        text(get("reported", "encoder")),
        text(get("reported", "error")),
    )


def send_patch(s: Session, device_id: str, patch: dict[str, Any], wait_applied: bool) -> int:
    token = f"ctl-{uuid.uuid4().hex[:16]}"
    t = s.topics
    filters = [t.set_accepted(device_id), t.set_rejected(device_id)]
    if wait_applied:
        filters += [t.reported(device_id), t.status(device_id)]
    s.subscribe(filters)
    s.publish(t.set(device_id), json.dumps({**patch, CLIENT_TOKEN: token}).encode())
    print(f"sent {json.dumps(patch)} to {t.set(device_id)}", flush=True)
    wait = SetWait(device_id, token, wait_applied=wait_applied)
    deadline = time.monotonic() + s.cfg.timeout_s
    while (msg := s.next(deadline)) is not None:
        try:
            kind = t.parse(msg.topic).kind
        except ContractError:
            continue
        outcome = wait.feed(kind, msg.payload, msg.retain)
        if outcome is not None:
            if not outcome.ok:
                raise CtlError(outcome.message)
            print(outcome.message)
            return EXIT_OK
    raise CtlError(wait.timed_out(s.cfg.timeout_s).message)


def _wait_ack(s: Session, device_id: str, cid: str, deadline: float) -> Ack | None:
    while (msg := s.next(deadline)) is not None:
        if msg.topic == s.topics.ack(device_id):
            try:
                ack = decode(Ack, msg.payload)
            except ContractError:
                continue
            if ack.id == cid:
                return ack
    return None


def cmd_command(s: Session, device_id: str, name: str, mb: float | None = None) -> int:
    s.subscribe([s.topics.ack(device_id)])
    cid = uuid.uuid4().hex[:16]
    command = Command(id=cid) if mb is None else Grant(id=cid, mb=mb)
    s.publish(s.topics.cmd(device_id, name), command.payload())
    ack = _wait_ack(s, device_id, cid, time.monotonic() + s.cfg.timeout_s)
    if ack is None:
        raise CtlError(f"{device_id} did not acknowledge {name} within {s.cfg.timeout_s} s")
    if not ack.ok:
        raise CtlError(f"{device_id} refused {name}: {ack.error}")
    print(f"{device_id}: {name} ok")
    return EXIT_OK


def cmd_snapshot(s: Session, device_id: str, output: str | None) -> int:
    s.subscribe([s.topics.snapshot(device_id), s.topics.ack(device_id)])
    cid = uuid.uuid4().hex[:16]
    s.publish(s.topics.cmd(device_id, "snapshot"), Command(id=cid).payload())
    deadline = time.monotonic() + s.cfg.timeout_s
    while (msg := s.next(deadline)) is not None:
        if msg.topic == s.topics.snapshot(device_id):
            if msg.retain or not msg.payload:
                continue  # the previous still, delivered because we subscribed
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(output or f"{device_id}-{stamp}.{snapshot_extension(msg.payload)}")
            path.write_bytes(msg.payload)
            print(f"{path} ({len(msg.payload)} bytes)")
            return EXIT_OK
        if msg.topic == s.topics.ack(device_id):
            try:
                ack = decode(Ack, msg.payload)
            except ContractError:
                continue
            if ack.id == cid and not ack.ok:
                raise CtlError(f"{device_id} refused the snapshot: {ack.error}")
    raise CtlError(f"no new snapshot from {device_id} within {s.cfg.timeout_s} s")


def cmd_watch(s: Session, device_id: str | None, count: int | None) -> int:
    if device_id is None:
        filters = [s.topics.every(k) for k in WATCHED]
    else:
        filters = [f"{s.topics.prefix}/{check_device_id(device_id)}/{k}" for k in WATCHED]
    s.subscribe(filters)
    printed = 0
    while count is None or printed < count:
        msg = s.next(None)
        if msg is None:
            continue
        try:
            parsed = s.topics.parse(msg.topic)
        except ContractError:
            continue
        when = time.strftime("%H:%M:%S")
        mark = " (retained)" if msg.retain else ""
        line = f"{when} {parsed.device_id} {parsed.kind}{mark} {describe(parsed.kind, msg.payload)}"
        print(line, flush=True)
        printed += 1
    return EXIT_OK


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("broker")
    sup = argparse.SUPPRESS
    g.add_argument("--mqtt", metavar="URL", default=sup, help="mqtt[s]://host:port")
    g.add_argument("--username", default=sup, help="MQTT username (env FLUMPH_CTL_MQTT_USERNAME)")
    g.add_argument("--password", default=sup, help="prefer env FLUMPH_CTL_MQTT_PASSWORD")
    g.add_argument("--ca-file", default=sup, help="CA bundle for mqtts://")
    g.add_argument("--prefix", default=sup, help=f"topic prefix ({default_of(CtlMqtt, 'prefix')})")
    g.add_argument("--timeout", dest="timeout_s", type=float, default=sup, help="seconds (10)")
    g.add_argument("--config", default=sup, help="TOML file; its [ctl] table is read")

    p = argparse.ArgumentParser(
        prog="flumph ctl",
        parents=[common],
        description="Ops tool: list, start, stop, configure and watch devices over MQTT.",
        epilog="Exit codes: 0 ok, 1 runtime failure (broker, timeout, patch refused, device "
        "offline or in error), 2 usage/validation.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("devices", parents=[common], help="table of the devices' retained state")
    d.add_argument("--wait", type=float, default=1.0, help="seconds to collect (default 1)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, text in (("start", "stream now"), ("stop", "stop streaming")):
        c = sub.add_parser(name, parents=[common], help=f"{text}: patch on <prefix>/ID/set")
        c.add_argument("device")
        _no_wait(c)
    c = sub.add_parser("set", parents=[common], help="patch settings: set ID key=value...")
    c.add_argument("device")
    c.add_argument("assign", nargs="+", metavar="key=value")
    _no_wait(c)
    c = sub.add_parser("snapshot", parents=[common], help="take a still and save it")
    c.add_argument("device")
    c.add_argument("-o", "--output", help="file (default ID-YYYYmmdd-HHMMSS.jpg|avif)")
    c = sub.add_parser("cmd", parents=[common], help="one-shot command: keyframe or restart")
    c.add_argument("device")
    c.add_argument("name", choices=("keyframe", "restart", "snapshot"))
    c = sub.add_parser("grant", parents=[common], help="data allowance: grant ID MB (10^6 B)")
    c.add_argument("device")
    c.add_argument("mb", type=float, help="megabytes for this budget period, on top of it")
    c = sub.add_parser("watch", parents=[common], help="print messages until Ctrl-C")
    c.add_argument("device", nargs="?")
    c.add_argument("--count", type=int, help="exit after this many lines")
    c = sub.add_parser("usage", parents=[common], help="data used vs budget, 48 h by the hour")
    c.add_argument("device", nargs="?")
    c.add_argument("--json", action="store_true", help="print the dashboard's JSON")
    c.add_argument("--dashboard", default=sup, help="dashboard URL (http://127.0.0.1:8000)")
    c.add_argument(
        "--dashboard-password", default=sup, help="prefer env FLUMPH_CTL_DASHBOARD_PASSWORD"
    )
    ctl_lifecycle.add_parsers(sub, common)
    return p


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wait",
        dest="wait_applied",
        action="store_false",
        help="return once the backend accepted the patch (set/accepted), without waiting for "
        "the device to apply it",
    )


def _config(ns: argparse.Namespace) -> CtlConfig:
    # The broker flags keep their names (--mqtt URL, --username, ...) and set [ctl.mqtt] keys.
    names = (*RENAMED, *(k for k in CtlConfig.model_fields if k != "mqtt"))
    flags = {RENAMED.get(k, k): getattr(ns, k, None) for k in names}
    return load_config(
        CtlConfig,
        path=getattr(ns, "config", None),
        section="ctl",
        env_prefix=ENV_PREFIX,
        flags=flags,
        renamed=RENAMED,
    )


def _patch(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.command == "start":
        return {"streaming": True}
    if ns.command == "stop":
        return {"streaming": False}
    return parse_assignments(ns.assign)


def run(ns: argparse.Namespace, cfg: CtlConfig) -> int:
    device = getattr(ns, "device", None)
    patch: dict[str, Any] | None = None
    # Everything that can be checked without the broker is checked first (exit 2).
    if device is not None:
        check_device_id(device)
    if ns.command in ("start", "stop", "set"):
        patch = _patch(ns)
    if ns.command == "usage":
        dashboard = ctl_usage.Dashboard(cfg.dashboard, cfg.dashboard_password, cfg.timeout_s)
        try:
            lines = ctl_usage.usage(dashboard, device, ns.json)
        except ctl_usage.UsageError as e:
            raise CtlError(str(e)) from None
        print("\n".join(lines))
        return EXIT_OK
    if ns.command == "grant":
        decode(Grant, json.dumps({"id": "check", "mb": ns.mb}))  # bad MB: exit 2, named
    s = Session(cfg)
    try:
        s.connect()
        if ns.command == "devices":
            return cmd_devices(s, ns)
        if ns.command == "add":
            return ctl_lifecycle.cmd_add(s, ns.device)
        if ns.command == "forget":
            return ctl_lifecycle.cmd_forget(s, ns.device)
        if ns.command != "watch":
            ctl_lifecycle.require_known(s, ns.device)  # UnknownDevice: exit 2, says how to add
        if patch is not None:
            return send_patch(s, ns.device, patch, ns.wait_applied)
        if ns.command == "snapshot":
            return cmd_snapshot(s, ns.device, ns.output)
        if ns.command == "cmd":
            return cmd_command(s, ns.device, ns.name)
        if ns.command == "grant":
            return cmd_command(s, ns.device, "grant", ns.mb)
        return cmd_watch(s, device, ns.count)
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = sys.argv[1:] if argv is None else argv
    if not args:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    ns = parser.parse_args(args)  # exits 2 on a usage error
    try:
        cfg = _config(ns)
        return run(ns, cfg)
    except (ContractError, ConfigError) as e:
        print(f"flumph ctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CtlError as e:
        print(f"flumph ctl: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
