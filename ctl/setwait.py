"""What `flumph ctl set` waits for, as a pure state machine fed with MQTT messages.

A patch goes to ``<p>/<dev>/set`` with a fresh ``client_token``. The backend answers on
``set/accepted`` (the version ``v`` it merged into ``desired``) or ``set/rejected`` (why); the
answer carrying our token is ours, whatever else other tools send at the same time. Then, unless
told not to wait, the device must report ``applied_v`` ≥ ``v`` on ``reported``. Early ends, each
with its reason: the patch was rejected; the device is offline (its retained ``status``: the
version waits in ``desired`` until it reconnects); the device reported an error without applying
``v`` (a fresh ``reported``, not the retained one from before our patch; it may arrive before the
backend's answer, which travels another connection; an error that names another version,
``desired v6: …``, is not about ours).

No network and no clock here: :class:`SetWait` is fed messages and says when it is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flumph.control import (
    ContractError,
    Reported,
    SetAccepted,
    SetRejected,
    Status,
    TopicKind,
    decode,
)

_NAMED_VERSION = re.compile(r"\bdesired v(\d+)\b")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


class SetWait:
    """Feed it every message on the device's ``set/accepted``, ``set/rejected``, ``reported``
    and ``status``; :meth:`feed` returns an :class:`Outcome` once the wait is over."""

    def __init__(self, device_id: str, client_token: str, *, wait_applied: bool = True) -> None:
        self.device_id = device_id
        self.client_token = client_token
        self.wait_applied = wait_applied
        self.v: int | None = None  # the version our patch became
        self.applied_v: int | None = None
        self.offline = False
        self.never_online = False  # added (flumph ctl add), not connected since
        self.device_error: str | None = None  # from the last reported since we subscribed

    def feed(self, kind: TopicKind, payload: bytes, retained: bool) -> Outcome | None:
        try:
            return self._feed(kind, payload, retained)
        except ContractError:
            return None  # somebody else's malformed message is not our answer

    def _feed(self, kind: TopicKind, payload: bytes, retained: bool) -> Outcome | None:
        if kind == "set/rejected":
            rej = decode(SetRejected, payload)
            if rej.client_token == self.client_token:
                return Outcome(False, f"{self.device_id} refused the patch: {rej.error}")
        elif kind == "set/accepted":
            acc = decode(SetAccepted, payload)
            if acc.client_token == self.client_token:
                self.v = acc.v
        elif kind == "status" and payload:
            status = decode(Status, payload)
            self.offline, self.never_online = status.state == "offline", status.provisioned
        elif kind == "reported" and payload:
            rep = decode(Reported, payload)
            self.applied_v = rep.applied_v
            if not retained:
                self.device_error = rep.error
        else:
            return None
        return self._verdict()

    def _verdict(self) -> Outcome | None:
        v = self.v
        if v is None:
            return None
        if not self.wait_applied:
            return Outcome(True, f"accepted as v{v} (not waiting for {self.device_id})")
        if self.applied_v is not None and self.applied_v >= v:
            return Outcome(True, f"{self.device_id} applied v{v}")
        if self.device_error is not None and self._about(self.device_error, v):
            return Outcome(False, f"{self.device_id} did not apply v{v}: {self.device_error}")
        if self.offline:
            where = (
                "has not come online since it was added: it applies v{v} when it connects"
                if self.never_online
                else "is offline: it applies v{v} when it reconnects"
            ).format(v=v)
            return Outcome(
                False,
                f"accepted as v{v}, but {self.device_id} {where} "
                "(--no-wait does not wait for the device)",
            )
        return None

    @staticmethod
    def _about(error: str, v: int) -> bool:
        named = _NAMED_VERSION.search(error)
        return named is None or int(named.group(1)) == v

    def timed_out(self, timeout_s: float) -> Outcome:
        """The reason to give when nothing decided within ``timeout_s``."""
        if self.v is None:
            return Outcome(
                False,
                f"no answer on set/accepted or set/rejected within {timeout_s:g} s: is a backend "
                "(flumph dashboard or flumph up) connected to this broker?",
            )
        seen = "never reported" if self.applied_v is None else f"reports v{self.applied_v}"
        return Outcome(
            False,
            f"accepted as v{self.v}, but {self.device_id} {seen} and did not apply v{self.v} "
            f"within {timeout_s:g} s (--timeout to wait longer, --no-wait not to wait)",
        )
