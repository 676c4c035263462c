"""The embedded broker as an object another program's event loop can own (``flumph up``).

Usage::

    broker = EmbeddedBroker(BrokerSettings(port=1883, passwd_file=..., state_dir=...))
    await broker.start()   # raises ConfigError naming the key, or BrokerStartError
    ...
    await broker.stop()    # writes retained messages, closes every connection
"""

from __future__ import annotations

import logging
from typing import Any

from flumph.config import ConfigError

from .config import BrokerSettings, check_settings
from .metrics import BrokerMetrics
from .store import RetainedStore, StoreError

log = logging.getLogger("flumph.broker")

_PLUGINS = "flumph.broker.plugins"


def quiet_amqtt_logging(level: str) -> None:
    """amqtt logs every connection at INFO: keep only its warnings unless ``level`` is debug."""
    if level != "debug":
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)


class BrokerStartError(RuntimeError):
    """The broker could not start serving (a port in use, for instance)."""


def amqtt_config(settings: BrokerSettings, *, fixes: bool = True) -> dict[str, Any]:
    """The amqtt configuration for ``settings``: listeners and the flumph plugins.

    ``fixes=False`` leaves out the plugins that fix amqtt defects (the retained store, the will
    ACL): with amqtt's own Broker class, that is plain amqtt with our accounts and ACL, which the
    tests use to show each defect.
    """
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{settings.host}:{settings.port}"},
    }
    if settings.ws_port is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{settings.host}:{settings.ws_port}"}
    plugins: dict[str, Any] = {
        f"{_PLUGINS}.PasswordAuthPlugin": {
            "passwd_file": str(settings.passwd_file) if settings.passwd_file else None,
            "allow_anonymous": settings.anonymous_allowed,
        },
        f"{_PLUGINS}.DeviceAclPlugin": {
            "enabled": settings.acl_enforced,
            "prefix": settings.prefix,
            "admin_users": list(settings.admin_users),
        },
    }
    if fixes:
        plugins[f"{_PLUGINS}.WillAclPlugin"] = dict(plugins[f"{_PLUGINS}.DeviceAclPlugin"])
        plugins[f"{_PLUGINS}.RetainedStorePlugin"] = {"state_dir": str(settings.state_dir)}
    # The keepalive fix computes 1.5 x keepalive itself; amqtt's additive delay must stay 0.
    return {"listeners": listeners, "timeout_disconnect_delay": 0, "plugins": plugins}


def preflight(settings: BrokerSettings) -> None:
    """Check everything the settings point at; raises ConfigError naming the key."""
    users = check_settings(settings)
    try:
        store = RetainedStore(settings.state_dir)
        try:
            store.load()
        finally:
            store.close()
    except StoreError as e:
        raise ConfigError(str(e)) from None
    if settings.passwd_file is None:
        log.warning(
            "NO AUTHENTICATION: no passwd_file, so any client may connect, publish and subscribe "
            "to every topic (create one with 'flumph broker passwd FILE USER')"
        )
    elif settings.anonymous_allowed:
        log.warning("allow_anonymous: clients without a username are accepted")
    if settings.passwd_file is not None and not settings.acl:
        log.warning("acl=false: every account, devices included, reaches every topic")
    if settings.passwd_file is not None and not users:
        log.warning("passwd_file %s has no users: nobody can log in", settings.passwd_file)


class EmbeddedBroker:
    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._broker: Any = None
        self.metrics = BrokerMetrics(lambda: self._broker)

    async def start(self) -> None:
        from amqtt.errors import BrokerError

        from .fixes import FlumphBroker, check_upstream
        from .identity import ClientIdentity

        check_upstream()
        preflight(self.settings)
        identity = ClientIdentity(
            enforced=self.settings.passwd_file is not None, admins=self.settings.admin_users
        )
        broker = FlumphBroker(
            amqtt_config(self.settings),
            connect_timeout_s=self.settings.connect_timeout_s,
            identity=identity,
        )
        try:
            await broker.start()
        except BrokerError as e:
            # Plugins already started (the retained store's writer): let them close.
            await broker.plugins_manager.close()
            raise BrokerStartError(f"broker on {self.settings.host}: {e}") from None
        self._broker = broker
        ws = f", WebSockets on {self.ws_port}" if self.settings.ws_port is not None else ""
        log.info(
            "MQTT broker on %s:%d%s; retained messages in %s",
            self.settings.host, self.port, ws, self.settings.state_dir,
        )  # fmt: skip

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def port(self) -> int:
        """The TCP port actually bound (differs from the settings when they asked for 0)."""
        return self._bound("default", self.settings.port)

    @property
    def ws_port(self) -> int | None:
        if self.settings.ws_port is None:
            return None
        return self._bound("ws", self.settings.ws_port)

    def _bound(self, listener: str, configured: int) -> int:
        server = self._broker._servers.get(listener) if self._broker is not None else None
        sockets = getattr(getattr(server, "instance", None), "sockets", None)
        if not sockets:
            return configured
        return int(next(iter(sockets)).getsockname()[1])

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
