"""The fleet service's Prometheus metrics: the broker connection, the answers to patches, and
each device's presence, streaming, versions, link and data use.

Read from the fleet's state when scraped (see :mod:`flumph.service.metrics`). A device is a label
value only once it is known: it has a retained ``status`` (its birth or will, or a provisioning
record). Anybody with an ops account may publish under any id, and the fleet tracks what it sees,
but an id seen only on ``set`` or ``desired`` counts in the totals, not as a series. At most
``max_series`` devices are labelled (in id order); the rest count in
``flumph_fleet_devices_unlabelled``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from flumph.control import Budget, BudgetState

from .api import EventFeed
from .device_state import DeviceState
from .fleet import Fleet

MAX_SERIES = 10000  # the fleet tracks 10000 devices by default
# Presence as a bounded label value ("offline (silent)" has a space).
PRESENCE = {"online": "online", "offline": "offline", "offline (silent)": "silent",
            "unknown": "unknown"}  # fmt: skip


BUDGET_STATES: tuple[BudgetState, ...] = get_args(BudgetState)


def _budget(dev: DeviceState) -> Budget | None:
    """The device's data budget as it last reported it (telemetry, or reported if newer)."""
    rep, tel = dev.reported, dev.telemetry
    from_tel = tel.budget if tel is not None else None
    if rep is None or rep.budget is None:
        return from_tel
    if from_tel is None or (dev.reported_at or 0) >= (dev.telemetry_at or 0):
        return rep.budget
    return from_tel


class FleetMetrics:
    def __init__(self, fleet: Fleet, feed: EventFeed | None = None, max_series: int = MAX_SERIES):
        self.fleet = fleet
        self.feed = feed
        self.max_series = max_series

    async def refresh(self) -> None:
        return None  # everything is in memory on the loop

    def collect(self) -> Iterable[Metric]:
        fleet = self.fleet
        yield GaugeMetricFamily(
            "flumph_fleet_mqtt_connected", "1 while connected to the broker",
            value=1 if fleet.connected else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "flumph_fleet_ready", "1 once the retained state is known after (re)connecting",
            value=1 if fleet.ready.is_set() else 0,
        )  # fmt: skip
        answers = CounterMetricFamily(
            "flumph_fleet_set_answers", "Patches answered, on set/accepted or set/rejected",
            labels=["answer"],
        )  # fmt: skip
        answers.add_metric(["accepted"], fleet.answers.accepted_total)
        answers.add_metric(["rejected"], fleet.answers.rejected_total)
        yield answers
        yield CounterMetricFamily(
            "flumph_fleet_stray_messages", "Messages under the prefix that are off the contract",
            value=fleet.stray_messages,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flumph_fleet_dropped_device_messages",
            "Messages dropped because the fleet already tracks max_devices devices",
            value=fleet.dropped_devices,
        )
        yield GaugeMetricFamily(
            "flumph_fleet_snapshot_bytes", "Bytes of stills held", value=fleet.snapshot_bytes
        )
        if self.feed is not None:
            yield GaugeMetricFamily(
                "flumph_fleet_event_clients",
                "Live-feed (SSE) clients",
                value=len(self.feed.clients),
            )
        devices = sorted(fleet.devices.values(), key=lambda d: d.device_id)
        by_presence = dict.fromkeys(PRESENCE.values(), 0)
        for dev in devices:
            by_presence[PRESENCE[fleet.presence(dev)]] += 1
        g = GaugeMetricFamily("flumph_fleet_devices", "Devices by presence", labels=["presence"])
        for presence, n in by_presence.items():
            g.add_metric([presence], n)
        yield g
        known = [d for d in devices if d.status is not None]
        labelled = known[: self.max_series]
        yield GaugeMetricFamily(
            "flumph_fleet_devices_unlabelled",
            f"Known devices beyond the {self.max_series} given their own series",
            value=len(known) - len(labelled),
        )
        yield from self._per_device(labelled)

    def _per_device(self, devices: list[DeviceState]) -> Iterable[Metric]:
        fleet = self.fleet
        L = ["device"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"flumph_device_{name}", doc, labels=L)

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"flumph_device_{name}", doc, labels=L)

        online = gauge("online", "1 while the device is online (birth, and heard from lately)")
        streaming = gauge("streaming", "1 while the device streams")
        seen = gauge("last_seen_timestamp_seconds", "When anything last came from the device")
        desired_v = gauge("desired_version", "Version of the device's desired settings")
        applied_v = gauge("applied_version", "Version the device reports applied")
        error = gauge("error", "1 while the device reports an error")
        fps = gauge("frames_per_second", "Frame rate the device reports sending")
        rate = gauge("bytes_per_second", "Video bitrate the device reports sending, bytes/s")
        rtt = gauge("srt_rtt_seconds", "SRT round-trip time the device measures")
        loss = gauge("srt_loss_ratio", "SRT packet loss the device measures (0-1)")
        retrans = counter("srt_retransmitted_packets", "SRT packets the device retransmitted")
        used = gauge("data_used_bytes", "Bytes the device sent and received this period")
        budget_bytes = gauge(
            "data_budget_bytes", "The device's data budget for this period, grants included"
        )
        budget_state = GaugeMetricFamily(
            "flumph_device_budget_state", "1 for the device's budget state, 0 for the others",
            labels=["device", "state"],
        )  # fmt: skip
        resets = gauge("budget_reset_timestamp_seconds", "When the device's budget period ends")
        bad = counter("bad_messages", "Malformed messages received from or about the device")
        for dev in devices:
            d = [dev.device_id]
            online.add_metric(d, 1 if fleet.presence(dev) == "online" else 0)
            now_streaming = dev.streaming_now()
            if now_streaming is not None:
                streaming.add_metric(d, 1 if now_streaming else 0)
            if dev.last_seen is not None:
                seen.add_metric(d, dev.last_seen)
            desired = fleet.shadow.current(dev.device_id)
            if desired is not None:
                desired_v.add_metric(d, desired.v)
            rep, tel = dev.reported, dev.telemetry
            if rep is not None:
                if rep.applied_v is not None:
                    applied_v.add_metric(d, rep.applied_v)
                error.add_metric(d, 1 if rep.error else 0)
            if tel is not None and tel.streaming:
                if tel.fps is not None:
                    fps.add_metric(d, tel.fps)
                if tel.bitrate_kbps is not None:
                    rate.add_metric(d, tel.bitrate_kbps * 1000.0 / 8.0)
            link = tel.srt if tel is not None else None
            if link is not None:
                if link.rtt_ms is not None:
                    rtt.add_metric(d, link.rtt_ms / 1000.0)
                if link.loss_pct is not None:
                    loss.add_metric(d, link.loss_pct / 100.0)
                if link.retransmits is not None:
                    retrans.add_metric(d, link.retransmits)
            usage = tel.usage if tel is not None else None
            budget = _budget(dev)
            if usage is not None:
                used.add_metric(d, usage.bytes_sent + usage.bytes_received)
            elif budget is not None:
                used.add_metric(d, budget.used_bytes)
            if budget is not None:
                if budget.budget_bytes is not None:
                    budget_bytes.add_metric(d, budget.budget_bytes + budget.allowance_bytes)
                for state in BUDGET_STATES:
                    budget_state.add_metric(
                        [dev.device_id, state], 1 if budget.state == state else 0
                    )
                resets.add_metric(d, budget.resets_at)
            elif usage is not None and usage.budget_bytes is not None:
                budget_bytes.add_metric(d, usage.budget_bytes)
            bad.add_metric(d, dev.errors)
        yield from (online, streaming, seen, desired_v, applied_v, error, fps, rate, rtt, loss)
        yield from (retrans, used, budget_bytes, budget_state, resets, bad)
