"""Help texts keep their word: every "default X" a command's --help shows is the default the
code applies (the pydantic model its option feeds), and every service takes --log-json."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from flumph.agent.main import AgentConfig
from flumph.agent.main import _parser as agent_parser
from flumph.broker.config import BrokerSettings
from flumph.broker.main import build_parser as broker_parser
from flumph.clihelp import shown
from flumph.ctl.config import RENAMED as CTL_RENAMED
from flumph.ctl.config import CtlConfig, CtlMqtt
from flumph.ctl.main import _parser as ctl_parser
from flumph.dashboard.main import build_parser as dashboard_parser
from flumph.dashboard.service import DashboardConfig, DashboardMqtt
from flumph.ingest.main import build_parser as ingest_parser
from flumph.ingest.service import IngestConfig
from flumph.mqtt import MqttSettings
from flumph.up.main import build_parser as up_parser

# "default 360", "(default 0.0.0.0; env HOST)"; not "default: the page's own origin".
DEFAULT_RE = re.compile(r"\bdefault ([^\s:;,)][^\s;,)]*)")

Field = tuple[type[BaseModel], str]


def dashboard_field(dest: str) -> Field:
    if dest.startswith("mqtt_"):
        return DashboardMqtt, dest.removeprefix("mqtt_")
    return DashboardConfig, dest


def ctl_field(dest: str) -> Field:
    if dest in CTL_RENAMED:
        return CtlMqtt, CTL_RENAMED[dest].removeprefix("mqtt.")
    return CtlConfig, dest


def agent_field(dest: str) -> Field:
    if dest.startswith("mqtt_"):
        return MqttSettings, dest.removeprefix("mqtt_")
    return AgentConfig, dest


# command -> (its parser, where each option's value goes)
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[str], Field]]] = {
    "ingest": (ingest_parser, lambda dest: (IngestConfig, dest)),
    "dashboard": (dashboard_parser, dashboard_field),
    "ctl": (ctl_parser, ctl_field),
    "broker": (broker_parser, lambda dest: (BrokerSettings, dest)),
    "agent": (agent_parser, agent_field),
}
# flumph up runs the components on their own defaults, except that it binds to loopback.
UP_FIELDS: dict[str, Field] = {
    "port": (IngestConfig, "port"),
    "srt_port": (IngestConfig, "srt_port"),
    "dashboard_port": (DashboardConfig, "port"),
    "mqtt_port": (BrokerSettings, "port"),
}


def model_default(field: Field) -> str:
    model, name = field
    return shown(model.model_fields[name].get_default(call_default_factory=True))


def help_defaults(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(dest, X) for every option whose help says "default X", as --help prints it."""
    out = []
    for action in parser._actions:
        if not action.help or action.help == argparse.SUPPRESS:
            continue
        text = action.help % {"default": action.default, "prog": parser.prog}
        out += [(action.dest, m.group(1)) for m in DEFAULT_RE.finditer(text)]
    return out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_defaults_are_the_models_defaults(command: str) -> None:
    build, field_of = COMMANDS[command]
    found = help_defaults(build())
    assert found, f"flumph {command} --help names no default at all"
    wrong = [
        (dest, said, model_default(field_of(dest)))
        for dest, said in found
        if said != model_default(field_of(dest))
    ]
    assert not wrong, f"flumph {command} --help: (option, help says, model says): {wrong}"


def test_the_agent_help_says_the_keepalive_it_uses() -> None:
    text = agent_parser().format_help()
    assert f"default {MqttSettings().keepalive_s}" in text  # was "default 300" while it is 360


def test_up_defaults_are_the_components_defaults() -> None:
    parser = up_parser()
    for dest, field in UP_FIELDS.items():
        assert parser.get_default(dest) == int(model_default(field)), dest
    assert dict(help_defaults(parser))["port"] == model_default(UP_FIELDS["port"])
    assert parser.get_default("host") == "127.0.0.1"  # loopback unless told otherwise


@pytest.mark.parametrize("command", ["up", "broker", "ingest", "dashboard", "agent"])
def test_every_service_takes_log_json(command: str) -> None:
    parser = {**{k: v[0] for k, v in COMMANDS.items()}, "up": up_parser}[command]()
    assert "--log-json" in parser._option_string_actions, command


def test_agent_log_json_carries_its_configuration_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "flumph", "agent", "--log-json", "--device-id", "Bad_Id"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert len(lines) == 1 and lines[0]["level"] == "error", lines
    assert "device_id" in lines[0]["msg"] and "Bad_Id" in lines[0]["msg"], lines
