"""The set answers' contract, without a network: topics, the set message with its client_token,
the fields a refusal names, and the answers' wire form (published by a recording stub)."""

from __future__ import annotations

import json

import pytest

from flumph.control import (
    ContractError,
    PatchError,
    SetAccepted,
    SetRejected,
    Topics,
    client_token_of,
    decode,
    decode_set,
)
from flumph.dashboard.set_answers import MAX_ERROR_CHARS, SetAnswers
from flumph.dashboard.shadow import plan_patch

T = Topics()


def test_answer_topics_build_and_parse() -> None:
    assert T.set_accepted("cam1") == "flumph/cam1/set/accepted"
    assert T.set_rejected("cam1") == "flumph/cam1/set/rejected"
    assert T.every("set/accepted") == "flumph/+/set/accepted"
    assert T.parse("flumph/cam1/set/accepted").kind == "set/accepted"
    assert T.parse("flumph/cam1/set/rejected").kind == "set/rejected"
    assert T.parse("flumph/cam1/set").kind == "set"
    for bad in ("flumph/cam1/set/maybe", "flumph/cam1/set/accepted/x", "flumph/cam1/accepted"):
        with pytest.raises(ContractError, match="not one of the contract's topics"):
            T.parse(bad)
    with pytest.raises(ContractError, match="device id"):
        T.set_rejected("Cam 1")


def test_set_message_with_and_without_client_token() -> None:
    assert decode_set(b'{"fps": 12}').patch == {"fps": 12}
    req = decode_set(b'{"fps": 12, "client_token": "ctl-1", "v": 3}')
    assert (req.patch, req.client_token) == ({"fps": 12}, "ctl-1")


@pytest.mark.parametrize(
    ("payload", "fields", "fragment"),
    [
        (b'{"bitrate_kbps": -5}', ("bitrate_kbps",), "bitrate_kbps: Input should be greater"),
        (b'{"codec": "vp9"}', ("codec",), "codec: Input should be"),
        (b'{"fps": "many", "width": 3}', ("fps", "width"), "fps"),
        (b'{"colour": "red", "bogus": 1}', ("bogus", "colour"), "unknown setting(s) bogus, colour"),
        (b'{"fps": 12, "client_token": 7}', ("client_token",), "client_token must be a string"),
        (b'{"client_token": ""}', ("client_token",), "client_token"),
        (b"{fps: 12}", (), "not JSON"),
        (b"[1, 2]", (), "expected a JSON object, got an array"),
        (b"\xff\xfe", (), "not UTF-8"),
    ],
)
def test_refused_set_names_its_fields(
    payload: bytes, fields: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(PatchError) as info:
        decode_set(payload)
    assert info.value.fields == fields
    assert fragment in str(info.value)


def test_client_token_is_found_even_in_a_refused_patch() -> None:
    assert client_token_of(b'{"bitrate_kbps": -5, "client_token": "abc"}') == "abc"
    assert client_token_of(b'{"client_token": 5}') is None
    assert client_token_of(b'{"client_token": "' + b"x" * 65 + b'"}') is None
    assert client_token_of(b"not json") is None
    assert client_token_of(None) is None


def test_shadow_refusals_name_fields() -> None:
    with pytest.raises(PatchError) as info:
        plan_patch(None, {})
    assert info.value.fields == () and "empty" in str(info.value)
    with pytest.raises(PatchError) as info:
        plan_patch(None, {"always_on": True, "streaming": False})
    assert info.value.fields == ("always_on", "streaming")


def test_answers_on_the_wire() -> None:
    sent: list[tuple[str, bytes]] = []
    answers = SetAnswers(T, lambda topic, payload: sent.append((topic, payload)))
    answers.accepted("cam1", 7, {"fps": 12}, "tok")
    answers.rejected(
        "cam1",
        "patch: fps: bad",
        fields=["fps"],
        payload=b'{"fps": 0, "client_token": "t2"}',
    )
    answers.rejected("cam2", "x" * 5000, payload=b"garbage")
    (t1, p1), (t2, p2), (t3, p3) = sent
    assert t1 == "flumph/cam1/set/accepted"
    acc = json.loads(p1)
    assert acc["v"] == 7 and acc["patch"] == {"fps": 12} and acc["client_token"] == "tok"
    assert t2 == "flumph/cam1/set/rejected"
    rej = decode(SetRejected, p2)
    assert (rej.error, rej.fields, rej.client_token) == ("patch: fps: bad", ["fps"], "t2")
    assert t3 == "flumph/cam2/set/rejected"
    long = json.loads(p3)
    assert len(long["error"]) == MAX_ERROR_CHARS and long["client_token"] is None
    assert (answers.accepted_total, answers.rejected_total) == (1, 2)
    with pytest.raises(ContractError):
        answers.rejected("../x", "no")  # no topic for an invalid id, nothing published
    assert len(sent) == 3


def test_answer_readers_are_tolerant() -> None:
    """Ops tools read answers from a backend that may be newer: unknown fields are ignored."""
    acc = decode(SetAccepted, b'{"v": 3, "patch": {}, "ts": 1, "added_later": true}')
    assert acc.v == 3
    rej = decode(SetRejected, b'{"error": "no", "shard": 4}')
    assert rej.error == "no" and rej.fields == []
