"""ctl's configuration: the ``[ctl]`` table with its ``[ctl.mqtt]``, and the flat keys it once had.

Read by :mod:`flumph.ctl.main` from a TOML file, ``FLUMPH_CTL_*`` variables and flags (in rising
precedence); ``scripts/config_reference.py`` documents it from these models.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from flumph.config import StrictModel
from flumph.mqtt import MqttSettings

ENV_PREFIX = "FLUMPH_CTL_"


class CtlMqtt(MqttSettings):
    """ctl's broker connection: a short-lived tool notices a dead broker within a minute."""

    keepalive_s: int = Field(default=60, ge=5, le=3600, title="MQTT keepalive")


# ctl's flat keys before its mqtt table, each mapped to its place in it (also as FLUMPH_CTL_<KEY>).
RENAMED = {
    "mqtt": "mqtt.url",
    "username": "mqtt.username",
    "password": "mqtt.password",
    "ca_file": "mqtt.ca_file",
    "prefix": "mqtt.prefix",
}


class CtlConfig(StrictModel):
    mqtt: CtlMqtt = Field(
        default_factory=lambda: CtlMqtt(),
        title="the broker and an ops account: the [ctl.mqtt] table",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=3600, title="connect and wait timeout")
    dashboard: str = Field(default="http://127.0.0.1:8000", title="the dashboard's URL (for usage)")
    dashboard_password: str | None = Field(
        default=None, title="the dashboard's operator password (for usage)"
    )

    @field_validator("dashboard")
    @classmethod
    def _dashboard(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v.split("//", 1)[1]) == 0:
            raise ValueError("must be an http:// or https:// URL naming a host")
        return v
