"""The MQTT control contract shared by the agent, the backend, `flumph ctl` and the tests.

Every topic string is built here and nowhere else. Payloads are JSON objects validated by the
models below; a bad payload raises :class:`ContractError` whose message names the field, which
the receiver reports on ``reported.error`` or ``ack`` instead of crashing.

Topics under a prefix ``<p>`` (default ``flumph``), MQTT 3.1.1 so that every broker works:

| topic                  | publisher                 | retain / QoS | payload                  |
|------------------------|---------------------------|--------------|--------------------------|
| ``<p>/<dev>/status``   | device birth, broker will | retained, 1  | :class:`Status`          |
| ``<p>/<dev>/desired``  | backend (shadow owner)    | retained, 1  | :class:`Desired`         |
| ``<p>/<dev>/set``      | dashboard, ctl, ops tools | no, 1        | partial settings (patch) |
| ``<p>/<dev>/set/accepted`` | backend (shadow owner) | no, 1       | :class:`SetAccepted`     |
| ``<p>/<dev>/set/rejected`` | backend (shadow owner) | no, 1       | :class:`SetRejected`     |
| ``<p>/<dev>/reported`` | device                    | retained, 1  | :class:`Reported`        |
| ``<p>/<dev>/cmd/<n>``  | dashboard, ctl, ops tools | no, 1        | :class:`Command`         |
| ``<p>/<dev>/ack``      | device                    | no, 1        | :class:`Ack`             |
| ``<p>/<dev>/telemetry``| device                    | no, 0        | :class:`Telemetry`       |
| ``<p>/<dev>/snapshot`` | device                    | retained, 1  | image bytes (AVIF/JPEG)  |
| ``<p>/<dev>/demand``   | ingest                    | retained, 1  | :class:`Demand`          |

Why: desired/reported is the AWS-shadow model, so a device that was offline converges to the
latest wish on reconnect and a partial update cannot be half-applied. ``set`` carries partial
patches (what ``mosquitto_pub -t flumph/cam1/set -m '{"streaming":true}'`` sends); the backend
merges each into the retained ``desired`` with the version + 1, so the device follows one
document, and answers every patch on ``set/accepted`` (the new version) or ``set/rejected`` (the
error, naming the field): the AWS IoT shadow's ``update/accepted``/``update/rejected``, so a tool
learns what happened without reading the backend's log. A patch may carry ``client_token`` (a
string the answer echoes, as AWS's ``clientToken``) to pick its own answer among others'.
One-shot commands are never retained (retained commands replay on reconnect).
``demand`` is the ingest's count of viewers waiting on a device: the backend turns it into
on-demand start/stop, so the ingest decides nothing about devices.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flumph.config import format_validation_error
from flumph.jsonlimits import JsonLimitError, loads_object
from flumph.media.streamid import DEVICE_ID_RE
from flumph.settings import StreamSettings

DEFAULT_PREFIX = "flumph"
PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
COMMANDS = ("keyframe", "snapshot", "restart", "grant")
CommandName = Literal["keyframe", "snapshot", "restart", "grant"]
TopicKind = Literal[
    "status", "desired", "set", "reported", "cmd", "ack", "telemetry", "snapshot", "demand",
    "set/accepted", "set/rejected",
]  # fmt: skip
KINDS: tuple[TopicKind, ...] = (
    "status", "desired", "set", "reported", "cmd", "ack", "telemetry", "snapshot", "demand",
    "set/accepted", "set/rejected",
)  # fmt: skip
MAX_PAYLOAD = 64 * 1024  # control documents; snapshots are images and not parsed here
MAX_DEPTH = 16  # nesting of a control document; the deepest one Flumph sends has 3 levels


class ContractError(ValueError):
    """A topic or payload that does not follow the contract; the message names the problem."""


class PatchError(ContractError):
    """A settings patch that cannot be merged; ``fields`` names the keys at fault (none for a
    payload that is not a JSON object at all)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ContractError(
            f"device id {device_id!r} must match [a-z0-9][a-z0-9-]{{0,63}} "
            "(lower-case letters, digits and '-')"
        )
    return device_id


@dataclass(frozen=True)
class ParsedTopic:
    device_id: str
    kind: TopicKind
    command: str | None = None


class Topics:
    """Builds and parses topic names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not PREFIX_RE.fullmatch(prefix):
            raise ContractError(f"topic prefix {prefix!r} must be letters, digits, '-', '_', '/'")
        self.prefix = prefix

    def _t(self, device_id: str, kind: str) -> str:
        return f"{self.prefix}/{check_device_id(device_id)}/{kind}"

    def status(self, device_id: str) -> str:
        return self._t(device_id, "status")

    def desired(self, device_id: str) -> str:
        return self._t(device_id, "desired")

    def set(self, device_id: str) -> str:
        return self._t(device_id, "set")

    def set_accepted(self, device_id: str) -> str:
        return self._t(device_id, "set/accepted")

    def set_rejected(self, device_id: str) -> str:
        return self._t(device_id, "set/rejected")

    def reported(self, device_id: str) -> str:
        return self._t(device_id, "reported")

    def cmd(self, device_id: str, name: str) -> str:
        if name not in COMMANDS:
            raise ContractError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
        return self._t(device_id, f"cmd/{name}")

    def cmd_all(self, device_id: str) -> str:
        """Subscription filter for every command of one device."""
        return self._t(device_id, "cmd/+")

    def ack(self, device_id: str) -> str:
        return self._t(device_id, "ack")

    def telemetry(self, device_id: str) -> str:
        return self._t(device_id, "telemetry")

    def snapshot(self, device_id: str) -> str:
        return self._t(device_id, "snapshot")

    def demand(self, device_id: str) -> str:
        return self._t(device_id, "demand")

    def every(self, kind: TopicKind) -> str:
        """Subscription filter for one kind across all devices (``cmd`` covers every command)."""
        if kind == "cmd":
            return f"{self.prefix}/+/cmd/+"
        return f"{self.prefix}/+/{kind}"

    def parse(self, topic: str) -> ParsedTopic:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise ContractError(f"topic {topic!r} is not under prefix {self.prefix!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) < 2:
            raise ContractError(f"topic {topic!r} names no device and kind")
        device_id = check_device_id(parts[0])
        kind = parts[1]
        if kind == "cmd" and len(parts) == 3:
            if parts[2] not in COMMANDS:
                raise ContractError(f"unknown command {parts[2]!r} in topic {topic!r}")
            return ParsedTopic(device_id, "cmd", parts[2])
        if kind == "set" and len(parts) == 3 and f"set/{parts[2]}" in KINDS:
            answer: TopicKind = "set/accepted" if parts[2] == "accepted" else "set/rejected"
            return ParsedTopic(device_id, answer)
        if len(parts) != 2 or kind not in KINDS or kind == "cmd":
            raise ContractError(f"topic {topic!r} is not one of the contract's topics")
        return ParsedTopic(device_id, kind)


# --- messages ---------------------------------------------------------------------------------


# The contract's version, sent once per connection in the device's birth (``Status.contract``).
# Messages between components are tolerant readers: a newer peer's unknown fields are ignored, so
# a fleet upgrades one device at a time. A change that an older reader would misread (a field
# whose meaning changes) bumps this number instead of reusing the field.
CONTRACT_VERSION = 1


class Message(BaseModel):
    """A message one component sends another (status, reported, telemetry, ack, demand)."""

    model_config = ConfigDict(extra="ignore")

    def payload(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


class Request(Message):
    """What people and their tools send (commands): strict, an unknown key is refused by name."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=Message)


def _json_object(payload: bytes | str, what: str) -> dict[str, Any]:
    try:
        return loads_object(payload, what, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except JsonLimitError as e:
        raise ContractError(str(e)) from None


def decode(model: type[M], payload: bytes | str) -> M:
    what = model.__name__.lower()
    doc = _json_object(payload, what)
    try:
        # Strict: a wire value is taken as the type it is (no true -> 1, no "yes" -> True).
        return model.model_validate(doc, strict=True)
    except ValidationError as e:
        raise ContractError(format_validation_error(e, what)) from None


def now() -> float:
    return round(time.time(), 3)


class Status(Message):
    state: Literal["online", "offline"]
    ts: float = Field(default_factory=now)
    agent: str | None = None  # agent version, in the birth message
    contract: int | None = None  # CONTRACT_VERSION of the sender, in the birth message
    usage: Usage | None = None  # in the birth: the period's usage, so a backend knows it at once
    # True in the status `flumph ctl add` / the dashboard write for a device that has not come
    # online yet (see flumph.lifecycle: a retained status is what makes a device known).
    provisioned: bool = False


SETTINGS_KEYS = frozenset(StreamSettings.model_fields)


def validate_patch(patch: dict[str, Any], what: str = "patch") -> dict[str, Any]:
    """Check a partial settings document: known keys, each value valid on its own.

    Raises :class:`PatchError` whose ``fields`` are the keys at fault."""
    unknown = sorted(set(patch) - SETTINGS_KEYS)
    if unknown:
        raise PatchError(
            f"{what}: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(SETTINGS_KEYS))})",
            tuple(unknown),
        )
    try:
        # Validate against the defaults so every given value is checked with the real bounds.
        merged = StreamSettings().model_dump() | patch
        StreamSettings.model_validate(merged, strict=True)
    except ValidationError as e:
        fields = tuple(sorted({str(err["loc"][0]) for err in e.errors() if err["loc"]}))
        raise PatchError(format_validation_error(e, what), fields) from None
    return patch


def decode_patch(payload: bytes | str) -> dict[str, Any]:
    doc = _json_object(payload, "patch")
    doc.pop("v", None)  # a client echoing a version in a patch is harmless
    return validate_patch(doc)


CLIENT_TOKEN = "client_token"
CLIENT_TOKEN_MAX = 64


@dataclass(frozen=True)
class SetRequest:
    """One message on ``<p>/<dev>/set``: the patch, and the token its answer echoes."""

    patch: dict[str, Any]
    client_token: str | None = None


def _client_token(doc: dict[str, Any]) -> str | None:
    token = doc.get(CLIENT_TOKEN)
    if token is None:
        return None
    if not isinstance(token, str) or not 1 <= len(token) <= CLIENT_TOKEN_MAX:
        raise PatchError(
            f"patch: {CLIENT_TOKEN} must be a string of 1-{CLIENT_TOKEN_MAX} characters",
            (CLIENT_TOKEN,),
        )
    return token


def decode_set(payload: bytes | str) -> SetRequest:
    """A ``set`` message: a patch plus an optional ``client_token``; raises PatchError."""
    try:
        doc = _json_object(payload, "patch")
    except ContractError as e:
        raise PatchError(str(e)) from None
    token = _client_token(doc)
    doc.pop(CLIENT_TOKEN, None)
    doc.pop("v", None)  # a client echoing a version in a patch is harmless
    return SetRequest(validate_patch(doc), token)


def client_token_of(payload: bytes | str | None) -> str | None:
    """The ``client_token`` of a set message, if it has a valid one, even when the rest is
    refused (so that its rejection can be matched); never raises."""
    if not payload:
        return None
    try:
        return _client_token(_json_object(payload, "patch"))
    except ContractError:
        return None


class Desired(Message):
    """The settings a device should have: a version and a partial settings document."""

    model_config = ConfigDict(extra="allow")
    v: int = Field(ge=0)

    def settings_patch(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def apply_to(self, base: StreamSettings) -> StreamSettings:
        """The device's settings under this document; raises ContractError naming the field."""
        patch = validate_patch(self.settings_patch(), "desired")
        try:
            return StreamSettings.model_validate(base.model_dump() | patch, strict=True)
        except ValidationError as e:
            raise ContractError(format_validation_error(e, "desired")) from None


def decode_desired(payload: bytes | str) -> Desired:
    d = decode(Desired, payload)
    validate_patch(d.settings_patch(), "desired")
    return d


def merge_desired(current: Desired | None, patch: dict[str, Any]) -> Desired:
    """Shadow merge: the patch over the current document, version + 1."""
    validate_patch(patch)
    base = current.settings_patch() if current is not None else {}
    version = current.v + 1 if current is not None else 1
    return Desired.model_validate({**base, **patch, "v": version})


class SourceReport(Message):
    """A coded source being forwarded (``codec = "copy"``): what it sends, measured over 10 s.
    These are the values the encoder settings would otherwise set."""

    name: str  # the source spec, password redacted
    codec: str
    width: int
    height: int
    fps: float | None = None
    bitrate_kbps: float | None = None
    keyint_s: float | None = None


class Ladder(Message):
    """The picture the device streams instead of the settings' own when the bits per pixel are
    too few for the rate (``reported.ladder``; None at the settings' picture)."""

    width: int
    height: int
    fps: int
    reason: str


class Rate(Message):
    """``telemetry.rate``: the rate the encoder aims at now (``target_kbps``: the lowest of the
    setting, the uplink's capacity when ``adapt_to_link``, and a budget pacing cap), what it
    sent over the last seconds, and why the target is where it is (``"setting"`` when nothing
    holds it below ``bitrate_kbps``)."""

    target_kbps: int
    current_kbps: int
    reason: str


class Reported(Message):
    applied_v: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    encoder: str | None = None  # an encoder's name, or "copy" when the source is forwarded
    encoder_reason: str | None = None
    streaming: bool = False
    # idle | streaming | restarting (a pipeline thread died or the source dropped; see error)
    state: Literal["idle", "streaming", "restarting"] | None = None
    source: SourceReport | None = None
    notice: str | None = None  # what the last applied desired could not do (e.g. bitrate in copy)
    error: str | None = None
    budget: Budget | None = None
    ladder: Ladder | None = None
    ts: float = Field(default_factory=now)


class Command(Request):
    id: str = Field(min_length=1, max_length=64)


MAX_GRANT_MB = 1_000_000.0


class Grant(Command):
    """``cmd/grant``: a one-shot allowance of ``mb`` megabytes (10^6 B) for this budget period."""

    mb: float = Field(gt=0, le=MAX_GRANT_MB, strict=True)


COMMAND_MODELS: dict[str, type[Command]] = {"grant": Grant}


def decode_command(name: str, payload: bytes | str) -> Command:
    """The command ``cmd/<name>`` carries: :class:`Grant` for grant, else a plain Command."""
    return decode(COMMAND_MODELS.get(name, Command), payload)


class Ack(Message):
    id: str
    ok: bool
    error: str | None = None
    ts: float = Field(default_factory=now)


class LinkStats(Message):
    rtt_ms: float | None = None
    loss_pct: float | None = None
    retransmits: int | None = None


class Usage(Message):
    """Bytes the device used this budget period, both directions, at IP level.

    ``month`` is the period's first day as "YYYY-MM" (UTC); ``period_start`` is its exact start
    (epoch seconds: 00:00 UTC of ``budget_reset_day``). ``by_kind`` splits the total by traffic:
    ``"srt"`` (video link), ``"mqtt"`` (control, snapshots excluded) and ``"snapshot"`` (the
    MQTT bytes of snapshot publishes). ``budget_bytes`` is the period's limit: the budget plus
    allowances granted this period (None: no budget).
    """

    month: str  # "YYYY-MM"
    bytes_sent: int = 0
    bytes_received: int = 0
    budget_bytes: int | None = None
    period_start: float | None = None
    by_kind: dict[str, int] = Field(default_factory=dict)


BudgetState = Literal["ok", "warn", "pacing", "exhausted"]


class Budget(Message):
    """The device's data budget as it enforces it (``reported.budget``, ``telemetry.budget``).

    ``state``: ok; warn at 80 % of budget + allowance; pacing when ``budget_pacing`` holds the
    bitrate below the setting (``cap_kbps``); exhausted at 100 %: the device does not stream
    until ``resets_at`` or a grant. ``message`` says it in words (why a start was refused, or
    that a copied stream cannot be paced).
    """

    state: BudgetState
    used_bytes: int = Field(ge=0)
    budget_bytes: int | None = Field(default=None, ge=0)
    allowance_bytes: int = Field(default=0, ge=0)  # one-shot grants this period
    period_start: float
    resets_at: float
    cap_kbps: int | None = None  # pacing cap, None = not capped
    message: str | None = None


class Telemetry(Message):
    ts: float = Field(default_factory=now)
    streaming: bool
    fps: float | None = None
    bitrate_kbps: float | None = None
    encoder: str | None = None
    width: int | None = None
    height: int | None = None
    frames_dropped: int | None = None
    srt: LinkStats | None = None
    usage: Usage | None = None
    budget: Budget | None = None
    rate: Rate | None = None
    heartbeat_s: float | None = None  # when idle: the interval until the next heartbeat


class SetAccepted(Message):
    """``<p>/<dev>/set/accepted``: the patch was merged into ``desired`` as version ``v``.

    ``patch`` is what was merged (the ``always_on`` rules may add to what was sent)."""

    model_config = ConfigDict(extra="ignore")  # read by ops tools: a newer backend may add
    v: int = Field(ge=0)
    patch: dict[str, Any] = Field(default_factory=dict)
    client_token: str | None = None
    ts: float = Field(default_factory=now)


class SetRejected(Message):
    """``<p>/<dev>/set/rejected``: the patch was refused; nothing changed. ``error`` names the
    field in words, ``fields`` lists the keys at fault (empty when the payload was no object)."""

    model_config = ConfigDict(extra="ignore")
    error: str
    fields: list[str] = Field(default_factory=list)
    client_token: str | None = None
    ts: float = Field(default_factory=now)


class Demand(Message):
    viewers: int = Field(ge=0)
    ts: float = Field(default_factory=now)
