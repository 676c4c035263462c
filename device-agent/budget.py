"""The data budget as arithmetic: billing periods, state, the pacing controller, send costs.

Pure functions of numbers and a time (epoch seconds, UTC): no clock is read here, no file, no
lock, so every rule is tested by feeding it numbers (bench/budget_pacing.py drives a whole month
through them). :mod:`.budgetguard` applies them to the live counters.

Periods: a period starts at 00:00 UTC on ``budget_reset_day`` (1-28, so every month has it) and
ends where the next one starts. UTC, not local time: a carrier's cycle does not move with the
device's time zone or daylight saving, and the device, the dashboard and ``flumph ctl`` then all
name the same instant.

States, the most urgent first: ``exhausted`` (the period's limit, budget + allowance, is used, or
the next frame would pass it), ``warn`` (at or above 80 %), ``pacing`` (the pacing cap holds the
bitrate below the setting), ``ok``.

Pacing: the straight line from 0 at the period's start to the limit at its end is the spend
that lands exactly on the budget. The cap is the wire rate that spends what is left evenly over
the time left (``remaining / time left``), plus the distance to that line spread over three hours
(``(line - used) / PACING_HORIZON_S``): behind the line (time spent idle) the cap rises and the
camera catches up while it streams; ahead of it the cap falls. It is converted from wire bytes
to video kbit/s and kept between the floor and the setting; at or above the setting nothing is
capped. So the cap applies before usage runs ahead of the line, not after. Both terms are
continuous in the counters, so the cap moves smoothly (the watch moves the encoder only on 10 %
steps), and it has no memory: a restart, a clock step or a grant cannot wind it up. Why three
hours (bench/budget_pacing.py, January simulated): a camera streaming all the time settles on the
line and ends at 1.000 of its budget with ~2 encoder moves a day (1 h: ~4.5); one watched two
hours each evening ends at 0.976 (1 h: 0.992, with twice the moves); 12 hours a day, 0.995.

The floor (``pacing_floor_kbps``): a quarter of the bitrate setting, but never below 40 kbit/s
(and never above the setting). Why: pacing is there to keep a usable picture to the end of the
period instead of going dark; below a quarter of the rate the operator chose the picture is no
longer what they chose it for, and below ~40 kbit/s the SRT link's own overhead dominates (at 15
fps each burst costs 120 B of ACK/ACKACK plus 44 B per packet, ~20 kbit/s on the wire, measured in
MEASUREMENTS.md and bench/agent_wire.py), so each further kbit/s of video saves less than a
kbit/s of wire. When even the floor would run out before the period ends, the stop at 100 % is
what protects the bill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from flumph.control import BudgetState
from flumph.srt import ACK_WIRE_BYTES, ACKACK_WIRE_BYTES, DATA_HEADER_BYTES

MB = 1_000_000
WARN_FRACTION = 0.8
FLOOR_FRACTION = 0.25
FLOOR_MIN_KBPS = 40
# Wire bytes (both directions, IP level) per byte of video while streaming: 1.11-1.17 measured at
# 250 kbit/s, 15-30 fps (bench/agent_wire.py). Only converts the cap; the loop corrects the rest.
WIRE_PER_VIDEO = 1.15
SRT_PAYLOAD_SIZE = 1316  # the agent's live-mode payload size (destination.PAYLOAD_SIZE)
PACING_HORIZON_S = 3 * 3600.0  # the distance to the straight line is made up over this long


# --- periods ----------------------------------------------------------------------------------


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _reset_in(year: int, month: int, reset_day: int) -> datetime:
    return datetime(year, month, reset_day, tzinfo=UTC)


def _check_day(reset_day: int) -> None:
    if not 1 <= reset_day <= 28:
        raise ValueError(f"budget_reset_day must be 1-28, got {reset_day}")


def period_start(now: float, reset_day: int) -> float:
    """Start of the period containing ``now``: the latest 00:00 UTC of ``reset_day`` ≤ now."""
    _check_day(reset_day)
    t = _utc(now)
    start = _reset_in(t.year, t.month, reset_day)
    if t < start:
        year, month = (t.year, t.month - 1) if t.month > 1 else (t.year - 1, 12)
        start = _reset_in(year, month, reset_day)
    return start.timestamp()


def period_end(start: float, reset_day: int) -> float:
    """When the period that started at ``start`` ends (the next reset)."""
    _check_day(reset_day)
    t = _utc(start)
    year, month = (t.year, t.month + 1) if t.month < 12 else (t.year + 1, 1)
    return _reset_in(year, month, reset_day).timestamp()


def period_label(start: float) -> str:
    """ "YYYY-MM" of the period's first day (UTC): the ``month`` the contract's Usage carries."""
    return _utc(start).strftime("%Y-%m")


def when(timestamp: float) -> str:
    """A reset time in words, e.g. "2027-02-01 00:00 UTC"."""
    return _utc(timestamp).strftime("%Y-%m-%d %H:%M UTC")


# --- limits and state -------------------------------------------------------------------------


def budget_bytes(data_budget_mb: float | None) -> int | None:
    return None if data_budget_mb is None else round(data_budget_mb * MB)


def limit_bytes(budget: int | None, allowance: int) -> int | None:
    """What the period may use: the budget plus one-shot allowances (None: no budget)."""
    return None if budget is None else budget + allowance


def state_of(used: int, limit: int | None, *, latched: bool, paced: bool) -> BudgetState:
    if limit is None:
        return "ok"
    if latched or used >= limit:
        return "exhausted"
    if used >= WARN_FRACTION * limit:
        return "warn"
    return "pacing" if paced else "ok"


def fits(used: int, extra: int, limit: int | None) -> bool:
    """May ``extra`` more bytes go out? (The send path's test, per frame or burst.)"""
    return limit is None or used + extra <= limit


def srt_send_cost(payload_bytes: int, payload_size: int = SRT_PAYLOAD_SIZE) -> int:
    """IP-level bytes one SRT send of ``payload_bytes`` costs, both directions: the payload, 44 B
    of IPv4/UDP/SRT headers per packet, and the receiver's ACK (72 B) with our ACKACK (48 B) that
    each burst draws (MEASUREMENTS.md)."""
    if payload_bytes <= 0:
        return 0
    packets = -(-payload_bytes // payload_size)
    return payload_bytes + packets * DATA_HEADER_BYTES + ACK_WIRE_BYTES + ACKACK_WIRE_BYTES


# --- pacing -----------------------------------------------------------------------------------


def pacing_floor_kbps(setting_kbps: int) -> int:
    """The lowest cap pacing sets (see the module's docstring for why)."""
    return min(setting_kbps, max(FLOOR_MIN_KBPS, math.ceil(setting_kbps * FLOOR_FRACTION)))


def straight_line(limit: int, start: float, end: float, now: float) -> float:
    """Bytes a steady spend would have used by ``now`` to land on ``limit`` at ``end``."""
    if end <= start:
        return float(limit)
    elapsed = min(max(now - start, 0.0), end - start)
    return limit * elapsed / (end - start)


def pacing_cap_kbps(
    *,
    used: int,
    limit: int,
    start: float,
    end: float,
    now: float,
    setting_kbps: int,
    wire_per_video: float = WIRE_PER_VIDEO,
    horizon_s: float | None = None,
) -> int | None:
    """The bitrate cap (video kbit/s) pacing sets now, or None when it sets none.

    ``remaining / time left + (straight line - used) / horizon`` in wire bytes per second,
    as video kbit/s, between the floor and ``setting_kbps`` (None at or above the setting).
    """
    left_s = end - now
    remaining = limit - used
    floor = pacing_floor_kbps(setting_kbps)
    if remaining <= 0 or left_s <= 0:
        return floor
    behind = straight_line(limit, start, end, now) - used
    wire_rate = remaining / left_s + behind / (horizon_s or PACING_HORIZON_S)
    kbps = wire_rate * 8 / 1000 / wire_per_video
    if kbps >= setting_kbps:
        return None
    return max(floor, int(kbps))


@dataclass(frozen=True)
class Assessment:
    """The budget at one instant, as the guard reports it."""

    state: BudgetState
    used: int
    limit: int | None
    cap_kbps: int | None
    period_start: float
    period_end: float


def assess(
    *,
    used: int,
    budget: int | None,
    allowance: int,
    reset_day: int,
    now: float,
    pacing: bool,
    setting_kbps: int,
    latched: bool = False,
) -> Assessment:
    """State and pacing cap from the counters; ``latched``: the send path found no room."""
    start = period_start(now, reset_day)
    end = period_end(start, reset_day)
    limit = limit_bytes(budget, allowance)
    cap = None
    if pacing and limit is not None:
        cap = pacing_cap_kbps(
            used=used, limit=limit, start=start, end=end, now=now, setting_kbps=setting_kbps
        )
    state = state_of(used, limit, latched=latched, paced=cap is not None)
    return Assessment(state, used, limit, cap, start, end)


TCP_IP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps option 12 (what Linux sends)
TLS_RECORD_OVERHEAD = 29  # TLS 1.2 AES-GCM: 5 header + 8 explicit nonce + 16 tag (1.3: 22)
TLS_RECORD_MAX = 16384
TCP_MSS = 1448  # Ethernet MTU 1500 - 52


def mqtt_publish_cost(
    topic_bytes: int, payload_bytes: int, *, qos: int = 1, tls: bool = False, mss: int = TCP_MSS
) -> int:
    """IP-level bytes, both directions, of one MQTT 3.1.1 PUBLISH over TCP: the packet in MSS-sized
    segments, the peer's delayed ACK for every second segment, and (QoS 1) its PUBACK."""
    remaining = 2 + topic_bytes + (2 if qos else 0) + payload_bytes
    length_bytes = 1 + sum(remaining >= 128**i for i in (1, 2, 3))
    packet = 1 + length_bytes + remaining
    if tls:
        packet += -(-packet // TLS_RECORD_MAX) * TLS_RECORD_OVERHEAD
    segments = -(-packet // mss)
    cost = packet + segments * TCP_IP_HEADER_BYTES + -(-segments // 2) * TCP_IP_HEADER_BYTES
    if qos:
        cost += 4 + (TLS_RECORD_OVERHEAD if tls else 0) + TCP_IP_HEADER_BYTES
    return cost
