"""``/metrics`` read with Prometheus' own text-format parser (prometheus_client.parser) from real
processes: `flumph ingest` with an ffmpeg SRT publisher and a WebSocket viewer, `flumph dashboard`
on mosquitto with devices speaking the contract, `flumph broker --metrics-port` with paho clients.
`flumph up` (all three on one route, behind its password) scraped by a real Prometheus:
tests/test_metrics_prometheus.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from flumph import auth
from flumph.control import Topics
from tests.brokers import OPS_USER, Broker, Probe, start_embedded, start_mosquitto
from tests.conftest import Ingest, free_port, start_ingest, stop_ingest
from tests.peers import ffmpeg_publish, watch
from tests.test_fleet_service import USERS, FakeDevice, start_dashboard, wait_until

T = Topics()
# Every label the exposition may carry: all bounded, or a known device / published stream.
LABELS = {"stream", "device", "state", "codec", "source", "presence", "answer", "le"}


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        return None

    def label_values(self, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if label in s.labels}

    def check_conventions(self) -> None:
        for f in self.families.values():
            assert f.name.startswith("flumph_"), f.name
            for s in f.samples:
                assert set(s.labels) <= LABELS, s
                if f.type == "counter":
                    assert s.name.endswith(("_total", "_created")), s.name


def scrape(url: str, **kw: Any) -> Scrape:
    r = httpx.get(url + "/metrics", timeout=10, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    page = Scrape(r.text)
    page.check_conventions()
    return page


# --- the ingest: a real SRT publisher and a viewer ------------------------------------------


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    ing = start_ingest(tmp_path_factory.mktemp("metrics-ingest"), args=["--reconnect-grace-s", "1"])
    yield ing
    stop_ingest(ing)


async def test_ingest_metrics_of_a_published_and_watched_stream(ingest: Ingest) -> None:
    pub = ffmpeg_publish(ingest.srt_url("met1"), seconds=8, size="320x240")
    try:
        await asyncio.to_thread(ingest.wait_stream, "met1", 15, 1)
        viewer = asyncio.create_task(watch(ingest.ws, "met1", seconds=4, until_ended=False))
        await asyncio.sleep(3)
        page = await asyncio.to_thread(scrape, ingest.http)
        await viewer
    finally:
        await asyncio.to_thread(pub.communicate, timeout=30)
    s = {"stream": "met1"}
    assert page.value("flumph_ingest_stream_info", codec="h264", source="srt", **s) == 1
    assert page.value("flumph_ingest_streams", state="publishing") == 1
    assert page.value("flumph_ingest_stream_publishing", **s) == 1
    assert page.value("flumph_ingest_stream_viewers", **s) == 1
    assert page.value("flumph_ingest_viewers") == 1
    frames = page.value("flumph_ingest_stream_frames_total", **s)
    assert frames is not None and frames >= 30
    fps = page.value("flumph_ingest_stream_frames_per_second", **s)
    assert fps is not None and 10 <= fps <= 20, fps  # ffmpeg -re at 15 fps
    rate = page.value("flumph_ingest_stream_bytes_per_second", **s)
    assert rate is not None and rate > 1000
    assert page.value("flumph_ingest_stream_viewer_skipped_frames_total", **s) == 0
    # The added-latency histogram: one observation per frame sent to the viewer, buckets cumulative.
    count = page.value("flumph_ingest_added_latency_seconds_count", **s)
    assert count is not None and count >= 20
    buckets = [x for x in page.samples if x.name == "flumph_ingest_added_latency_seconds_bucket"]
    values = [x.value for x in buckets]
    assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf"
    assert values[-1] == count
    # The SRT link as the ingest measures it.
    rtt = page.value("flumph_ingest_srt_rtt_seconds", **s)
    assert rtt is not None and 0 <= rtt < 0.1
    received = page.value("flumph_ingest_srt_received_bytes_total", **s)
    assert received is not None and received > 20_000
    packets = page.value("flumph_ingest_srt_received_packets_total", **s)
    assert packets is not None and packets > 20
    for name in ("lost_packets", "dropped_packets", "retransmitted_packets"):
        assert page.value(f"flumph_ingest_srt_{name}_total", **s) is not None, name


async def test_an_id_a_waiting_viewer_chose_is_not_a_label(ingest: Ingest) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    async with websockets.connect(f"{ingest.ws}/ws/view/{ghost}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": ghost, "wait": True}))
        first = json.loads(await ws.recv())
        page = await asyncio.to_thread(scrape, ingest.http)
    if first["type"] == "subscribed":  # (an ingest that knows its devices may refuse instead)
        assert page.value("flumph_ingest_streams", state="waiting") == 1
    assert ghost not in page.label_values("stream")


def test_ingest_metrics_need_the_api_token_when_a_secret_is_set(tmp_path: Path) -> None:
    secret = "metrics-test-secret-0123456789"
    ing = start_ingest(tmp_path, {"FLUMPH_INGEST_AUTH_SECRET": secret})
    try:
        r = httpx.get(ing.http + "/metrics", timeout=10)
        assert r.status_code == 401 and "unauthorized" in r.json()["detail"]
        forged = auth.issue("another-secret-0123456789", "session", 60, now=time.time())
        r = httpx.get(ing.http + "/metrics", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
        token = auth.issue(secret, "session", 60, now=time.time())
        page = scrape(ing.http, headers={"Authorization": f"Bearer {token}"})
        assert page.value("flumph_ingest_streams", state="publishing") == 0
    finally:
        stop_ingest(ing)


# --- the dashboard's fleet service ----------------------------------------------------------


def test_fleet_metrics_per_known_device(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path, USERS)
    dash = start_dashboard(tmp_path, broker)
    cam, idle = FakeDevice(broker, "cam1"), FakeDevice(broker, "cam2")
    try:
        cam.birth()
        cam.telemetry(
            streaming=True, fps=14.5, bitrate_kbps=240.0,
            srt={"rtt_ms": 42.0, "loss_pct": 1.5, "retransmits": 7},
            usage={"month": "2026-12", "bytes_sent": 1_000_000, "bytes_received": 20_000,
                   "budget_bytes": 500_000_000},
            budget={"state": "warn", "used_bytes": 1_020_000, "budget_bytes": 1_000_000,
                    "allowance_bytes": 200_000, "period_start": 1_764_547_200.0,
                    "resets_at": 1_767_225_600.0},
        )  # fmt: skip
        idle.birth()
        idle.publish(
            "reported", json.dumps({"applied_v": 0, "streaming": False}).encode(), retain=True
        )
        ops = Probe(broker, OPS_USER)
        try:
            ops.publish(T.set("cam1"), b'{"fps": 15}')
            ops.publish(T.set("cam1"), b'{"fps": 0}')
            ops.publish(T.set("nobody-1"), b'{"fps": 12}')  # an id that never came online
        finally:
            ops.close()

        def settled() -> Scrape | None:
            page = scrape(dash.url)
            # fps 0 (out of range) and nobody-1 (an unknown device) are both refused.
            done = page.value("flumph_fleet_set_answers_total", answer="rejected") == 2
            return page if done and page.value("flumph_device_online", device="cam2") else None

        page: Scrape = wait_until(settled, 10, "metrics settle")
    finally:
        cam.close()
        idle.close()
        assert dash.stop() == 0, dash.log()
        broker.stop()
    c1, c2 = {"device": "cam1"}, {"device": "cam2"}
    assert page.value("flumph_fleet_mqtt_connected") == 1
    assert page.value("flumph_fleet_set_answers_total", answer="accepted") == 1  # cam1 fps 15
    assert page.value("flumph_device_online", **c1) == 1
    assert page.value("flumph_device_streaming", **c1) == 1
    assert page.value("flumph_device_streaming", **c2) == 0
    assert page.value("flumph_device_frames_per_second", **c1) == 14.5
    assert page.value("flumph_device_bytes_per_second", **c1) == 30_000
    assert page.value("flumph_device_srt_rtt_seconds", **c1) == 0.042
    assert page.value("flumph_device_srt_loss_ratio", **c1) == 0.015
    assert page.value("flumph_device_srt_retransmitted_packets_total", **c1) == 7
    assert page.value("flumph_device_data_used_bytes", **c1) == 1_020_000
    assert page.value("flumph_device_data_budget_bytes", **c1) == 1_200_000  # with the grant
    assert page.value("flumph_device_budget_state", state="warn", **c1) == 1
    assert page.value("flumph_device_budget_state", state="ok", **c1) == 0
    assert page.value("flumph_device_budget_reset_timestamp_seconds", **c1) == 1_767_225_600
    assert page.value("flumph_device_budget_state", **c2) is None  # no budget reported
    assert page.value("flumph_device_desired_version", **c1) == 1
    assert page.value("flumph_device_applied_version", **c2) == 0
    assert page.value("flumph_fleet_devices", presence="online") == 2
    # Seen only on set: tracked and counted, but not a label value.
    assert "nobody-1" not in page.label_values("device")
    assert page.label_values("device") == {"cam1", "cam2"}


# --- the broker alone -----------------------------------------------------------------------


def test_broker_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    broker = start_embedded(tmp_path, extra_args=["--metrics-port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        idle = scrape(url)
        assert idle.value("flumph_broker_up") == 1
        assert idle.value("flumph_broker_clients") == 0
        sub, pub = Probe(broker), Probe(broker)
        try:
            sub.subscribe("flumph/+/telemetry")
            before = scrape(url)
            for i in range(5):
                pub.publish(T.telemetry("cam1"), json.dumps({"n": i}))
            pub.publish(T.status("cam1"), b'{"state": "online"}', retain=True)
            assert len(sub.received(1.0)) == 5
            after = scrape(url)
        finally:
            sub.close()
            pub.close()
    finally:
        broker.stop()
    assert after.value("flumph_broker_clients") == 2
    assert after.value("flumph_broker_subscriptions") == 1
    assert after.value("flumph_broker_retained_messages") == 1
    got = {n: (after.value(n) or 0) - (before.value(n) or 0) for n in (
        "flumph_broker_messages_received_total", "flumph_broker_messages_sent_total")}  # fmt: skip
    assert got == {
        "flumph_broker_messages_received_total": 6,  # 5 telemetry + the retained status
        "flumph_broker_messages_sent_total": 5,  # the subscriber's five
    }
    assert "Prometheus metrics on http://127.0.0.1:" in broker.log()
    # The port was released with the broker.
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/metrics", timeout=2)


def test_broker_metrics_port_in_use_is_an_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker_port = free_port()
        broker: Broker | None = None
        try:
            broker = start_embedded(tmp_path, port=broker_port,
                                    extra_args=["--metrics-port", str(port)])  # fmt: skip
        except AssertionError as e:  # the broker exited before listening...
            assert "choose another with --metrics-port" in str(e), e
        else:  # ...or right after
            assert broker.proc.wait(15) == 1, broker.log()
            assert "choose another with --metrics-port" in broker.log()
        finally:
            if broker is not None:
                broker.stop()
