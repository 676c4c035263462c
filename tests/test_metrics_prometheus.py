"""A real Prometheus (Debian's 2.42) scrapes `flumph up --demo` behind its password with the
example configuration's job (deploy/prometheus/prometheus.yml), and evaluates every query of the
example Grafana dashboard (deploy/grafana/flumph.json); promtool checks the example as written."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.peers import watch
from tests.test_dashboard_page import Backend, start_up_demo, wait_until
from tests.test_metrics import Scrape

PROMETHEUS_EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_EXAMPLE = ROOT / "deploy" / "grafana" / "flumph.json"
PASSWORD = "metrics-password-1"
TOKEN_PATH = "/etc/prometheus/flumph.token"

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (scripts/bootstrap test)"
)


def grafana_queries() -> list[str]:
    doc = json.loads(GRAFANA_EXAMPLE.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    # What Grafana sends with "All" selected.
    return [e.replace("$device", ".*").replace("$stream", ".*") for e in exprs]


def test_example_scrape_config_passes_promtool(tmp_path: Path) -> None:
    token = tmp_path / "flumph.token"
    token.write_text("a-token\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_EXAMPLE.read_text().replace(TOKEN_PATH, str(token)))
    r = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert TOKEN_PATH in PROMETHEUS_EXAMPLE.read_text()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = start_up_demo(
        tmp_path_factory.mktemp("up-metrics"), {"FLUMPH_DASHBOARD_PASSWORD": PASSWORD}
    )
    try:
        yield b
    finally:
        b.stop()
    assert "Traceback" not in b.logs(), b.logs()


def login(b: Backend) -> str:
    r = httpx.post(b.dash + "/api/login", json={"password": PASSWORD}, timeout=10)
    r.raise_for_status()
    token: str = r.json()["token"]
    return token


async def test_up_serves_every_components_metrics_behind_its_password(up: Backend) -> None:
    async with httpx.AsyncClient(base_url=up.dash, timeout=10) as http:
        r = await http.get("/metrics")
        assert r.status_code == 401, r.text
        r = await http.get("/metrics", headers={"Authorization": "Bearer forged.token"})
        assert r.status_code == 401, r.text
        bearer = {"Authorization": f"Bearer {await asyncio.to_thread(login, up)}"}
        viewer_token = (await http.get("/api/viewer-token", headers=bearer)).json()["token"]

        async def demo_frames() -> float:
            page = Scrape((await http.get("/metrics", headers=bearer)).text)
            return page.value("flumph_ingest_stream_frames_total", stream="demo") or 0

        deadline = time.monotonic() + 90
        while await demo_frames() < 1:
            assert time.monotonic() < deadline, up.logs()
            await asyncio.sleep(0.5)
        ws = up.dash.replace("http://", "ws://")
        viewer = asyncio.create_task(
            watch(ws, f"demo?token={viewer_token}", subscribe_id="demo", seconds=5,
                  until_ended=False)
        )  # fmt: skip
        await asyncio.sleep(3)
        r = await http.get("/metrics", headers=bearer)
        got = await viewer
    assert got.binaries, got.texts
    assert r.status_code == 200
    page = Scrape(r.text)
    page.check_conventions()
    assert page.value("flumph_broker_up") == 1
    clients = page.value("flumph_broker_clients")
    assert clients is not None and clients >= 3  # fleet, ingest demand, demo agent
    assert page.value("flumph_ingest_stream_viewers", stream="demo") == 1
    assert page.value("flumph_ingest_stream_info", stream="demo", codec="av1", source="srt") == 1
    count = page.value("flumph_ingest_added_latency_seconds_count", stream="demo")
    assert count is not None and count > 0
    assert page.value("flumph_fleet_mqtt_connected") == 1
    assert page.value("flumph_device_online", device="demo") == 1
    assert page.value("flumph_device_streaming", device="demo") == 1
    # Every metric the example Grafana dashboard uses is one that is exported.
    used = {re.sub(r"_(total|bucket|count|sum)$", "", n)
            for q in grafana_queries() for n in re.findall(r"\bflumph_[a-z_]+", q)}  # fmt: skip
    assert used - set(page.families) == set()


def prometheus_query(base: str, query: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=10)
    doc: dict[str, Any] = r.json()
    assert r.status_code == 200 and doc["status"] == "success", (query, doc)
    return doc


async def test_prometheus_scrapes_up_and_runs_the_grafana_queries(
    up: Backend, tmp_path: Path
) -> None:
    session = await asyncio.to_thread(login, up)
    token = tmp_path / "flumph.token"
    token.write_text(session + "\n")
    example = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    # The example's ingest job (Bearer token from a file) pointed at `flumph up`, every second.
    job = next(j for j in example["scrape_configs"] if j["job_name"] == "flumph-ingest")
    job |= {"job_name": "flumph", "scrape_interval": "1s", "scrape_timeout": "1s"}
    job["authorization"]["credentials_file"] = str(token)
    job["static_configs"] = [{"targets": [up.dash.removeprefix("http://")]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": example["global"], "scrape_configs": [job]}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A viewer keeps the on-demand demo camera streaming meanwhile.
    async with httpx.AsyncClient(base_url=up.dash, timeout=10) as http:
        auth = {"Authorization": f"Bearer {session}"}
        viewer_token = (await http.get("/api/viewer-token", headers=auth)).json()["token"]
    ws = up.dash.replace("http://", "ws://")
    viewer = asyncio.create_task(
        watch(ws, f"demo?token={viewer_token}", subscribe_id="demo", seconds=40,
              until_ended=False)
    )  # fmt: skip
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await asyncio.to_thread(check_prometheus, base)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        viewer.cancel()


def check_prometheus(base: str) -> None:
    def scraped() -> bool:
        doc = prometheus_query(base, 'up{job="flumph"}')
        return any(r["value"][1] == "1" for r in doc["data"]["result"])

    wait_until(scraped, 60, "Prometheus scraped flumph up")

    def demo_rate() -> float:
        q = '8 * rate(flumph_ingest_stream_bytes_total{stream="demo"}[1m])'
        result = prometheus_query(base, q)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    # The demo's ~250 kbit/s, once two scrapes are in.
    assert wait_until(lambda: demo_rate() > 50_000, 30, "demo bitrate in Prometheus")
    for q in grafana_queries():
        prometheus_query(base, q)  # every panel's query is valid PromQL here
    online = prometheus_query(base, 'flumph_device_online{device="demo"}')["data"]["result"]
    assert [r["value"][1] for r in online] == ["1"]
    p99 = prometheus_query(
        base,
        "histogram_quantile(0.99, sum by (le) (rate(flumph_ingest_added_latency_seconds_bucket"
        '{stream="demo"}[1m])))',
    )["data"]["result"]
    assert p99 and 0 < float(p99[0]["value"][1]) < 2.5
