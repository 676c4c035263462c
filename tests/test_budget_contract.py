"""The data-budget parts of the MQTT contract and the settings: grant, budget, usage, birth."""

from __future__ import annotations

import json

import pytest

from flumph.control import (
    Budget,
    Command,
    ContractError,
    Grant,
    Reported,
    Status,
    Telemetry,
    Topics,
    Usage,
    decode,
    decode_command,
    decode_patch,
)


def test_grant_command_topic_and_payload() -> None:
    assert Topics().cmd("cam1", "grant") == "flumph/cam1/cmd/grant"
    grant = decode_command("grant", b'{"id": "g1", "mb": 2.5}')
    assert isinstance(grant, Grant) and grant.mb == 2.5
    assert type(decode_command("keyframe", b'{"id": "k1"}')) is Command


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b'{"id": "g"}', "mb: Field required"),
        (b'{"id": "g", "mb": 0}', "mb: Input should be greater than 0"),
        (b'{"id": "g", "mb": -1}', "mb: Input should be greater than 0"),
        (b'{"id": "g", "mb": true}', "mb: Input should be a valid number"),
        (b'{"id": "g", "mb": "5"}', "mb: Input should be a valid number"),
        (b'{"id": "g", "mb": 1e12}', "mb: Input should be less than or equal to"),
        (b'{"id": "g", "mb": 1, "gb": 1}', "gb: unknown key"),
    ],
)
def test_bad_grants_are_refused_by_name(payload: bytes, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        decode_command("grant", payload)


def test_a_grant_amount_on_another_command_is_refused() -> None:
    with pytest.raises(ContractError, match="mb: unknown key"):
        decode_command("keyframe", b'{"id": "k", "mb": 1}')


def test_budget_settings_in_patches() -> None:
    patch = decode_patch(b'{"data_budget_mb": 500, "budget_reset_day": 15, "budget_pacing": true}')
    assert patch["data_budget_mb"] == 500
    assert decode_patch(b'{"data_budget_mb": null}') == {"data_budget_mb": None}
    for bad, fragment in [
        (b'{"data_budget_mb": 0}', "data_budget_mb: Input should be greater than 0"),
        (b'{"budget_reset_day": 29}', "budget_reset_day: Input should be less than or equal to 28"),
        (b'{"budget_reset_day": 0}', "budget_reset_day: Input should be greater than or equal"),
    ]:
        with pytest.raises(ContractError, match=fragment):
            decode_patch(bad)


def test_budget_and_usage_round_trip_in_birth_reported_and_telemetry() -> None:
    usage = Usage(
        month="2027-01",
        bytes_sent=900,
        bytes_received=100,
        budget_bytes=2_000_000,
        period_start=1798761600.0,
        by_kind={"srt": 800, "mqtt": 150, "snapshot": 50},
    )
    budget = Budget(
        state="warn",
        used_bytes=1_700_000,
        budget_bytes=1_000_000,
        allowance_bytes=1_000_000,
        period_start=1798761600.0,
        resets_at=1801440000.0,
        cap_kbps=None,
    )
    birth = decode(Status, Status(state="online", usage=usage).payload())
    assert birth.usage == usage
    assert decode(Reported, Reported(budget=budget).payload()).budget == budget
    doc = json.loads(Telemetry(streaming=False, usage=usage, budget=budget).payload())
    assert doc["budget"]["state"] == "warn" and doc["usage"]["by_kind"]["snapshot"] == 50
    with pytest.raises(ContractError, match=r"budget\.state"):
        decode(Reported, b'{"budget": {"state": "late", "used_bytes": 0, '
               b'"period_start": 0, "resets_at": 1}}')  # fmt: skip
