"""Budget pacing over a simulated month: usage at month end ÷ budget, with and without pacing, and
the bitrate cap over time.

The device's own budget code runs unchanged (``UsageStore`` with its file, ``BudgetGuard``,
``BudgetWatch.step``: stop at the limit, resume, the encoder following the pacing cap with its
10 % / 10 s rule) on an injected clock; only the camera and the link are simulated: a demand
pattern (when someone watches, or always on), an encoder that sends exactly the rate it is
opened at, and the wire cost of that rate as measured (SRT: 44 B of headers per 1316 B packet,
one ACK + ACKACK pair of 120 B per frame at 15 fps; MQTT: idle 1.87 KB/h, telemetry ~250 B every
5 s while streaming). The peer is the same device with pacing off: it streams at its setting
until the budget is used up and then goes dark until the reset.

    python -m bench.budget_pacing                  # 4 scenarios × pacing off/on, ~1 min
    python -m bench.budget_pacing --speed 1000     # in real time at 1000x (44.6 min per run)
    python -m bench.budget_pacing --json bench/out/budget_pacing.json
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.report import format_table, machine_note, write_json
from flumph.agent import budget as rules
from flumph.agent.budgetguard import BudgetGuard, BudgetWatch
from flumph.agent.usage import UsageStore
from flumph.settings import StreamSettings

MONTH_START = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
MONTH_END = datetime(2027, 2, 1, tzinfo=UTC).timestamp()
FPS = 15
MQTT_IDLE_BYTES_PER_S = 1870 / 3600
TELEMETRY_BYTES_PER_S = 250 / 5
GB = 1e9


def wire_bytes_per_s(video_kbps: float) -> float:
    """IP-level bytes per second of an SRT stream at ``video_kbps`` (both directions)."""
    frame = video_kbps * 1000 / 8 / FPS
    packets = math.ceil(frame / rules.SRT_PAYLOAD_SIZE)
    per_frame = frame + packets * 44 + 120
    return per_frame * FPS + TELEMETRY_BYTES_PER_S


def always(_t: float) -> bool:
    return True


def daily(start_h: float, hours: float) -> Callable[[float], bool]:
    def wanted(t: float) -> bool:
        hour = (t % 86400) / 3600
        return (hour - start_h) % 24 < hours

    return wanted


@dataclass(frozen=True)
class Scenario:
    name: str
    demand: Callable[[float], bool]
    setting_kbps: int
    budget_gb: float


SCENARIOS = [
    Scenario("always on, budget ~55 % of demand", always, 500, 100),
    Scenario("12 h a day, budget ~55 % of demand", daily(8, 12), 500, 50),
    Scenario("2 h each evening, budget ~60 %", daily(19, 2), 1000, 20),
    Scenario("always on, budget under the floor", always, 500, 30),
]


class SimCamera:
    """The pipeline as the watch sees it (flumph.agent.budgetguard.BudgetTarget)."""

    def __init__(self, guard: BudgetGuard) -> None:
        self.guard = guard
        self.running = False
        self.blocked = False
        self.kbps: int | None = None
        self.retargets = 0

    @property
    def streaming(self) -> bool:
        return self.running

    def start(self) -> None:
        if self.guard.refusal() is not None:
            self.blocked = True
            return
        self.blocked = False
        self.running = True
        self.kbps = self.guard.encoder_kbps(self.guard.settings)

    def budget_stop(self, why: str) -> None:
        self.running, self.blocked = False, True

    def budget_resume(self) -> bool:
        return False  # the simulation starts the camera when demand asks (see run())

    def budget_retarget(self, kbps: int) -> None:
        self.kbps = kbps
        self.retargets += 1

    def encoder_kbps_now(self) -> int | None:
        return self.kbps if self.running else None


@dataclass
class Result:
    scenario: str
    pacing: bool
    budget_bytes: int
    used_bytes: int = 0
    exhausted_day: float | None = None
    wanted_hours: float = 0.0
    streamed_hours: float = 0.0
    video_bytes: float = 0.0
    min_cap_kbps: int | None = None
    retargets: int = 0
    wall_s: float = 0.0
    cap_by_day: list[tuple[float, int | None, float]] = field(default_factory=list)


def run(s: Scenario, pacing: bool, step_s: float, speed: float, state: Path) -> Result:
    now = [MONTH_START]
    settings = StreamSettings(
        bitrate_kbps=s.setting_kbps, data_budget_mb=s.budget_gb * 1000, budget_pacing=pacing
    )
    store = UsageStore(state, clock=lambda: now[0])
    guard = BudgetGuard(store, settings, clock=lambda: now[0])
    camera = SimCamera(guard)
    watch = BudgetWatch(guard, camera, monotonic=lambda: now[0])
    result = Result(s.name, pacing, rules.budget_bytes(settings.data_budget_mb) or 0)
    wall0 = time.monotonic()
    next_sample = MONTH_START
    while now[0] < MONTH_END:
        t = now[0]
        wanted = s.demand(t - MONTH_START)
        if wanted and not camera.running:
            camera.start()
        elif not wanted and camera.running:
            camera.running, camera.kbps = False, None
        result.wanted_hours += step_s / 3600 if wanted else 0
        store.add("mqtt", wire_sent=round(MQTT_IDLE_BYTES_PER_S * step_s))
        if camera.running and camera.kbps is not None:
            per_s = wire_bytes_per_s(camera.kbps)
            cost = round(per_s * step_s)
            sent_s = step_s
            if not guard.admit(cost):
                # Frame by frame, as the send path does: what fits goes, then the latch.
                room = max(0, (result.budget_bytes + store.current().allowance_bytes)
                           - guard.used())  # fmt: skip
                sent_s = room / per_s
                cost = round(per_s * sent_s)
                if result.exhausted_day is None:
                    result.exhausted_day = (t + sent_s - MONTH_START) / 86400
            store.add("srt", wire_sent=cost)
            result.streamed_hours += sent_s / 3600
            result.video_bytes += camera.kbps * 1000 / 8 * sent_s
        watch.step()
        a = guard.assess()
        if a.cap_kbps is not None:
            result.min_cap_kbps = min(result.min_cap_kbps or a.cap_kbps, a.cap_kbps)
        if t >= next_sample:
            day = (t - MONTH_START) / 86400
            result.cap_by_day.append((round(day, 2), a.cap_kbps, a.used / result.budget_bytes))
            next_sample += 86400 / 4
        now[0] = t + step_s
        if speed:
            lag = (now[0] - MONTH_START) / speed - (time.monotonic() - wall0)
            if lag > 0:
                time.sleep(lag)
    now[0] = MONTH_END - 1e-3  # the last instant of January: the month's final count
    result.used_bytes = store.current().wire_bytes_total
    result.retargets = camera.retargets
    result.wall_s = time.monotonic() - wall0
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--step-s", type=float, default=60.0, help="simulated seconds per step")
    p.add_argument("--speed", type=float, default=0.0,
                   help="simulated s per wall s (1000: 1000x real time; 0: flat out)")  # fmt: skip
    p.add_argument("--horizon-s", type=float, default=rules.PACING_HORIZON_S,
                   help="experiment: the pacing horizon (budget.PACING_HORIZON_S)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    rules.PACING_HORIZON_S = args.horizon_s
    logging.getLogger("flumph.agent").setLevel(logging.ERROR)

    results: list[Result] = []
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    for s in SCENARIOS:
        for pacing in (False, True):
            with tempfile.TemporaryDirectory(prefix="flumph-pacing-", dir=base) as state:
                r = run(s, pacing, args.step_s, args.speed, Path(state))
            results.append(r)
            share = r.used_bytes / r.budget_bytes
            print(f"  {s.name}, pacing {'on' if pacing else 'off'}: "
                  f"{share:.3f} of the budget ({r.wall_s:.1f} s)")  # fmt: skip

    print()
    print(machine_note())
    rows = []
    for r in results:
        ratio = r.used_bytes / r.budget_bytes
        target = ("PASS" if 0.95 <= round(ratio, 3) <= 1.0 else "MISS") if r.pacing else "-"
        dark = r.wanted_hours - r.streamed_hours
        rows.append([
            r.scenario, "on" if r.pacing else "off (peer)", round(r.budget_bytes / GB, 1),
            round(ratio, 3), target,
            "-" if r.exhausted_day is None else round(r.exhausted_day, 1),
            round(dark, 1), round(r.streamed_hours, 1),
            round(r.video_bytes * 8 / 1000 / max(r.streamed_hours * 3600, 1)),
            r.min_cap_kbps if r.min_cap_kbps is not None else "-", r.retargets,
        ])  # fmt: skip
    print(format_table(
        f"Pacing over January 2027 (31 days, {args.step_s:.0f} s steps; GB = 10^9 B)",
        ["scenario", "pacing", "budget GB", "used/budget", "0.95-1.00", "dark from day",
         "dark h", "streamed h", "mean kbit/s", "min cap", "encoder moves"],
        rows,
    ))  # fmt: skip

    days = sorted({round(d) for d in range(0, 31, 3)} | {30})
    cap_rows = []
    for r in results:
        if not r.pacing:
            continue
        by_day = {round(d): (cap, used) for d, cap, used in r.cap_by_day if d == round(d)}
        cells = []
        for d in days:
            cap, used = by_day.get(d, (None, 0.0))
            cells.append(f"{cap if cap is not None else '-'} ({used:.2f})")
        cap_rows.append([r.scenario, *cells])
    print()
    print(format_table(
        "Pacing cap at 00:00 UTC of the day, kbit/s (share of the budget used); - = no cap",
        ["scenario", *[f"day {d + 1}" for d in days]],
        cap_rows,
    ))  # fmt: skip
    write_json(args.json, {"machine": machine_note(), "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
