"""`flumph ctl set`'s wait as a pure state machine: fed messages, it decides."""

from __future__ import annotations

import json

from flumph.ctl.setwait import SetWait


def msg(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_accepted_then_applied() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("status", msg(state="online"), True) is None
    assert w.feed("reported", msg(applied_v=3), True) is None
    assert w.feed("set/accepted", msg(v=4, patch={}, client_token="other"), False) is None
    assert w.feed("set/accepted", msg(v=5, patch={"fps": 9}, client_token="tok"), False) is None
    assert w.feed("reported", msg(applied_v=4), False) is None  # another tool's version
    out = w.feed("reported", msg(applied_v=5), False)
    assert out is not None and out.ok and out.message == "cam1 applied v5"


def test_no_wait_ends_at_the_answer() -> None:
    w = SetWait("cam1", "tok", wait_applied=False)
    out = w.feed("set/accepted", msg(v=2, patch={}, client_token="tok"), False)
    assert out is not None and out.ok and "accepted as v2" in out.message


def test_rejections_of_others_are_not_ours() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("set/rejected", msg(error="fps: bad", client_token=None), False) is None
    assert w.feed("set/rejected", msg(error="fps: bad", client_token="x"), False) is None
    out = w.feed(
        "set/rejected", msg(error="codec: no", fields=["codec"], client_token="tok"), False
    )
    assert out is not None and not out.ok
    assert out.message == "cam1 refused the patch: codec: no"


def test_offline_device_ends_the_wait_with_the_reason() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("status", msg(state="offline"), True) is None  # before the answer
    out = w.feed("set/accepted", msg(v=7, patch={}, client_token="tok"), False)
    assert out is not None and not out.ok
    assert "accepted as v7, but cam1 is offline" in out.message


def test_a_fresh_device_error_ends_it_a_retained_one_does_not() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("reported", msg(applied_v=1, error="old trouble"), True) is None
    assert w.feed("set/accepted", msg(v=2, patch={}, client_token="tok"), False) is None
    out = w.feed("reported", msg(applied_v=1, error="desired v2: cannot apply codec"), False)
    assert out is not None and not out.ok
    assert out.message == "cam1 did not apply v2: desired v2: cannot apply codec"


def test_a_device_error_may_come_before_the_answer_and_must_be_about_our_version() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("reported", msg(applied_v=1, error="desired v2: no encoder"), False) is None
    out = w.feed("set/accepted", msg(v=2, patch={}, client_token="tok"), False)
    assert (
        out is not None and not out.ok and "did not apply v2: desired v2: no encoder" in out.message
    )
    w = SetWait("cam1", "tok")
    assert w.feed("reported", msg(applied_v=1, error="desired v2: no encoder"), False) is None
    # Another tool's v2 failed; ours is v3, still to come.
    assert w.feed("set/accepted", msg(v=3, patch={}, client_token="tok"), False) is None
    assert w.feed("reported", msg(applied_v=3), False).ok  # type: ignore[union-attr]


def test_malformed_messages_are_ignored_and_timeouts_explain() -> None:
    w = SetWait("cam1", "tok")
    assert w.feed("set/accepted", b"{not json", False) is None
    assert w.feed("reported", b'{"applied_v": "x"}', False) is None
    assert w.feed("desired", msg(v=1), True) is None  # not a kind it follows
    assert "no answer on set/accepted or set/rejected within 3 s" in w.timed_out(3).message
    w.feed("set/accepted", msg(v=4, patch={}, client_token="tok"), False)
    assert "never reported" in w.timed_out(3).message
    w.feed("reported", msg(applied_v=3), False)
    assert "reports v3 and did not apply v4 within 3 s" in w.timed_out(3).message
