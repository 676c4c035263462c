"""The MQTT contract as pure code: topics, payload validation, shadow merge."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flumph.control import (
    Ack,
    Command,
    ContractError,
    Desired,
    ParsedTopic,
    Status,
    Topics,
    decode,
    decode_desired,
    decode_patch,
    merge_desired,
)
from flumph.settings import StreamSettings

T = Topics()


def test_topics_round_trip() -> None:
    assert T.status("cam1") == "flumph/cam1/status"
    assert T.cmd("cam1", "snapshot") == "flumph/cam1/cmd/snapshot"
    assert T.every("cmd") == "flumph/+/cmd/+"
    assert T.every("reported") == "flumph/+/reported"
    for topic, parsed in [
        ("flumph/cam1/status", ParsedTopic("cam1", "status")),
        ("flumph/cam-2/set", ParsedTopic("cam-2", "set")),
        ("flumph/cam1/cmd/keyframe", ParsedTopic("cam1", "cmd", "keyframe")),
    ]:
        assert T.parse(topic) == parsed
    assert Topics("site/a").desired("x") == "site/a/x/desired"


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("other/cam1/status", "not under prefix"),
        ("flumph/Cam1/status", "must match"),
        ("flumph/cam1/cmd/reboot", "unknown command 'reboot'"),
        ("flumph/cam1/weird", "not one of the contract's topics"),
        ("flumph/cam1", "names no device and kind"),
    ],
)
def test_bad_topics(topic: str, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        T.parse(topic)


def test_patch_validation_names_the_field() -> None:
    assert decode_patch(b'{"streaming": true}') == {"streaming": True}
    with pytest.raises(ContractError, match="bitrate_kbps"):
        decode_patch(b'{"bitrate_kbps": 5}')
    with pytest.raises(ContractError, match=r"unknown setting.*bitrat"):
        decode_patch(b'{"bitrat": 200}')
    with pytest.raises(ContractError, match="not JSON"):
        decode_patch(b"{streaming: true}")
    with pytest.raises(ContractError, match="expected a JSON object"):
        decode_patch(b"[1]")
    with pytest.raises(ContractError, match="not UTF-8"):
        decode_patch(b"\xff\xfe")


def test_shadow_merge_versions_and_keeps_earlier_fields() -> None:
    d1 = merge_desired(None, {"streaming": True})
    assert d1.v == 1 and d1.settings_patch() == {"streaming": True}
    d2 = merge_desired(d1, {"bitrate_kbps": 400})
    assert d2.v == 2 and d2.settings_patch() == {"streaming": True, "bitrate_kbps": 400}
    d3 = decode_desired(d2.payload())
    assert d3 == d2
    applied = d3.apply_to(StreamSettings())
    assert applied.streaming and applied.bitrate_kbps == 400 and applied.fps == 15
    with pytest.raises(ContractError, match="width"):
        merge_desired(d2, {"width": 641})


def test_desired_needs_a_version_and_valid_settings() -> None:
    with pytest.raises(ContractError, match="v: Field required"):
        decode_desired(b'{"streaming": true}')
    with pytest.raises(ContractError, match="codec"):
        decode_desired(b'{"v": 3, "codec": "vp8"}')


def test_messages() -> None:
    s = decode(Status, Status(state="online").payload())
    assert s.state == "online" and s.ts > 0
    with pytest.raises(ContractError, match="state"):
        decode(Status, b'{"state": "sleepy"}')
    with pytest.raises(ContractError, match="id"):
        decode(Command, b'{"id": ""}')
    a = json.loads(Ack(id="x", ok=False, error="bad").payload())
    assert a["ok"] is False and a["error"] == "bad"


@given(st.binary(max_size=200))
def test_fuzz_payloads_only_contract_errors(data: bytes) -> None:
    for fn in (decode_patch, decode_desired, lambda b: decode(Command, b)):
        with contextlib.suppress(ContractError):
            fn(data)


@given(st.text(max_size=80))
def test_fuzz_topics_only_contract_errors(topic: str) -> None:
    with contextlib.suppress(ContractError):
        T.parse(topic)


def test_desired_model_is_exported() -> None:
    assert Desired.model_validate({"v": 0}).settings_patch() == {}
