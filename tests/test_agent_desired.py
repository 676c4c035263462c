"""The agent's reading of a ``desired`` document over the settings in force, without a broker."""

from __future__ import annotations

import pytest

from flumph.agent.desired import StaleDesired, plan_desired
from flumph.control import ContractError
from flumph.settings import StreamSettings


def test_a_document_changes_only_the_keys_it_names() -> None:
    current = StreamSettings(fps=10)
    change = plan_desired(b'{"v": 3, "streaming": true}', None, current)
    assert change is not None
    assert change.v == 3 and change.changed == ["streaming"]
    assert change.settings.streaming and change.settings.fps == 10
    assert change.what() == "streaming=True"


def test_an_empty_document_is_no_wish() -> None:
    assert plan_desired(b"", 4, StreamSettings()) is None


def test_a_document_not_newer_than_the_applied_one_is_a_replay() -> None:
    with pytest.raises(StaleDesired, match="ignoring desired v4: v4 is applied"):
        plan_desired(b'{"v": 4, "fps": 5}', 4, StreamSettings())
    assert plan_desired(b'{"v": 5, "fps": 5}', 4, StreamSettings()) is not None


def test_an_invalid_setting_is_refused_by_name() -> None:
    with pytest.raises(ContractError, match="fps"):
        plan_desired(b'{"v": 1, "fps": 0}', None, StreamSettings())
    with pytest.raises(ContractError, match="colour"):
        plan_desired(b'{"v": 1, "colour": "red"}', None, StreamSettings())
