"""The messages between components, tolerant readers (a newer peer's unknown fields are
ignored): status, reported, telemetry, ack, demand and the answers to ``set``; and the commands
people send, strict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from flumph.control.wire import Message, Request, decode, now


class Status(Message):
    state: Literal["online", "offline"]
    ts: float = Field(default_factory=now)
    agent: str | None = None  # agent version, in the birth message
    contract: int | None = None  # CONTRACT_VERSION of the sender, in the birth message
    usage: Usage | None = None  # in the birth: the period's usage, so a backend knows it at once
    # True in the status `flumph ctl add` / the dashboard write for a device that has not come
    # online yet (see flumph.lifecycle: a retained status is what makes a device known).
    provisioned: bool = False


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
