"""Messages between components tolerate a newer peer; what people send stays strict; errors
never echo a secret."""

from __future__ import annotations

import json

import pytest

from flumph.agent.main import AgentConfig
from flumph.config import ConfigError, is_secret_key, load_config
from flumph.control import (
    CONTRACT_VERSION,
    Ack,
    Command,
    ContractError,
    Demand,
    Message,
    Reported,
    Status,
    Telemetry,
    decode,
    decode_desired,
    decode_patch,
)

NEWER = {"field_from_the_future": {"nested": [1, 2]}, "another": "x"}


@pytest.mark.parametrize(
    ("model", "doc"),
    [
        (Status, {"state": "online", "contract": CONTRACT_VERSION + 1}),
        (Reported, {"applied_v": 3, "settings": {"fps": 15}}),
        (Telemetry, {"streaming": True, "fps": 15.0}),
        (Ack, {"id": "a1", "ok": True}),
        (Demand, {"viewers": 2}),
    ],
)
def test_a_newer_peers_unknown_fields_are_ignored(
    model: type[Message], doc: dict[str, object]
) -> None:
    msg: Message = decode(model, json.dumps(doc | NEWER))
    assert "field_from_the_future" not in msg.model_dump()
    for key, value in doc.items():
        assert getattr(msg, key) == value


def test_what_people_send_stays_strict() -> None:
    with pytest.raises(ContractError, match="field_from_the_future: unknown key"):
        decode(Command, json.dumps({"id": "c1"} | NEWER))
    with pytest.raises(ContractError, match=r"unknown setting.*field_from_the_future"):
        decode_patch(json.dumps({"fps": 10} | NEWER))
    with pytest.raises(ContractError, match=r"unknown setting.*field_from_the_future"):
        decode_desired(json.dumps({"v": 2, "fps": 10} | NEWER))


def test_known_fields_are_still_checked_by_a_tolerant_reader() -> None:
    with pytest.raises(ContractError, match="viewers"):
        decode(Demand, json.dumps({"viewers": -1} | NEWER))


def test_the_birth_carries_the_contract_version() -> None:
    status = Status(state="online", contract=CONTRACT_VERSION)
    assert json.loads(status.payload())["contract"] == CONTRACT_VERSION


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("mqtt_password", True),
        ("passphrase", True),
        ("auth_secret", True),
        ("api_token", True),
        ("private_key", True),
        ("password_file", False),
        ("passwd_file", False),
        ("device_id", False),
        ("keyint_s", False),
        ("bitrate_kbps", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_a_bad_secret_is_named_but_never_echoed() -> None:
    # Too short for SRT's AES (10..79 characters): the error names the key, not the value.
    with pytest.raises(ConfigError) as info:
        load_config(
            AgentConfig,
            flags={"device_id": "cam1", "passphrase": "hunter2"},
        )
    message = str(info.value)
    assert "passphrase" in message
    assert "hunter2" not in message
    assert "not shown" in message
