"""Who may reach which topic: the same rule as deploy/mosquitto/acl, as a pure function.

A device logs in with its device id as username and reaches only ``<prefix>/<its id>`` and what
lies below it, for publish, subscribe and receive alike. Admin accounts (the backend and ops)
reach every topic (the ops tools read every device's ``set/accepted`` and ``set/rejected``; a
device reads only its own). A client without a username reaches nothing while the ACL is on.

Unlike a pattern substitution (``%u``), the username is compared literally with one topic
level, so a username such as ``+`` cannot widen a device's reach.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

DEFAULT_ADMINS = ("flumph-backend", "flumph-ops")


@dataclass(frozen=True)
class Acl:
    prefix: str = "flumph"
    admins: Collection[str] = DEFAULT_ADMINS

    def allows(self, username: str | None, topic: str) -> bool:
        """Whether ``username`` may publish to, subscribe to (``topic`` may be a filter) or
        receive ``topic``."""
        if username is None:
            return False
        if username in self.admins:
            return True
        head = self.prefix.split("/")
        levels = topic.split("/")
        if len(levels) <= len(head) or levels[: len(head)] != head:
            return False
        # The device level must be the username itself, never a wildcard.
        device = levels[len(head)]
        return device == username and device not in ("+", "#")
