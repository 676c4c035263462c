"""Settings of the embedded broker: the ``[broker]`` TOML table, ``FLUMPH_BROKER_*`` variables,
``flumph broker`` flags (in that order of precedence, lowest first)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from flumph.config import ConfigError, StrictModel
from flumph.control import ContractError, Topics
from flumph.logsetup import LOG_LEVELS

from .acl import DEFAULT_ADMINS

ENV_PREFIX = "FLUMPH_BROKER_"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flumph" / "broker"


class BrokerSettings(StrictModel):
    host: str = Field("0.0.0.0", title="MQTT bind address")
    port: int = Field(1883, ge=0, le=65535, title="MQTT TCP port (0: any free port)")
    ws_port: int | None = Field(None, ge=0, le=65535, title="MQTT over WebSockets port (off)")
    passwd_file: Path | None = Field(None, title="username:argon2-hash file")
    allow_anonymous: bool | None = Field(
        None, title="accept clients without username (default: only without passwd_file)"
    )
    acl: bool = Field(True, title="devices reach only <prefix>/<username>/... (with passwd_file)")
    admin_users: list[str] = Field(list(DEFAULT_ADMINS), title="accounts that reach every topic")
    prefix: str = Field("flumph", title="topic prefix of the device tree")
    state_dir: Path = Field(default_factory=default_state_dir, title="where retained messages live")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, title="time to send CONNECT after TCP")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, title="serve Prometheus /metrics on this HTTP port (off)"
    )
    metrics_host: str = Field("127.0.0.1", title="bind address of the /metrics port")
    log_level: str = Field("info", title="debug, info, warning or error")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        try:
            Topics(v)
        except ContractError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("admin_users", mode="before")
    @classmethod
    def _admins(cls, v: object) -> object:
        # FLUMPH_BROKER_ADMIN_USERS=flumph-backend,flumph-ops
        return [u.strip() for u in v.split(",") if u.strip()] if isinstance(v, str) else v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return v.lower()

    @model_validator(mode="after")
    def _anonymous(self) -> BrokerSettings:
        if self.passwd_file is None and self.allow_anonymous is False:
            raise ValueError(
                "allow_anonymous=false needs a passwd_file, or no client could ever log in"
            )
        if self.ws_port is not None and self.ws_port != 0 and self.ws_port == self.port:
            raise ValueError(f"ws_port {self.ws_port} is the same as port")
        return self

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.passwd_file is None

    @property
    def acl_enforced(self) -> bool:
        """Without a password file anybody may claim any username, so an ACL would be theatre."""
        return self.acl and self.passwd_file is not None


def check_settings(settings: BrokerSettings) -> dict[str, str]:
    """Read what the settings point at; returns the users. Raises ConfigError naming the key."""
    from .passwd import PasswdError, read_passwd_file

    if settings.passwd_file is None:
        return {}
    try:
        return read_passwd_file(settings.passwd_file)
    except PasswdError as e:
        raise ConfigError(f"passwd_file: {e}") from None
