"""Which MQTT client id an account may use, as a pure function.

MQTT sessions are keyed by client id, and a CONNECT with a client id that is already connected
takes that session over. With client ids chosen freely, device ``cam2`` (or anyone with an
account) could connect as ``flumph-dev-cam1`` and silence ``cam1``: measured on plain amqtt 0.12.1
the real device stayed connected, shown online, and never received ``desired`` or a command again;
on mosquitto without ``use_username_as_clientid`` the two kicked each other off every second.

So a device account's client id is derived from its username: whatever it sends, it gets
``flumph-dev-<username>`` (what the agent sends anyway), and only that account can take that
session over (its own reconnect). Ids of that form are reserved: a client without a username is
refused them. Admin accounts (the backend, ops) are trusted and keep theirs. mosquitto does the
same with ``use_username_as_clientid true`` (its derived id is the username itself).

Only with a password file: without one anybody may claim any username, and there is no identity
to bind to.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .acl import DEFAULT_ADMINS

DEVICE_CLIENT_PREFIX = "flumph-dev-"


class IdentityRefused(ValueError):
    """A client id the account may not use; the message says why (logged by the broker)."""


def device_client_id(username: str) -> str:
    return DEVICE_CLIENT_PREFIX + username


@dataclass(frozen=True)
class ClientIdentity:
    enforced: bool = True
    admins: Collection[str] = DEFAULT_ADMINS

    def bind(self, username: str | None, client_id: str) -> str:
        """The client id the session gets; IdentityRefused for a reserved one."""
        if not self.enforced:
            return client_id
        if username is None:
            if client_id.startswith(DEVICE_CLIENT_PREFIX):
                raise IdentityRefused(
                    f"client id {client_id!r} is reserved for device account "
                    f"{client_id.removeprefix(DEVICE_CLIENT_PREFIX)!r}; log in as that device"
                )
            return client_id
        if username in self.admins:
            return client_id
        return device_client_id(username)
