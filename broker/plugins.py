"""amqtt plugins: password authentication, the device ACL, and the on-disk retained store.

amqtt loads plugins by dotted path and fills each one's ``Config`` dataclass from the broker
configuration (see :func:`flumph.broker.server.amqtt_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin

from .acl import DEFAULT_ADMINS, Acl
from .passwd import PasswdError, read_passwd_file, verify_password
from .store import Retained, RetainedStore

log = logging.getLogger("flumph.broker")

# Argon2 checks run in two threads of their own: a reconnect storm cannot take every core from
# the clients already connected, and only two malloc arenas keep Argon2's blocks (with 19 MiB
# hashes on the default executor, RSS grew 62 MiB over 100 logins; on two threads 43 MiB).
_ARGON2_THREADS = 2


class PasswordAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Username + password against an Argon2 file, re-read when the file changes on disk, so
    ``flumph broker passwd`` takes effect without a restart."""

    @dataclass
    class Config:
        passwd_file: str | None = None
        allow_anonymous: bool = False

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._path = Path(self.config.passwd_file) if self.config.passwd_file else None
        self._users: dict[str, str] = {}
        self._mtime_ns = -1
        self._pool = ThreadPoolExecutor(_ARGON2_THREADS, thread_name_prefix="flumph-argon2")
        self._slots = asyncio.Semaphore(_ARGON2_THREADS)  # nothing waits inside the pool
        self._reload()

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            mtime_ns = self._path.stat().st_mtime_ns
        except OSError as e:
            log.error("password file %s: %s; keeping %d users", self._path, e, len(self._users))
            return
        if mtime_ns == self._mtime_ns:
            return
        try:
            self._users = read_passwd_file(self._path)
        except PasswdError as e:
            if self._mtime_ns < 0:
                raise
            log.error("%s; keeping the %d users read before", e, len(self._users))
        else:
            log.info("%d user(s) from %s", len(self._users), self._path)
        self._mtime_ns = mtime_ns

    async def authenticate(self, *, session: Any) -> bool:
        username: str | None = session.username
        if not username:
            allowed = bool(self.config.allow_anonymous)
            session.is_anonymous = allowed
            if not allowed:
                log.info("refused %s: no username", session.client_id)
            return allowed
        if self._path is None:
            return True  # no password file: anonymous mode, any username goes
        self._reload()
        password_hash = self._users.get(username)
        if password_hash is None:
            log.info("refused %s: unknown user %r", session.client_id, username)
            return False
        loop = asyncio.get_running_loop()
        async with self._slots:
            ok = await loop.run_in_executor(
                self._pool, verify_password, password_hash, session.password or ""
            )
        if not ok:
            log.info("refused %s: wrong password for %r", session.client_id, username)
        return ok

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class DeviceAclPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Publish, subscribe and receive all pass through :class:`flumph.broker.acl.Acl`."""

    @dataclass
    class Config:
        enabled: bool = True
        prefix: str = "flumph"
        admin_users: list[str] = field(default_factory=lambda: list(DEFAULT_ADMINS))

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = Acl(self.config.prefix, frozenset(self.config.admin_users))

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        if not self.config.enabled:
            return True
        if session is None or topic is None:
            return False
        allowed = self._acl.allows(session.username, topic)
        if not allowed:
            log.debug("acl: %r may not %s %s", session.username, action, topic)
        return allowed


class WillAclPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt 0.12.1 publishes (and retains) a will without asking the ACL, so device cam2 could
    declare cam1 offline. As mosquitto does, such a will is dropped, not the client. Runs as an
    authentication hook because that is the one call made at CONNECT, before a will can fire;
    it never decides the login itself (None)."""

    Config = DeviceAclPlugin.Config

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = Acl(self.config.prefix, frozenset(self.config.admin_users))

    async def authenticate(self, *, session: Any) -> None:
        will_topic = session.will_topic or ""
        if (
            self.config.enabled
            and session.will_flag
            and not self._acl.allows(session.username, will_topic)
        ):
            log.warning(
                "dropping the will of %s (%r): %s is outside its reach",
                session.client_id, session.username, will_topic,
            )  # fmt: skip
            session.will_flag = False


class RetainedStorePlugin(BasePlugin):  # type: ignore[misc]
    """Loads retained messages before the listeners open and writes each change shortly after
    it happens (coalesced: one transaction per burst, whatever its size)."""

    @dataclass
    class Config:
        state_dir: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._store = RetainedStore(self.config.state_dir)
        self._dirty: set[str] = set()  # bounded by the number of retained topics
        self._wake = asyncio.Event()
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None

    async def on_broker_pre_start(self) -> None:
        # amqtt's start() clears its retained dict just before this event, and no listener is
        # open yet: no client can see a partial set.
        rows = await asyncio.to_thread(self._store.load)
        retained = self.context.retained_messages
        for r in rows:
            retained[r.topic] = RetainedApplicationMessage(None, r.topic, r.payload, r.qos)
        log.info("%d retained message(s) loaded from %s", len(rows), self._store.path)
        self._stopping = False
        self._writer = asyncio.create_task(self._write_loop(), name="flumph-retained-writer")

    async def on_broker_retained_message(
        self, *, client_id: str | None, retained_message: RetainedApplicationMessage
    ) -> None:
        # client_id set means a message queued for one offline session, not a retained topic.
        if client_id is None and not self._stopping:
            self._dirty.add(retained_message.topic)
            self._wake.set()

    async def on_broker_pre_shutdown(self) -> None:
        # Fired before amqtt drops its sessions and empties its retained dict: what is stored
        # is the state clients last left, not the shutdown's own churn.
        self._stopping = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        await asyncio.to_thread(self._store.apply, self._snapshot())

    async def close(self) -> None:
        if self._writer is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._writer
        self._store.close()

    def _snapshot(self) -> dict[str, Retained | None]:
        retained = self.context.retained_messages
        changes: dict[str, Retained | None] = {}
        for topic in self._dirty:
            m = retained.get(topic)
            keep = m is not None and m.data
            changes[topic] = Retained(topic, int(m.qos or 0), bytes(m.data)) if keep else None
        self._dirty.clear()
        return changes

    async def _write_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            changes = self._snapshot()
            try:
                await asyncio.to_thread(self._store.apply, changes)
            except Exception as e:
                log.error("retained store %s: %s; retrying in 1 s", self._store.path, e)
                self._dirty.update(changes)
                await asyncio.sleep(1)
                self._wake.set()
