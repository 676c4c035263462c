"""Defaults in ``--help`` texts, read from the pydantic models the options feed, so that a help
text cannot promise one default while the code applies another (tests/test_cli_help.py checks
every "default X" in every command's help against the model)."""

from __future__ import annotations

from pydantic import BaseModel


def shown(value: object) -> str:
    """A value as help texts print it: 10.0 → "10", 0.25 → "0.25"."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def default_of(model: type[BaseModel], name: str) -> str:
    """``default X`` for the field ``name`` of ``model``."""
    value = model.model_fields[name].get_default(call_default_factory=True)
    return f"default {shown(value)}"
