"""MQTT connection settings and a configured paho client, shared by agent, backend and ctl.

One settings model for every component, the same TOML shape everywhere: a ``[<component>.mqtt]``
table (``FLUMPH_<COMPONENT>_MQTT_<KEY>`` variables). Components whose defaults differ (a backend
on a fixed line reconnects sooner) subclass it to change a default, never the keys.

paho-mqtt 2.x, callback API v2, MQTT 3.1.1 so that every broker (the embedded amqtt one,
mosquitto, EMQX, VerneMQ) works. paho runs its network loop in its own thread
(``loop_start``); asyncio users hop back onto their loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import random
import ssl
import urllib.parse
import uuid
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from flumph.config import StrictModel
from flumph.control import PREFIX_RE
from flumph.mqttwatch import BACKEND_RECONNECT_MAX_S

if TYPE_CHECKING:
    import paho.mqtt.client as paho

# Why 360 s: measured on the wire (bench/control_idle.py), a keepalive exchange costs 160 B at IP
# level and the agent's hourly idle heartbeat 266 B, so an idle device costs 1.87 KB/h at 360 s
# (2.19 KB/h at 300 s; paho's 60 s default: 9.6 KB/h); cellular NATs usually keep an idle TCP
# mapping longer than that. The price is presence: a device that dies silently shows offline
# after 1.5 x keepalive (the broker's will: 9 minutes).
DEFAULT_KEEPALIVE_S = 360


class MqttSettings(StrictModel):
    url: str = Field(
        default="mqtt://127.0.0.1:1883", title="broker URL: mqtt://host:port or mqtts://"
    )
    username: str | None = Field(default=None, title="username")
    password: str | None = Field(default=None, title="password")
    ca_file: str | None = Field(default=None, title="CA bundle for mqtts:// (default: system CAs)")
    keepalive_s: int = Field(default=DEFAULT_KEEPALIVE_S, ge=5, le=3600, title="MQTT keepalive")
    prefix: str = Field(default="flumph", title="topic prefix")
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60, title="first reconnect delay")
    reconnect_max_s: float = Field(default=120.0, gt=0, le=3600, title="longest reconnect delay")
    reconnect_jitter: bool = Field(
        default=True,
        title="random reconnect delays, so a fleet does not reconnect in lockstep after a "
        "broker restart",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parsed = urllib.parse.urlsplit(v)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parsed.hostname:
            raise ValueError(f"{v!r} is not mqtt://host[:port] or mqtts://host[:port]")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not PREFIX_RE.fullmatch(v):
            raise ValueError("must be letters, digits, '-', '_', '/'")
        return v

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def tls(self) -> bool:
        return urllib.parse.urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or (8883 if self.tls else 1883)


class BackendMqttSettings(MqttSettings):
    """A backend service's broker connection (ingest, dashboard): the broker sits beside it, so
    it retries every few seconds and says so each time, where a device keeps its longer backoff."""

    reconnect_max_s: float = Field(
        default=BACKEND_RECONNECT_MAX_S, gt=0, le=3600, title="longest reconnect delay"
    )


def flat_mqtt_keys(prefix: str = "mqtt_") -> dict[str, str]:
    """The flattened keys configs used before the ``mqtt`` table (``mqtt_url``), mapped to their
    place in it (``mqtt.url``), for :func:`flumph.config.load_config`'s ``renamed``."""
    return {f"{prefix}{key}": f"mqtt.{key}" for key in MqttSettings.model_fields}


def next_reconnect_delay(
    previous: float | None, low: float, high: float, rng: random.Random
) -> float:
    """Decorrelated jitter (AWS architecture blog, "Exponential Backoff And Jitter"): each delay
    is drawn from [low, 3 x the previous one], capped at ``high``. paho's own backoff doubles a
    fixed delay, so every client that lost the same broker retries at the same instants."""
    base = low if previous is None else previous
    return min(high, rng.uniform(low, max(low, base * 3)))


_JITTERED: dict[str, type[paho.Client]] = {}


def _jittered_client() -> type[paho.Client]:
    """paho's Client with jittered reconnect delays (built on first use: paho is optional)."""
    if "cls" not in _JITTERED:
        import paho.mqtt.client as paho

        class JitteredClient(paho.Client):
            _flumph_rng = random.Random()

            def _reconnect_wait(self) -> None:
                # paho waits min(2 x _reconnect_delay, max) (min on the first try, when it is
                # None; a CONNACK resets it to None). Hand it half our delay and let it wait.
                previous = self._reconnect_delay
                delay = next_reconnect_delay(
                    previous,
                    self._reconnect_min_delay,
                    self._reconnect_max_delay,
                    self._flumph_rng,
                )
                self._reconnect_delay = delay / 2  # type: ignore[assignment]
                super()._reconnect_wait()

        _JITTERED["cls"] = JitteredClient
    return _JITTERED["cls"]


def make_client(settings: MqttSettings, client_id: str | None = None) -> paho.Client:
    """A paho client configured from ``settings``; the caller sets callbacks, will, connects."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    if settings.reconnect_jitter and hasattr(paho.Client, "_reconnect_wait"):
        client_class: type[paho.Client] = _jittered_client()
    else:
        client_class = paho.Client
    client = client_class(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"flumph-{uuid.uuid4().hex[:12]}",
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        ctx = ssl.create_default_context(cafile=settings.ca_file)
        client.tls_set_context(ctx)
    if settings.reconnect_jitter:
        # Fractions of a second matter once the delays are random.
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
    else:
        client.reconnect_delay_set(
            min_delay=max(1, round(settings.reconnect_min_s)),
            max_delay=max(1, round(settings.reconnect_max_s)),
        )
    return client
