"""Login throttling: exponential backoff per client address and per account, capped low.

Before: 10 wrong passwords from an address locked it out for 300 s, the right password included,
so anybody sharing the operator's address (a NAT, a proxy) could lock the operator out for five
minutes at a time, forever, with ten requests. Now each key (an address, an account) gets a few
free failures, then must wait before its next attempt: 1 s, 2 s, 4 s ... at most ``cap_s``
(30 s). During the wait an attempt is refused unchecked (429 with Retry-After) and does not
count. So guessing is slowed to one try per ``cap_s`` per key, and the operator, with the right
password, never waits longer than ``cap_s``. The account key catches guessing spread over many
addresses; its free allowance is larger so that one noisy address does not slow the others.

Pure: the clock is a parameter. Bounded: the least recently failed keys are forgotten first.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

FREE_PER_ADDRESS = 5
FREE_PER_ACCOUNT = 20
BASE_S = 1.0
CAP_S = 30.0
FORGET_S = 900.0  # a key with no failure for this long starts afresh
TABLE = 4096


@dataclass
class _Key:
    failures: int = 0
    last: float = 0.0
    wait_until: float = 0.0


def backoff_s(failures: int, free: int, base_s: float = BASE_S, cap_s: float = CAP_S) -> float:
    """The wait after the ``failures``-th failure (0 while within the free allowance)."""
    if failures <= free:
        return 0.0
    return min(cap_s, base_s * 2.0 ** (failures - free - 1))


class LoginThrottle:
    def __init__(
        self,
        *,
        free_per_address: int = FREE_PER_ADDRESS,
        free_per_account: int = FREE_PER_ACCOUNT,
        base_s: float = BASE_S,
        cap_s: float = CAP_S,
        forget_s: float = FORGET_S,
        table: int = TABLE,
    ) -> None:
        self.free = {"address": free_per_address, "account": free_per_account}
        self.base_s, self.cap_s, self.forget_s, self.table = base_s, cap_s, forget_s, table
        self._keys: collections.OrderedDict[tuple[str, str], _Key] = collections.OrderedDict()

    def _get(self, kind: str, name: str, now: float) -> _Key | None:
        k = self._keys.get((kind, name))
        if k is not None and now - k.last > self.forget_s:
            del self._keys[(kind, name)]
            return None
        return k

    def retry_after(self, address: str, account: str, now: float) -> float:
        """Seconds before ``account`` may be tried from ``address`` (0: now)."""
        wait = 0.0
        for kind, name in (("address", address), ("account", account)):
            k = self._get(kind, name, now)
            if k is not None:
                wait = max(wait, k.wait_until - now)
        return max(0.0, wait)

    def failed(self, address: str, account: str, now: float) -> None:
        for kind, name in (("address", address), ("account", account)):
            k = self._get(kind, name, now) or _Key()
            k.failures += 1
            k.last = now
            k.wait_until = now + backoff_s(k.failures, self.free[kind], self.base_s, self.cap_s)
            self._keys.pop((kind, name), None)
            self._keys[(kind, name)] = k
        while len(self._keys) > self.table:
            self._keys.popitem(last=False)

    def succeeded(self, address: str, account: str) -> None:
        """The right password: both keys start afresh."""
        self._keys.pop(("address", address), None)
        self._keys.pop(("account", account), None)
