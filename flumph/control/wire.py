"""The wire's basics for every control message: the contract's errors, version and limits, the
two kinds of message (tolerant :class:`Message`, strict :class:`Request`) and :func:`decode`.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from flumph.config import format_validation_error
from flumph.jsonlimits import JsonLimitError, loads_object

MAX_PAYLOAD = 64 * 1024  # control documents; snapshots are images and not parsed here
MAX_DEPTH = 16  # nesting of a control document; the deepest one Flumph sends has 3 levels


class ContractError(ValueError):
    """A topic or payload that does not follow the contract; the message names the problem."""


class PatchError(ContractError):
    """A settings patch that cannot be merged; ``fields`` names the keys at fault (none for a
    payload that is not a JSON object at all)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


# The contract's version, sent once per connection in the device's birth (``Status.contract``).
# Messages between components are tolerant readers: a newer peer's unknown fields are ignored, so
# a fleet upgrades one device at a time. A change that an older reader would misread (a field
# whose meaning changes) bumps this number instead of reusing the field.
CONTRACT_VERSION = 1


class Message(BaseModel):
    """A message one component sends another (status, reported, telemetry, ack, demand)."""

    model_config = ConfigDict(extra="ignore")

    def payload(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()


class Request(Message):
    """What people and their tools send (commands): strict, an unknown key is refused by name."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=Message)


def json_object(payload: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object within the contract's size and depth limits; ContractError otherwise."""
    try:
        return loads_object(payload, what, max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except JsonLimitError as e:
        raise ContractError(str(e)) from None


def decode(model: type[M], payload: bytes | str) -> M:
    what = model.__name__.lower()
    doc = json_object(payload, what)
    try:
        # Strict: a wire value is taken as the type it is (no true -> 1, no "yes" -> True).
        return model.model_validate(doc, strict=True)
    except ValidationError as e:
        raise ContractError(format_validation_error(e, what)) from None


def now() -> float:
    return round(time.time(), 3)
