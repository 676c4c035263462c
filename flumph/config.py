"""Configuration loading shared by every component.

Precedence, lowest to highest: model defaults, a TOML file, ``FLUMPH_*`` environment variables,
command-line flags. Every model forbids unknown keys, so a typo is an error that names the key.

A field whose type is itself a model is a nested table (``[dashboard.mqtt]``) with variables
``<PREFIX><FIELD>_<KEY>`` (``FLUMPH_DASHBOARD_MQTT_URL``) and dotted flags (``mqtt.url``); the
sources are merged key by key, so one variable or flag does not replace the whole table. Keys
that moved keep working for a while (``renamed``): read at their new place and told once per
process, naming the new key.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("flumph.config")

M = TypeVar("M", bound=BaseModel)
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A configuration source could not be read or did not validate; the message names the key."""


class StrictModel(BaseModel):
    """Base for configuration and settings models: unknown keys are refused, values validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    except RecursionError:
        # tomllib recurses per level of nested arrays and inline tables.
        raise ConfigError(f"config file {p}: arrays or tables nested too deeply") from None


def table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested-table field (``MqttSettings``, ``MqttSettings | None``), or None."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def env_names(model: type[BaseModel], prefix: str) -> dict[str, tuple[str, ...]]:
    """Every variable the model reads: ``<prefix><FIELD>``, and ``<prefix><FIELD>_<KEY>`` for
    each key of a nested table, mapped to where its value goes."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        nested = table_model(field.annotation)
        if nested is None:
            out[prefix + name.upper()] = (name,)
        else:
            for key in nested.model_fields:
                out[f"{prefix}{name.upper()}_{key.upper()}"] = (name, key)
    return out


def env_overrides(
    model: type[BaseModel],
    prefix: str,
    environ: Mapping[str, str] | None = None,
    renamed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Values for the model's fields (nested tables as dicts) from ``<prefix>…`` variables.

    A variable with the prefix that names no field is an error, so ``FLUMPH_INGEST_PROT=1`` is not
    silently ignored. A variable named after a ``renamed`` key still works, told once.
    """
    env = os.environ if environ is None else environ
    known = env_names(model, prefix)
    old = {
        prefix + key.upper(): tuple(new.split("."))
        for key, new in (renamed or {}).items()
        if prefix + key.upper() not in known
    }
    out: dict[str, Any] = {}
    for var, value in env.items():
        if not var.startswith(prefix):
            continue
        if var in known:
            where = known[var]
        elif var in old:
            where = old[var]
            new_var = prefix + "_".join(where).upper()
            _tell_once(var, f"environment variable {var} is deprecated: use {new_var}")
            if new_var in env:
                raise ConfigError(f"give {new_var} or the older {var}, not both")
        else:
            raise ConfigError(
                f"environment variable {var} names no setting (known: "
                + ", ".join(sorted(known))
                + ")"
            )
        _put(out, where, value)
    return out


_told: set[str] = set()


def _tell_once(key: str, message: str) -> None:
    if key not in _told:
        _told.add(key)
        log.warning("%s", message)


def _put(data: dict[str, Any], where: tuple[str, ...], value: Any) -> None:
    for part in where[:-1]:
        table = data.setdefault(part, {})
        if not isinstance(table, dict):
            # A scalar where a table belongs: let validation name it.
            return
        data = table
    data[where[-1]] = value


def _merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Key by key into nested tables, so a flag does not replace the whole table."""
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def apply_renames(
    doc: dict[str, Any], renamed: Mapping[str, str], section: str | None, source: str
) -> dict[str, Any]:
    """``doc`` with each old key moved to its new dotted place (``mqtt_url`` → ``mqtt.url``).

    An old key whose name is also the new table (ctl's ``mqtt = "URL"``) moves only when it is
    not a table. Giving a key at both places is an error naming both.
    """
    out = dict(doc)
    table = f"[{section}]" if section else "the top level"
    for old, new in renamed.items():
        if old not in out or isinstance(out[old], dict):
            continue
        value = out.pop(old)
        where = tuple(new.split("."))
        new_table = ".".join(filter(None, [section, *where[:-1]]))
        _tell_once(
            f"{source}:{section}:{old}",
            f"config file {source}: {table} {old} is deprecated: use [{new_table}] {where[-1]}",
        )
        target: Any = out
        for part in where[:-1]:
            target = target.get(part, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict) and where[-1] in target:
            raise ConfigError(
                f"config file {source}: give [{new_table}] {where[-1]} or the older {old}, not both"
            )
        if isinstance(out.get(where[0]), dict):
            out[where[0]] = dict(out[where[0]])
        _put(out, where, value)
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
        elif e["type"] == "missing":
            # Its input is the whole enclosing table, secrets and all: never shown.
            parts.append(f"{key}: {e['msg']}")
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
    renamed: Mapping[str, str] | None = None,
) -> M:
    """Build ``model`` from defaults < TOML file (optionally one ``[section]``) < env < flags.

    ``flags`` holds only the options the user actually gave (None values are dropped); a dotted
    flag (``"mqtt.url"``) sets one key of a nested table, a plain one replaces the field whole.
    ``renamed`` maps keys that moved to their new dotted place
    (``{"mqtt_url": "mqtt.url"}``), in the file and as variables.
    """
    data: dict[str, Any] = {}
    sources = []
    if path is not None:
        doc = read_toml(path)
        if section is not None:
            doc = doc.get(section, {})
            if not isinstance(doc, dict):
                raise ConfigError(f"config file {path}: [{section}] must be a table")
        if renamed:
            doc = apply_renames(doc, renamed, section, str(path))
        _merge(data, doc)
        sources.append(str(path))
    if env_prefix is not None:
        _merge(data, env_overrides(model, env_prefix, environ, renamed))
        sources.append(f"{env_prefix}* environment")
    if flags:
        for key, value in flags.items():
            if value is not None:
                _put(data, tuple(key.split(".")), value)
        sources.append("flags")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, " + ".join(sources) or "defaults")) from None
