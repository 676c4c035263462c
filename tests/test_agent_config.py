"""Agent configuration, stream settings, usage persistence and backoff: the parts without video."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from flumph.agent.destination import backoff_delay, parse_ingest_url
from flumph.agent.main import AgentConfig, load_agent_config
from flumph.agent.usage import FILE_NAME, UsageStore
from flumph.config import ConfigError, load_config
from flumph.settings import StreamSettings


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FLUMPH_AGENT_"):
            monkeypatch.delenv(key)


def test_stream_settings_defaults() -> None:
    s = StreamSettings()
    assert (s.codec, s.bitrate_kbps, s.width, s.height, s.fps) == ("auto", 250, 640, 360, 15)
    assert (s.keyint_s, s.srt_latency_ms, s.frames_per_burst) == (30.0, 120, 1)
    assert not s.streaming and not s.always_on
    assert s.keyint_frames() == 450
    assert StreamSettings(fps=1, keyint_s=0.5).keyint_frames() == 1


@pytest.mark.parametrize(
    ("values", "key", "why"),
    [
        ({"width": 641}, "width", "must be even"),
        ({"height": 359}, "height", "must be even"),
        ({"fps": 0}, "fps", "greater than or equal to 1"),
        ({"fps": 61}, "fps", "less than or equal to 60"),
        ({"bitrate_kbps": 19}, "bitrate_kbps", "greater than or equal to 20"),
        ({"bitrate_kbps": 20001}, "bitrate_kbps", "less than or equal to 20000"),
        ({"srt_latency_ms": 10}, "srt_latency_ms", "greater than or equal to 20"),
        ({"frames_per_burst": 5}, "frames_per_burst", "less than or equal to 4"),
        ({"keyint_s": 0.1}, "keyint_s", "greater than or equal to 0.5"),
        ({"codec": "vp9"}, "codec", "'auto', 'av1', 'hevc', 'h264' or 'copy'"),
        ({"bogus": 1}, "bogus", "unknown key"),
    ],
)
def test_bad_stream_settings_are_refused_naming_the_key(values, key, why) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: .*{why}"):
        load_config(StreamSettings, flags=values)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_config_precedence_toml_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path, '[agent]\ndevice_id = "cam-a"\nfps = 10\nbitrate_kbps = 100\ncodec = "hevc"\n'
    )
    monkeypatch.setenv("FLUMPH_AGENT_FPS", "20")
    monkeypatch.setenv("FLUMPH_AGENT_BITRATE_KBPS", "300")
    config = load_agent_config(["--config", str(path), "--bitrate-kbps", "400", "--stream"])
    assert config.device_id == "cam-a" and config.codec == "hevc"
    assert config.fps == 20 and config.bitrate_kbps == 400 and config.streaming
    settings = config.stream_settings()
    assert type(settings) is StreamSettings and settings.bitrate_kbps == 400


def test_config_defaults_without_stream_flag(tmp_path: Path) -> None:
    config = load_agent_config(["--device-id", "cam-b", "--state-dir", str(tmp_path)])
    assert not config.streaming
    assert config.ingest == "srt://127.0.0.1:8890" and config.source == "synthetic"


@pytest.mark.parametrize(
    ("toml", "argv", "env", "message"),
    [
        ('[agent]\ndevice_id = "x"\nbitrat_kbps = 1\n', [], {}, "bitrat_kbps: unknown key"),
        ('[agent]\ndevice_id = "x"\nfps = 90\n', [], {}, "fps: Input should be less than"),
        ("[agent]\n", [], {}, "device_id: Field required"),
        ('[agent]\ndevice_id = "Bad_Id"\n', [], {}, "device_id: .*must match"),
        ('[agent]\ndevice_id = "x"\n', ["--ingest", "http://a:1"], {}, "ingest: .*srt://"),
        ('[agent]\ndevice_id = "x"\n', ["--ingest", "srt://a"], {}, "ingest: .*host and a port"),
        ('[agent]\ndevice_id = "x"\n', [], {"FLUMPH_AGENT_WIDTH": "641"}, "width: .*even"),
        ('[agent]\ndevice_id = "x"\n', [], {"FLUMPH_AGENT_FSP": "1"}, "FLUMPH_AGENT_FSP names no"),
        ('[agent]\ndevice_id = "x"\npassphrase = "short"\n', [], {}, "passphrase: "),
    ],
)
def test_bad_config_is_refused_naming_the_key(
    tmp_path, monkeypatch, toml, argv, env, message
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = write_config(tmp_path, toml)
    with pytest.raises(ConfigError, match=message):
        load_agent_config(["--config", str(path), *argv])


def test_flumph_agent_refuses_bad_config_with_exit_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[agent]\ndevice_id = "x"\nframes_per_burst = 9\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    result = subprocess.run(
        [sys.executable, "-m", "flumph", "agent", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "frames_per_burst: Input should be less than or equal to 4" in result.stderr


def test_agent_config_extends_the_stream_settings() -> None:
    assert set(StreamSettings.model_fields) < set(AgentConfig.model_fields)


# --- usage ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def test_usage_rolls_over_per_calendar_month_and_persists(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2025, 1, 31, 23, 59, 0))
    store = UsageStore(tmp_path, clock=clock)
    store.add(wire_sent=1000, wire_received=100, payload_sent=900)
    store.save()
    assert not [p for p in tmp_path.iterdir() if p.name != FILE_NAME], "temporary file left"
    # A restart in the same month continues the count.
    again = UsageStore(tmp_path, clock=clock)
    assert again.current().wire_bytes_sent == 1000
    again.add(wire_sent=500)
    clock.now = datetime(2025, 2, 1, 0, 0, 1).timestamp()
    again.add(wire_sent=7)
    assert again.current().month == "2025-02" and again.current().wire_bytes_sent == 7
    again.save()
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    assert [(m["month"], m["wire_bytes_sent"]) for m in doc["months"]] == [
        ("2025-01", 1500),
        ("2025-02", 7),
    ]
    # Months roll even with no traffic: a restart in March starts March at zero.
    clock.now = datetime(2025, 3, 2).timestamp()
    march = UsageStore(tmp_path, clock=clock)
    assert march.current().month == "2025-03" and march.current().wire_bytes_sent == 0
    assert [m.month for m in march.months()] == ["2025-01", "2025-02", "2025-03"]


def test_usage_file_that_is_damaged_does_not_stop_the_agent(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    store = UsageStore(tmp_path)
    assert store.current().wire_bytes_sent == 0
    store.add(wire_sent=5)
    store.save()
    assert UsageStore(tmp_path).current().wire_bytes_sent == 5
    with pytest.raises(ValueError, match="must not be negative"):
        store.add(wire_sent=-1)


# --- transport helpers ------------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.25, 10.0, rng) for n in range(12)]
    for n, d in enumerate(delays):
        nominal = min(10.0, 0.25 * 2**n)
        assert nominal / 2 <= d <= nominal
    assert max(delays) <= 10.0
    assert len({round(backoff_delay(3, 0.25, 10.0, rng), 6) for _ in range(10)}) > 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("udp://a:1", "must start with srt://"),
        ("srt://host", "needs a host and a port"),
        ("srt://host:99999", "invalid port"),
        ("srt://host:8890?latency=1", "give only srt://host:port"),
    ],
)
def test_ingest_url_is_checked(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ingest_url(url)
    assert parse_ingest_url("srt://ingest.example:8890") == ("ingest.example", 8890)
