"""Configuration loading shared by every component.

Precedence, lowest to highest: model defaults, a TOML file, ``FLUMPH_*`` environment variables,
command-line flags. Every model forbids unknown keys, so a typo is an error that names the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration source could not be read or did not validate; the message names the key."""


class StrictModel(BaseModel):
    """Base for configuration and settings models: unknown keys are refused, values validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None


def env_overrides(
    model: type[BaseModel], prefix: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Values for the model's top-level fields from ``<prefix><FIELD>`` variables.

    A variable with the prefix that names no field is an error, so ``FLUMPH_INGEST_PROT=1`` is not
    silently ignored.
    """
    env = os.environ if environ is None else environ
    fields = {name.upper(): name for name in model.model_fields}
    out: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name not in fields:
            raise ConfigError(
                f"environment variable {key} names no setting (known: "
                + ", ".join(prefix + f for f in sorted(fields))
                + ")"
            )
        out[fields[name]] = value
    return out


# Keys whose values are never echoed in an error: messages end up in logs and on MQTT topics.
_SECRET_KEY_RE = re.compile(r"pass|secret|token|credential|private|(^|_)key($|_)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """A password, passphrase, secret or token; a path to a file holding one is not."""
    if key.endswith(("_file", "_path", "_dir")):
        return False
    return bool(_SECRET_KEY_RE.search(key))


def format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        elif any(is_secret_key(str(x)) for x in e["loc"]):
            parts.append(f"{key}: {e['msg']} (value not shown: it is a secret)")
        else:
            parts.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid configuration in {source}: " + "; ".join(parts)


def load_config(
    model: type[M],
    *,
    path: str | Path | None = None,
    section: str | None = None,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> M:
    """Build ``model`` from defaults < TOML file (optionally one ``[section]``) < env < flags.

    ``flags`` holds only the options the user actually gave (None values are dropped).
    """
    data: dict[str, Any] = {}
    sources = []
    if path is not None:
        doc = read_toml(path)
        if section is not None:
            doc = doc.get(section, {})
            if not isinstance(doc, dict):
                raise ConfigError(f"config file {path}: [{section}] must be a table")
        data.update(doc)
        sources.append(str(path))
    if env_prefix is not None:
        data.update(env_overrides(model, env_prefix, environ))
        sources.append(f"{env_prefix}* environment")
    if flags:
        data.update({k: v for k, v in flags.items() if v is not None})
        sources.append("flags")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, " + ".join(sources) or "defaults")) from None
