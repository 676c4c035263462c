"""Login backoff and session revocation as pure functions of a clock (the real dashboard is
tested in tests/test_dashboard_auth.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flumph import auth
from flumph.dashboard.throttle import CAP_S, LoginThrottle, backoff_s

NOW = 1_800_000_000.0
SESSION: tuple[auth.TokenKind, ...] = ("session",)
SECRET = "a-secret-of-enough-length"


def test_a_few_free_failures_then_doubling_waits_capped() -> None:
    assert [backoff_s(n, free=5) for n in range(1, 13)] == [
        0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30,
    ]  # fmt: skip


@given(st.lists(st.floats(0, 120), min_size=1, max_size=200))
def test_the_right_password_never_waits_more_than_the_cap(gaps: list[float]) -> None:
    """Whatever an attacker does from the operator's address and from others, the wait that
    the right password meets is at most CAP_S."""
    t = LoginThrottle()
    now = NOW
    for i, gap in enumerate(gaps):
        now += gap
        address = "operator-nat" if i % 2 else f"bot-{i % 7}"
        if t.retry_after(address, "operator", now) == 0:
            t.failed(address, "operator", now)
        assert t.retry_after("operator-nat", "operator", now) <= CAP_S


def test_addresses_are_throttled_apart_and_the_account_across_them() -> None:
    t = LoginThrottle()
    for i in range(6):
        t.failed("a", "operator", NOW + i * 0.01)
    assert t.retry_after("a", "operator", NOW + 0.1) > 0
    assert t.retry_after("b", "operator", NOW + 0.1) == 0  # the account has 20 free
    now = NOW + 1
    for i in range(20):  # spread over many addresses: the account key catches it
        t.failed(f"x{i}", "operator", now)
    assert t.retry_after("c", "operator", now) > 0
    t.succeeded("c", "operator")
    assert t.retry_after("c", "operator", now) == 0
    # Forgotten after a quiet quarter of an hour.
    assert t.retry_after("a", "operator", NOW + 10_000) == 0


def test_the_table_is_bounded() -> None:
    t = LoginThrottle(table=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}", "operator", NOW)
    assert len(t._keys) <= 100


def test_revoked_tokens_are_refused_until_they_expire_and_the_list_is_bounded() -> None:
    r = auth.Revocations(limit=3)
    tokens = [auth.issue(SECRET, "session", 60 + i, now=NOW) for i in range(5)]
    auth.verify(SECRET, tokens[0], SESSION, now=NOW, revoked=r)
    r.revoke(tokens[0], int(NOW) + 60, now=NOW)
    try:
        auth.verify(SECRET, tokens[0], SESSION, now=NOW + 1, revoked=r)
        raise AssertionError("a revoked token was accepted")
    except auth.AuthError as e:
        assert "logged out" in str(e)
    for i, tok in enumerate(tokens[1:], start=1):
        r.revoke(tok, int(NOW) + 60 + i, now=NOW)
    assert len(r) == 3  # the ones closest to expiry went first
    assert r.revoked(tokens[4]) and not r.revoked(tokens[0])
    r.revoke("expired", int(NOW) - 1, now=NOW)
    assert not r.revoked("expired")
