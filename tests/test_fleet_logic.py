"""The fleet service's rules as pure code: shadow merge, on-demand decisions, presence, sniffing,
the live feed's overflow, and flumph ctl's argument parsing. No network here; the same rules
are exercised against real brokers in test_fleet_service.py and test_ctl.py."""

from __future__ import annotations

import asyncio
import io
import json

import av
import cv2
import numpy as np
import pytest

from flumph.control import ContractError, Desired, Reported, Status
from flumph.ctl.describe import describe
from flumph.ctl.main import parse_assignments
from flumph.dashboard.api import FeedClient, sync_state
from flumph.dashboard.device_state import DeviceState
from flumph.dashboard.fleet import Fleet, FleetOptions
from flumph.dashboard.ondemand import OnDemand, should_linger
from flumph.dashboard.shadow import Shadow, plan_patch, version_in
from flumph.media.imagetype import image_extension, image_type
from flumph.mqtt import MqttSettings


def doc(v: int, **settings: object) -> Desired:
    return Desired.model_validate({"v": v, **settings})


# --- shadow merge ---------------------------------------------------------------------------


def test_merge_increments_version_and_keeps_fields() -> None:
    s = Shadow()
    first, _ = s.merge("cam1", {"streaming": True})
    second, _ = s.merge("cam1", {"bitrate_kbps": 300})
    assert (first.v, second.v) == (1, 2)
    assert second.settings_patch() == {"streaming": True, "bitrate_kbps": 300}
    assert s.current("cam1") == second


def test_echo_of_our_own_document_does_not_roll_back() -> None:
    s = Shadow()
    v1, _ = s.merge("cam1", {"fps": 10})
    v2, _ = s.merge("cam1", {"fps": 12})
    # The broker echoes v1 after we already merged v2: v2 stays current.
    assert s.observe("cam1", Desired.model_validate_json(v1.payload())) is False
    assert s.current("cam1") == v2
    assert s.observe("cam1", Desired.model_validate_json(v2.payload())) is False
    v3, _ = s.merge("cam1", {"fps": 14})
    assert v3.v == 3


def test_another_writers_document_is_adopted_and_merged_on() -> None:
    s = Shadow()
    assert s.observe("cam1", doc(7, codec="av1")) is True
    new, _ = s.merge("cam1", {"streaming": True})
    assert new.v == 8
    assert new.settings_patch() == {"codec": "av1", "streaming": True}
    assert s.observe("cam1", None) is True  # retained document deleted
    assert s.merge("cam1", {"fps": 10})[0].v == 9  # versions never go back


def test_invalid_document_keeps_current_but_version_moves_past_it() -> None:
    s = Shadow()
    s.observe("cam1", doc(3, fps=10))
    s.observe_invalid("cam1", b'{"v": 40, "fps": "fast"}')
    assert s.current("cam1") == doc(3, fps=10)
    assert s.merge("cam1", {"fps": 12})[0].v == 41
    s.floor("cam1", 50)  # the device reports it applied v50 (the retained document was lost)
    assert s.merge("cam1", {"fps": 14})[0].v == 51
    assert version_in(b"not json") is None
    assert version_in(b'{"v": true}') is None
    assert version_in(b'{"v": -1}') is None


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({}, "empty"),
        ({"bogus": 1}, "unknown setting"),
        ({"bitrate_kbps": 5}, "bitrate_kbps"),
        ({"width": 641}, "width"),
        ({"always_on": True, "streaming": False}, "contradicts"),
    ],
)
def test_refused_patches_name_the_problem(patch: dict[str, object], fragment: str) -> None:
    s = Shadow()
    s.observe("cam1", doc(2, fps=10))
    with pytest.raises(ContractError, match=fragment):
        s.merge("cam1", patch)
    assert s.current("cam1") == doc(2, fps=10)


def test_always_on_rules() -> None:
    assert plan_patch(None, {"always_on": True}) == {"always_on": True, "streaming": True}
    on = doc(4, always_on=True, streaming=True)
    # An explicit stop wins over always-on.
    assert plan_patch(on, {"streaming": False}) == {"streaming": False, "always_on": False}
    assert plan_patch(on, {"fps": 10}) == {"fps": 10}
    assert plan_patch(doc(1, streaming=True), {"always_on": False}) == {"always_on": False}


# --- on-demand ------------------------------------------------------------------------------


def test_should_linger() -> None:
    streaming = doc(1, streaming=True)
    assert should_linger(0, streaming, pinned=False)
    assert not should_linger(1, streaming, pinned=False)
    assert not should_linger(None, streaming, pinned=False)  # no ingest reporting
    assert not should_linger(0, streaming, pinned=True)
    assert not should_linger(0, doc(1, streaming=True, always_on=True), pinned=False)
    assert not should_linger(0, doc(1, streaming=False), pinned=False)


async def test_ondemand_starts_lingers_and_stops() -> None:
    shadow = Shadow()
    merged: list[dict[str, object]] = []

    def merge(device: str, patch: dict[str, object]) -> None:
        merged.append(patch)
        shadow.merge(device, patch)

    od = OnDemand(linger_s=0.2, merge=merge, current=shadow.current)
    od.viewers("cam1", 1)  # before activation: recorded only
    assert merged == []
    od.activate()
    assert merged == [{"streaming": True}]
    od.viewers("cam1", 2)
    od.viewers("cam1", 0)
    state = od.state("cam1")
    assert state is not None and state.linger is not None
    od.viewers("cam1", 1)  # came back within the linger
    assert state.linger is None
    od.viewers("cam1", 0)
    await asyncio.sleep(0.4)
    assert merged == [{"streaming": True}, {"streaming": False}]


async def test_operator_start_pins_and_explicit_stop_unpins() -> None:
    shadow = Shadow()
    merged: list[dict[str, object]] = []

    def merge(device: str, patch: dict[str, object]) -> None:
        merged.append(patch)
        shadow.merge(device, patch)

    od = OnDemand(linger_s=0.1, merge=merge, current=shadow.current)
    od.activate()
    od.viewers("cam1", 0)
    shadow.merge("cam1", {"streaming": True})
    od.operator_patch("cam1", {"streaming": True})
    await asyncio.sleep(0.25)
    assert merged == []  # pinned: on-demand does not stop an operator's start
    shadow.merge("cam1", {"streaming": False})
    od.operator_patch("cam1", {"streaming": False})
    od.viewers("cam1", 1)
    assert merged == [{"streaming": True}]  # started on demand, not pinned
    od.viewers("cam1", 0)
    await asyncio.sleep(0.25)
    assert merged == [{"streaming": True}, {"streaming": False}]


async def test_a_device_that_runs_always_on_is_not_stopped_on_demand() -> None:
    """``flumph up --demo`` runs its agent with --always-on: no desired says otherwise, so the
    device's own setting holds; a desired always_on=false overrides it."""
    shadow = Shadow()
    merged: list[dict[str, object]] = []
    own = {"demo": True}

    def merge(device: str, patch: dict[str, object]) -> None:
        merged.append(patch)
        shadow.merge(device, patch)

    od = OnDemand(linger_s=0.1, merge=merge, current=shadow.current, own_always_on=own.__getitem__)
    od.activate()
    od.viewers("demo", 1)
    assert merged == [{"streaming": True}]
    od.viewers("demo", 0)
    await asyncio.sleep(0.25)
    assert merged == [{"streaming": True}]  # kept on: the device runs always_on
    own["demo"] = False  # it reports otherwise now
    od.device_changed("demo")
    await asyncio.sleep(0.25)
    assert merged == [{"streaming": True}, {"streaming": False}]
    assert should_linger(0, doc(2, streaming=True, always_on=False), False, own_always_on=True)


# --- presence, sync, sniffing ---------------------------------------------------------------


def test_presence() -> None:
    dev = DeviceState("cam1")
    assert dev.presence_at(100.0, 10) == "unknown"
    dev.status = Status(state="online")
    dev.last_seen_mono = 95.0
    assert dev.presence_at(100.0, 10) == "online"
    assert dev.presence_at(106.0, 10) == "offline (silent)"
    dev.status = Status(state="offline")
    assert dev.presence_at(96.0, 10) == "offline"


def test_sync_state() -> None:
    assert sync_state(None, None) == "none"
    assert sync_state(doc(3), None) == "pending"
    assert sync_state(doc(3), Reported(applied_v=3)) == "applied"
    assert sync_state(doc(3), Reported(applied_v=2)) == "pending"
    assert sync_state(doc(3), Reported(applied_v=2, error="desired: fps: bad")) == "error"


def test_image_type_from_real_images() -> None:
    picture = np.zeros((32, 48, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    png = cv2.imencode(".png", picture)[1].tobytes()
    webp = cv2.imencode(".webp", picture)[1].tobytes()
    assert image_type(jpeg) == "image/jpeg"
    assert image_type(png) == "image/png"
    assert image_type(webp) == "image/webp"
    assert image_type(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf") == "image/avif"
    assert image_type(b"hello") == "application/octet-stream"
    assert image_extension(jpeg) == "jpg"
    assert image_extension(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avif") == "avif"


def test_image_type_avif_from_pyav() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="avif") as container:
        stream = container.add_stream("libsvtav1", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert image_type(out.getvalue()) == "image/avif"


# --- the live feed's bounded queue ----------------------------------------------------------


async def test_feed_client_overflow_becomes_one_resync() -> None:
    client = FeedClient(None, size=4)
    for i in range(10):
        client.offer(("device", str(i)))
    items = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    assert items == [("resync", "")]
    assert client.dropped == 10
    client.overflowed = False  # what the stream does once it has sent the resync
    client.offer(("device", "after"))
    assert client.queue.get_nowait() == ("device", "after")


# --- flumph ctl's parsing -------------------------------------------------------------------


def test_parse_assignments() -> None:
    patch = parse_assignments(["bitrate_kbps=300", "streaming=true", "codec=av1", "keyint_s=2.5"])
    assert patch == {"bitrate_kbps": 300, "streaming": True, "codec": "av1", "keyint_s": 2.5}
    with pytest.raises(ContractError, match="not key=value"):
        parse_assignments(["streaming"])
    with pytest.raises(ContractError, match=r"unknown setting.*bogus"):
        parse_assignments(["bogus=1"])
    with pytest.raises(ContractError, match="codec"):
        parse_assignments(["codec=mpeg2"])


def test_describe_never_raises() -> None:
    assert describe("status", b'{"state":"online","ts":1}') == "online"
    assert describe("telemetry", b"garbage").startswith("INVALID: telemetry: not JSON")
    line = describe(
        "telemetry",
        json.dumps(
            {"streaming": True, "fps": 15, "bitrate_kbps": 250.4,
             "srt": {"rtt_ms": 31, "loss_pct": 0.5},
             "usage": {"month": "2026-11", "bytes_sent": 12_000_000, "budget_bytes": 10**9}}
        ).encode(),
    )  # fmt: skip
    assert line == "streaming fps=15.0 kbps=250 rtt=31ms loss=0.5% used=12.0MB/1.00GB"


def test_snapshots_are_bounded_per_device_and_for_the_fleet() -> None:
    fleet = Fleet(MqttSettings(), FleetOptions(snapshot_max_bytes=2000, snapshot_total_bytes=2500))
    still = b"\xff\xd8\xff" + bytes(997)
    for i, dev in enumerate(("cam1", "cam2", "cam3")):
        fleet.handle(f"flumph/{dev}/status", b'{"state": "online"}', retain=True)  # known
        fleet.handle(f"flumph/{dev}/snapshot", still, retain=False)
        fleet.devices[dev].snapshot_at = float(i)  # distinct ages, oldest first
    assert [d.snapshot is not None for d in fleet.devices.values()] == [False, True, True]
    assert (fleet.snapshot_bytes, fleet.snapshots_evicted) == (2000, 1)
    fleet.handle("flumph/cam2/snapshot", bytes(2001), retain=False)
    cam2 = fleet.devices["cam2"]
    assert cam2.errors == 1 and "2001 bytes exceeds 2000" in str(cam2.last_error)
    assert cam2.snapshot == still  # the previous one stays
    fleet.handle("flumph/cam2/snapshot", b"", retain=True)  # retained still deleted
    assert cam2.snapshot is None and fleet.snapshot_bytes == 1000
