"""What people send to change a device's settings, strict: ``set`` patches (with their
``client_token``) and the retained ``desired`` document the backend merges them into.

An unknown key or a wrong type is refused with :class:`~flumph.control.wire.PatchError`, whose
``fields`` name the keys at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from flumph.config import format_validation_error
from flumph.control.wire import ContractError, Message, PatchError, decode, json_object
from flumph.settings import StreamSettings

SETTINGS_KEYS = frozenset(StreamSettings.model_fields)


def validate_patch(patch: dict[str, Any], what: str = "patch") -> dict[str, Any]:
    """Check a partial settings document: known keys, each value valid on its own.

    Raises :class:`PatchError` whose ``fields`` are the keys at fault."""
    unknown = sorted(set(patch) - SETTINGS_KEYS)
    if unknown:
        raise PatchError(
            f"{what}: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(SETTINGS_KEYS))})",
            tuple(unknown),
        )
    try:
        # Validate against the defaults so every given value is checked with the real bounds.
        merged = StreamSettings().model_dump() | patch
        StreamSettings.model_validate(merged, strict=True)
    except ValidationError as e:
        fields = tuple(sorted({str(err["loc"][0]) for err in e.errors() if err["loc"]}))
        raise PatchError(format_validation_error(e, what), fields) from None
    return patch


def decode_patch(payload: bytes | str) -> dict[str, Any]:
    doc = json_object(payload, "patch")
    doc.pop("v", None)  # a client echoing a version in a patch is harmless
    return validate_patch(doc)


CLIENT_TOKEN = "client_token"
CLIENT_TOKEN_MAX = 64


@dataclass(frozen=True)
class SetRequest:
    """One message on ``<p>/<dev>/set``: the patch, and the token its answer echoes."""

    patch: dict[str, Any]
    client_token: str | None = None


def _client_token(doc: dict[str, Any]) -> str | None:
    token = doc.get(CLIENT_TOKEN)
    if token is None:
        return None
    if not isinstance(token, str) or not 1 <= len(token) <= CLIENT_TOKEN_MAX:
        raise PatchError(
            f"patch: {CLIENT_TOKEN} must be a string of 1-{CLIENT_TOKEN_MAX} characters",
            (CLIENT_TOKEN,),
        )
    return token


def decode_set(payload: bytes | str) -> SetRequest:
    """A ``set`` message: a patch plus an optional ``client_token``; raises PatchError."""
    try:
        doc = json_object(payload, "patch")
    except ContractError as e:
        raise PatchError(str(e)) from None
    token = _client_token(doc)
    doc.pop(CLIENT_TOKEN, None)
    doc.pop("v", None)  # a client echoing a version in a patch is harmless
    return SetRequest(validate_patch(doc), token)


def client_token_of(payload: bytes | str | None) -> str | None:
    """The ``client_token`` of a set message, if it has a valid one, even when the rest is
    refused (so that its rejection can be matched); never raises."""
    if not payload:
        return None
    try:
        return _client_token(json_object(payload, "patch"))
    except ContractError:
        return None


class Desired(Message):
    """The settings a device should have: a version and a partial settings document."""

    model_config = ConfigDict(extra="allow")
    v: int = Field(ge=0)

    def settings_patch(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def apply_to(self, base: StreamSettings) -> StreamSettings:
        """The device's settings under this document; raises ContractError naming the field."""
        patch = validate_patch(self.settings_patch(), "desired")
        try:
            return StreamSettings.model_validate(base.model_dump() | patch, strict=True)
        except ValidationError as e:
            raise ContractError(format_validation_error(e, "desired")) from None


def decode_desired(payload: bytes | str) -> Desired:
    d = decode(Desired, payload)
    validate_patch(d.settings_patch(), "desired")
    return d


def merge_desired(current: Desired | None, patch: dict[str, Any]) -> Desired:
    """Shadow merge: the patch over the current document, version + 1."""
    validate_patch(patch)
    base = current.settings_patch() if current is not None else {}
    version = current.v + 1 if current is not None else 1
    return Desired.model_validate({**base, **patch, "v": version})
