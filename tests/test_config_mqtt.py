"""One MQTT settings model, one TOML shape: ``[<component>.mqtt]`` in the ingest, the dashboard and
ctl as in the agent; the older flat keys and variables still work, each told once as deprecated
naming its new key; secrets never echoed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flumph import config
from flumph.config import ConfigError
from flumph.ctl.config import RENAMED, CtlConfig, CtlMqtt
from flumph.ctl.main import _config as ctl_config
from flumph.ctl.main import _parser as ctl_parser
from flumph.dashboard import main as dashboard
from flumph.dashboard.service import DashboardMqtt
from flumph.ingest import main as ingest
from flumph.ingest.service import IngestMqtt
from flumph.mqtt import MqttSettings


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deprecations are told once per process: each test starts with none told.
    monkeypatch.setattr(config, "_told", set())


def deprecations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "flumph.toml"
    path.write_text(text)
    return str(path)


def test_every_mqtt_table_has_the_keys_of_the_one_model() -> None:
    for model in (IngestMqtt, DashboardMqtt, CtlMqtt):
        assert issubclass(model, MqttSettings)
        assert list(model.model_fields) == list(MqttSettings.model_fields)


def test_the_same_table_in_every_component(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        "[ingest.mqtt]\nurl = 'mqtts://b.example:8883'\nusername = 'backend'\nprefix = 'site/a'\n"
        "[dashboard.mqtt]\nurl = 'mqtt://b.example'\nkeepalive_s = 90\n"
        "[ctl.mqtt]\nurl = 'mqtt://b.example:1884'\nusername = 'ops'\n",
    )
    i = ingest.load(ingest.parse_args(["--config", path]), environ={})
    assert i.mqtt is not None
    assert (i.mqtt.host, i.mqtt.port, i.mqtt.tls, i.mqtt.prefix) == (
        "b.example",
        8883,
        True,
        "site/a",
    )
    assert i.mqtt.reconnect_max_s == 10.0, "a backend retries every few seconds"
    d = dashboard.load(dashboard.parse_args(["--config", path]), environ={})
    assert (d.mqtt.url, d.mqtt.keepalive_s, d.mqtt.reconnect_max_s) == ("mqtt://b.example", 90, 10)
    c = ctl_config(ctl_parser().parse_args(["devices", "--config", path]))
    assert (c.mqtt.port, c.mqtt.username, c.mqtt.keepalive_s) == (1884, "ops", 60)


def test_defaults_differ_only_where_the_component_needs_it() -> None:
    d = dashboard.load(dashboard.parse_args([]), environ={})
    assert (d.mqtt.url, d.mqtt.keepalive_s, d.mqtt.reconnect_max_s) == (
        "mqtt://127.0.0.1:1883",
        60,
        10.0,
    )
    assert ingest.load(ingest.parse_args([]), environ={}).mqtt is None, "on-demand off"


def test_a_flag_or_variable_sets_one_key_of_the_table(tmp_path: Path) -> None:
    path = toml(tmp_path, "[dashboard.mqtt]\nurl = 'mqtt://a.example'\nusername = 'backend'\n")
    d = dashboard.load(
        dashboard.parse_args(["--config", path, "--mqtt", "mqtt://b.example"]),
        environ={"FLUMPH_DASHBOARD_MQTT_PASSWORD": "pw-from-env"},
    )
    assert (d.mqtt.url, d.mqtt.username, d.mqtt.password) == (
        "mqtt://b.example",
        "backend",
        "pw-from-env",
    )
    i = ingest.load(ingest.parse_args(["--mqtt", "mqtt://c.example"]), environ={})
    assert i.mqtt is not None and i.mqtt.url == "mqtt://c.example"
    i = ingest.load(
        ingest.parse_args([]),
        environ={"FLUMPH_INGEST_MQTT_URL": "mqtt://d.example", "FLUMPH_INGEST_MQTT_PREFIX": "x"},
    )
    assert i.mqtt is not None and (i.mqtt.url, i.mqtt.prefix) == ("mqtt://d.example", "x")


def test_old_flat_keys_work_and_are_told_once_naming_the_new_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flumph.config")
    path = toml(
        tmp_path,
        "[ingest]\nmqtt_url = 'mqtt://old.example'\nmqtt_password = 'ingest-pw'\n"
        "[dashboard]\nmqtt_url = 'mqtt://old.example'\nmqtt_keepalive_s = 30\n"
        "[ctl]\nmqtt = 'mqtt://old.example:1884'\nusername = 'ops'\nprefix = 'p'\n",
    )
    for _ in range(2):
        i = ingest.load(ingest.parse_args(["--config", path]), environ={})
        d = dashboard.load(dashboard.parse_args(["--config", path]), environ={})
        c = ctl_config(ctl_parser().parse_args(["devices", "--config", path]))
    assert i.mqtt is not None and (i.mqtt.url, i.mqtt.password) == (
        "mqtt://old.example",
        "ingest-pw",
    )
    assert (d.mqtt.url, d.mqtt.keepalive_s) == ("mqtt://old.example", 30)
    assert (c.mqtt.url, c.mqtt.username, c.mqtt.prefix) == ("mqtt://old.example:1884", "ops", "p")
    told = deprecations(caplog)
    assert len(told) == len(set(told)) == 7, told  # once each, though loaded twice
    assert (
        f"config file {path}: [dashboard] mqtt_url is deprecated: use [dashboard.mqtt] url" in told
    )
    assert f"config file {path}: [ctl] mqtt is deprecated: use [ctl.mqtt] url" in told
    assert not any("ingest-pw" in m for m in told)


def test_old_ctl_variables_work_and_are_told_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flumph.config")
    env = {
        "FLUMPH_CTL_MQTT": "mqtt://old.example:1884",
        "FLUMPH_CTL_USERNAME": "ops",
        "FLUMPH_CTL_PASSWORD": "ops-pw",
    }
    for _ in range(2):
        c = config.load_config(CtlConfig, env_prefix="FLUMPH_CTL_", environ=env, renamed=RENAMED)
    assert (c.mqtt.url, c.mqtt.username, c.mqtt.password) == (
        "mqtt://old.example:1884",
        "ops",
        "ops-pw",
    )
    assert sorted(deprecations(caplog)) == [
        "environment variable FLUMPH_CTL_MQTT is deprecated: use FLUMPH_CTL_MQTT_URL",
        "environment variable FLUMPH_CTL_PASSWORD is deprecated: use FLUMPH_CTL_MQTT_PASSWORD",
        "environment variable FLUMPH_CTL_USERNAME is deprecated: use FLUMPH_CTL_MQTT_USERNAME",
    ]


def test_a_key_at_both_places_is_refused_naming_both(tmp_path: Path) -> None:
    path = toml(
        tmp_path, "[dashboard]\nmqtt_url = 'mqtt://a'\n[dashboard.mqtt]\nurl = 'mqtt://b'\n"
    )
    with pytest.raises(ConfigError, match=r"\[dashboard.mqtt\] url or the older mqtt_url"):
        dashboard.load(dashboard.parse_args(["--config", path]), environ={})
    with pytest.raises(ConfigError, match="FLUMPH_CTL_MQTT_URL or the older FLUMPH_CTL_MQTT"):
        config.load_config(
            CtlConfig,
            env_prefix="FLUMPH_CTL_",
            environ={"FLUMPH_CTL_MQTT": "mqtt://a", "FLUMPH_CTL_MQTT_URL": "mqtt://b"},
            renamed=RENAMED,
        )


def test_bad_mqtt_values_are_refused_by_their_key_without_echoing_secrets(tmp_path: Path) -> None:
    path = toml(tmp_path, "[dashboard.mqtt]\nurl = 'http://x'\npassword = 'hunter2-secret'\n")
    with pytest.raises(ConfigError, match=r"mqtt\.url") as e:
        dashboard.load(dashboard.parse_args(["--config", path]), environ={})
    assert "hunter2" not in str(e.value)
    with pytest.raises(ConfigError, match=r"mqtt\.prefix"):
        dashboard.load(dashboard.parse_args([]), environ={"FLUMPH_DASHBOARD_MQTT_PREFIX": "a b"})
    with pytest.raises(ConfigError, match=r"mqtt\.colour: unknown key"):
        toml(tmp_path, "[dashboard.mqtt]\ncolour = 'red'\n")
        dashboard.load(
            dashboard.parse_args(["--config", str(tmp_path / "flumph.toml")]), environ={}
        )
    with pytest.raises(ConfigError, match="FLUMPH_INGEST_MQTT_COLOUR names no setting"):
        ingest.load(ingest.parse_args([]), environ={"FLUMPH_INGEST_MQTT_COLOUR": "red"})
    # The ingest's table turns on-demand on, so it must name its broker; the error is the key's
    # alone (the input of a missing key is the whole table, password and all).
    path = toml(tmp_path, "[ingest.mqtt]\npassword = 'hunter2-secret'\n")
    with pytest.raises(ConfigError, match=r"mqtt\.url: Field required") as e:
        ingest.load(ingest.parse_args(["--config", path]), environ={})
    assert "hunter2" not in str(e.value)
