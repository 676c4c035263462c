"""Hypothesis properties for every parser of outside JSON: the MQTT contract (flumph.control), the
relay protocol (flumph.ingest.relay_protocol) and the shared limits (flumph.jsonlimits).

Whatever the input (arbitrary bytes, any JSON, depth bombs of thousands of levels that pass the
size limits), a parser returns a value or raises its own error (ContractError / ValueError)
whose message names the problem; never RecursionError, never anything else. Wire values are
strict: a boolean is no number, a string no boolean.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flumph import control
from flumph.control import ContractError, Topics
from flumph.ingest import relay_protocol as rp
from flumph.jsonlimits import JsonLimitError, loads, nesting_depth

MESSAGES: list[type[control.Message]] = [
    control.Status, control.Desired, control.Reported, control.Command, control.Grant,
    control.Ack, control.LinkStats, control.Usage, control.Budget, control.Telemetry,
    control.Demand,
]  # fmt: skip

CONTROL_PARSERS: dict[str, Callable[[bytes | str], object]] = {
    **{f"decode({m.__name__})": (lambda p, m=m: control.decode(m, p)) for m in MESSAGES},  # type: ignore[misc]
    "decode_patch": control.decode_patch,
    "decode_desired": control.decode_desired,
    "decode_command(grant)": lambda p: control.decode_command("grant", p),
    "decode_command(keyframe)": lambda p: control.decode_command("keyframe", p),
}
RELAY_PARSERS: dict[str, Callable[[str], object]] = {
    "parse_register": rp.parse_register,
    "parse_subscribe": rp.parse_subscribe,
}

FIELDS = ["v", "id", "ok", "fps", "streaming", "state", "viewers", "settings", "srt", "usage",
          "budget", "type", "stream_id", "wait", "mb", "bitrate_kbps", "by_kind", "x"]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def bomb(depth: int, kind: str, key: str) -> str:
    """A document nesting ``depth`` levels under ``key``, small enough for every size limit."""
    if kind == "arrays":
        inner = "[" * depth + "]" * depth
    elif kind == "objects":
        inner = '{"a":' * depth + "1" + "}" * depth
    else:
        inner = '[{"a":' * (depth // 2) + "1" + "}]" * (depth // 2)
    return "{" + json.dumps(key) + ":" + inner + "}"


def _refused_cleanly(parse: Callable[[Any], object], payload: Any) -> str | None:
    """Parse; None if accepted, the message if refused the expected way."""
    try:
        parse(payload)
    except (ContractError, ValueError) as e:
        assert str(e), "a refusal without a message"
        return str(e)
    return None


# --- depth bombs ---------------------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.integers(17, 5000),
    st.sampled_from(["arrays", "objects", "mixed"]),
    st.sampled_from(FIELDS),
    st.sampled_from(sorted(CONTROL_PARSERS)),
)
def test_control_parsers_refuse_depth_bombs_by_name(
    depth: int, kind: str, key: str, parser: str
) -> None:
    text = bomb(depth, kind, key)
    for payload in (text, text.encode()):
        why = _refused_cleanly(CONTROL_PARSERS[parser], payload)
        assert why is not None and "nested more than" in why, (parser, why)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(5, 1500),
    st.sampled_from(["arrays", "objects", "mixed"]),
    st.sampled_from(["stream_id", "wait", "type", "x"]),
    st.sampled_from(sorted(RELAY_PARSERS)),
)
def test_relay_parsers_refuse_depth_bombs_by_name(
    depth: int, kind: str, key: str, parser: str
) -> None:
    why = _refused_cleanly(RELAY_PARSERS[parser], bomb(depth, kind, key))
    assert why is not None and ("nested more than" in why or "too long" in why), why


def test_the_issue_reproducer_is_refused() -> None:
    with pytest.raises(ContractError, match="nested more than 16 levels"):
        control.decode_patch('{"x":' + "[" * 2000 + "]" * 2000 + "}")


def test_the_depth_limit_is_exact() -> None:
    """A tolerant reader takes a newer peer's unknown field up to the limit, not one level more."""
    at_limit = bomb(control.MAX_DEPTH - 1, "arrays", "x")
    assert nesting_depth(at_limit) == control.MAX_DEPTH
    control.decode(control.Reported, at_limit)
    with pytest.raises(ContractError, match="nested more than"):
        control.decode(control.Reported, bomb(control.MAX_DEPTH, "arrays", "x"))


# --- any input ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(sorted(CONTROL_PARSERS)))
def test_control_parsers_take_any_bytes(payload: bytes, parser: str) -> None:
    _refused_cleanly(CONTROL_PARSERS[parser], payload)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from(sorted(CONTROL_PARSERS)))
def test_control_parsers_take_any_json(doc: Any, parser: str) -> None:
    _refused_cleanly(CONTROL_PARSERS[parser], json.dumps(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | json_values.map(json.dumps), st.sampled_from(sorted(RELAY_PARSERS)))
def test_relay_parsers_take_any_text(text: str, parser: str) -> None:
    _refused_cleanly(RELAY_PARSERS[parser], text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_topic_parser_takes_any_topic(topic: str) -> None:
    _refused_cleanly(Topics().parse, topic)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=2000))
def test_jsonlimits_never_raise_anything_but_its_own_error(data: bytes | str) -> None:
    try:
        loads(data, "doc", max_bytes=1000, max_depth=8)
    except JsonLimitError as e:
        assert str(e).startswith("doc: ")


@given(st.integers(0, 400))
def test_nesting_depth_counts_what_json_would_build(depth: int) -> None:
    text = "[" * depth + "]" * depth
    assert nesting_depth(text) == depth
    assert nesting_depth(json.dumps({"s": text})) == 1  # brackets in a string do not count


# --- strict wire types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"fps": true}', "fps"),
        ('{"bitrate_kbps": false}', "bitrate_kbps"),
        ('{"streaming": "yes"}', "streaming"),
        ('{"streaming": 1}', "streaming"),
        ('{"always_on": "true"}', "always_on"),
        ('{"fps": "15"}', "fps"),
        ('{"keyint_s": true}', "keyint_s"),
    ],
)
def test_patch_values_are_not_coerced(payload: str, field: str) -> None:
    with pytest.raises(ContractError, match=field):
        control.decode_patch(payload)


@pytest.mark.parametrize(
    ("model", "doc", "field"),
    [
        (control.Ack, {"id": "a", "ok": "yes"}, "ok"),
        (control.Demand, {"viewers": True}, "viewers"),
        (control.Telemetry, {"streaming": "no"}, "streaming"),
        (control.Telemetry, {"streaming": True, "width": True}, "width"),
        (control.Desired, {"v": True}, "v"),
        (control.Status, {"state": "online", "provisioned": "yes"}, "provisioned"),
    ],
)
def test_messages_are_not_coerced(
    model: type[control.Message], doc: dict[str, Any], field: str
) -> None:
    with pytest.raises(ContractError, match=field):
        control.decode(model, json.dumps(doc))


def test_numbers_stay_numbers() -> None:
    assert control.decode_patch('{"keyint_s": 2}') == {"keyint_s": 2}  # an int is a fine float
    assert control.decode(control.Telemetry, '{"streaming": true, "fps": 15}').fps == 15.0
