"""Print the configuration reference (every key, default, env var, bounds) from the models the
code itself validates with, as the Markdown that README.md carries between its markers.

    python scripts/config_reference.py            # print
    python scripts/config_reference.py --write    # rewrite README.md's section
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from flumph.config import table_model

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _models() -> list[tuple[str, str, str, type[BaseModel]]]:
    from flumph.agent.main import AgentConfig
    from flumph.broker.config import BrokerSettings
    from flumph.ctl.config import CtlConfig, CtlMqtt
    from flumph.dashboard.service import DashboardConfig, DashboardMqtt
    from flumph.ingest.service import IngestConfig, IngestMqtt
    from flumph.mqtt import MqttSettings

    return [
        ("broker", "[broker]", "FLUMPH_BROKER_", BrokerSettings),
        ("ingest", "[ingest]", "FLUMPH_INGEST_", IngestConfig),
        ("ingest MQTT", "[ingest.mqtt]", "FLUMPH_INGEST_MQTT_", IngestMqtt),
        ("dashboard", "[dashboard]", "FLUMPH_DASHBOARD_", DashboardConfig),
        ("dashboard MQTT", "[dashboard.mqtt]", "FLUMPH_DASHBOARD_MQTT_", DashboardMqtt),
        ("agent", "[agent]", "FLUMPH_AGENT_", AgentConfig),
        ("agent MQTT", "[agent.mqtt]", "FLUMPH_AGENT_MQTT_", MqttSettings),
        ("ctl", "[ctl]", "FLUMPH_CTL_", CtlConfig),
        ("ctl MQTT", "[ctl.mqtt]", "FLUMPH_CTL_MQTT_", CtlMqtt),
    ]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value: Any = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, Path):
            return "(per user, see below)"
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "(table)"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
        for attr, label in (("min_length", "len ≥"), ("max_length", "len ≤")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{label} {v}")
    return ", ".join(parts)


def _type(field: FieldInfo) -> str:
    text = repr(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("NoneType", "None").replace("|", "\\|")


def render() -> str:
    out = []
    for name, table, env, model in _models():
        out.append(f"**{name}** — TOML `{table}`, environment `{env}<KEY>`\n")
        out.append("| key | type | default | bounds | meaning |")
        out.append("|---|---|---|---|---|")
        for key, field in model.model_fields.items():
            if table_model(field.annotation) is not None:
                continue  # its own table below
            title = (field.title or "").replace("|", "\\|")
            row = [f"`{key}`", _type(field), _default(field), _bounds(field), title]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_section(text: str) -> str:
    m = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    if not m:
        raise SystemExit(f"README.md has no {START} ... {END} section")
    return m.group(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true")
    ns = p.parse_args()
    body = render()
    if not ns.write:
        sys.stdout.write(body)
        return 0
    text = README.read_text()
    readme_section(text)
    new = re.sub(
        re.escape(START) + r"\n.*?" + re.escape(END),
        lambda _: f"{START}\n{body}{END}",
        text,
        flags=re.S,
    )
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
