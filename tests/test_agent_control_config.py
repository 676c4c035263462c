"""The agent's MQTT configuration and its snapshot encoder: the parts without a broker."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from flumph.agent.commands import salvage_command_id
from flumph.agent.main import load_agent_config
from flumph.agent.snapshot import SnapshotError, encode_snapshot, scaled_size
from flumph.agent.sources import SyntheticSource
from flumph.agent.telemetry import compact
from flumph.config import ConfigError
from flumph.control import Telemetry, Usage, decode
from flumph.mqtt import DEFAULT_KEEPALIVE_S

NO_ENV: dict[str, str] = {}


def test_without_any_mqtt_setting_the_agent_has_no_control_plane() -> None:
    config = load_agent_config(["--device-id", "cam-1"], NO_ENV)
    assert config.mqtt is None


def test_mqtt_flags() -> None:
    config = load_agent_config(
        ["--device-id", "cam-1", "--mqtt", "mqtts://broker.example:8883", "--mqtt-username",
         "cam-1", "--mqtt-password", "pw", "--mqtt-keepalive-s", "120", "--mqtt-prefix", "site"],
        NO_ENV,
    )  # fmt: skip
    m = config.mqtt
    assert m is not None
    assert (m.host, m.port, m.tls, m.username, m.password) == (
        "broker.example", 8883, True, "cam-1", "pw"
    )  # fmt: skip
    assert (m.keepalive_s, m.prefix) == (120, "site")


def test_mqtt_toml_then_env_then_flags_merge_per_key(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-file\n")
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\ndevice_id = "cam-2"\n[agent.mqtt]\nurl = "mqtt://10.0.0.1"\n'
        'username = "cam-2"\nkeepalive_s = 600\n'
    )
    env = {
        "FLUMPH_AGENT_MQTT_KEEPALIVE_S": "240",
        "FLUMPH_AGENT_MQTT_PASSWORD_FILE": str(secret),
        "FLUMPH_AGENT_FPS": "10",
    }
    config = load_agent_config(["--config", str(path), "--mqtt-prefix", "x"], env)
    m = config.mqtt
    assert m is not None and config.fps == 10
    # url and username from TOML, keepalive from env over TOML, password from the file, prefix flag
    assert (m.url, m.username, m.keepalive_s, m.password, m.prefix) == (
        "mqtt://10.0.0.1", "cam-2", 240, "from-file", "x"
    )  # fmt: skip


def test_one_mqtt_setting_turns_it_on_with_the_defaults() -> None:
    config = load_agent_config(["--device-id", "cam-3"], {"FLUMPH_AGENT_MQTT_URL": "mqtt://h"})
    assert config.mqtt is not None and config.mqtt.keepalive_s == DEFAULT_KEEPALIVE_S == 360


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"FLUMPH_AGENT_MQTT_HOST": "h"}, "FLUMPH_AGENT_MQTT_HOST names no MQTT setting"),
        ([], {"FLUMPH_AGENT_MQTT": "mqtt://h"}, "FLUMPH_AGENT_MQTT names no MQTT setting"),
        (["--mqtt", "http://h"], {}, r"mqtt\.url: .*not mqtt://host"),
        (["--mqtt-keepalive-s", "2"], {}, r"mqtt\.keepalive_s: .*greater than or equal to 5"),
        (["--mqtt-password", "a", "--mqtt-password-file", "/x"], {}, "not both"),
        (["--mqtt-password-file", "/nonexistent/pw"], {}, r"mqtt\.password_file: cannot read"),
        (["--heartbeat-interval-s", "1"], {}, "heartbeat_interval_s: .*greater than or equal"),
    ],
)
def test_bad_mqtt_settings_are_refused_naming_the_key(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_agent_config(["--device-id", "cam-4", *argv], env)


def test_a_toml_mqtt_key_that_does_not_exist_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\ndevice_id = "cam-5"\n[agent.mqtt]\nkeepalive = 60\n')
    with pytest.raises(ConfigError, match=r"mqtt\.keepalive: unknown key"):
        load_agent_config(["--config", str(path)], NO_ENV)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"id":"a1","x":1}', "a1"),
        (b'{"id":5}', ""),
        (b'{"id":""}', ""),
        (b"[1]", ""),
        (b"not json", ""),
        (b"\xff\xfe", ""),
        (b'{"id":"' + b"x" * 65 + b'"}', ""),
    ],
)
def test_command_id_salvage(payload: bytes, expected: str) -> None:
    assert salvage_command_id(payload) == expected


def test_compact_telemetry_leaves_nulls_out_and_still_decodes() -> None:
    t = Telemetry(streaming=False, usage=Usage(month="2025-01"), heartbeat_s=3600)
    data = compact(t)
    assert b"null" not in data and len(data) < 140
    assert decode(Telemetry, data) == t


# --- snapshots --------------------------------------------------------------------------------


def synthetic_frame(width: int, height: int) -> av.VideoFrame:
    frame: av.VideoFrame = SyntheticSource(width, height, 15, seed=1).read(0, time.time())
    return frame


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [((640, 360), 320, (320, 180)), ((1920, 1080), 320, (320, 180)), ((200, 150), 320, (200, 150)),
     ((641, 481), 320, (320, 240)), ((320, 2000), 320, (320, 2000))],
)  # fmt: skip
def test_scaled_size(size: tuple[int, int], limit: int, expected: tuple[int, int]) -> None:
    assert scaled_size(*size, limit) == expected


def test_snapshot_is_a_small_avif_that_decodes() -> None:
    snap = encode_snapshot(synthetic_frame(1280, 720))
    assert snap.mime == "image/avif" and snap.data[4:12] == b"ftypavif"
    assert (snap.width, snap.height) == (320, 180) and len(snap.data) <= 20_000
    with Image.open(io.BytesIO(snap.data)) as im:
        assert im.size == (320, 180)
    with av.open(io.BytesIO(snap.data), "r") as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (320, 180)


def test_snapshot_falls_back_to_jpeg_without_an_av1_encoder() -> None:
    snap = encode_snapshot(synthetic_frame(640, 360), avif_encoders=())
    assert snap.mime == "image/jpeg" and snap.data[:2] == b"\xff\xd8"
    picture = cv2.imdecode(np.frombuffer(snap.data, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape == (180, 320, 3) and len(snap.data) <= 20_000


def test_snapshot_shrinks_to_fit_a_tight_budget() -> None:
    snap = encode_snapshot(synthetic_frame(640, 360), max_bytes=1500)
    assert len(snap.data) <= 1500 and snap.width < 320
    with Image.open(io.BytesIO(snap.data)) as im:
        assert im.size == (snap.width, snap.height)


def test_snapshot_that_cannot_fit_says_what_it_tried() -> None:
    with pytest.raises(SnapshotError, match=r"no snapshot fits 100 bytes; smallest was \d+ bytes"):
        encode_snapshot(synthetic_frame(640, 360), max_bytes=100)
    with pytest.raises(ValueError, match="max_width must be at least 64"):
        encode_snapshot(synthetic_frame(640, 360), max_width=10)


def test_snapshot_leaves_the_callers_frame_alone() -> None:
    """The pipeline may be encoding the very frame a snapshot is taken from."""
    frame = synthetic_frame(320, 180)
    frame.pts = 1234
    snap = encode_snapshot(frame)
    assert frame.pts == 1234 and (snap.width, snap.height) == (320, 180)
