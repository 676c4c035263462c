"""Fixes for defects of amqtt 0.12.1, by subclassing its broker and its protocol handler.

Everything here depends on amqtt's private methods, so it is the one module that does, and
:func:`check_upstream` refuses to start when the installed amqtt is not the exact source these
overrides were written against (amqtt is pinned ``==0.12.1`` in pyproject.toml). The defects,
measured, are in broker/README.md:

(a) A client that goes silent without closing TCP never gets its will published: the reader
    loop times out after the keepalive and calls ``handle_read_timeout``, which the broker's
    handler leaves empty, then waits again, forever. MQTT 3.1.1 §3.1.2.10: after 1.5 x keepalive
    without a packet the server must close the connection as a network failure, which fires the
    will. Fixed by :class:`KeepaliveHandler` and the 1.5 factor set in
    :meth:`FlumphBroker._initialize_client_session`.
(b) On connect, ``_handle_client_session`` calls ``_publish_retained_messages_for_subscription``
    for every topic filter of EVERY client, so a new client receives retained messages matching
    other clients' subscriptions, and that method never asks the ACL. Fixed by
    :meth:`FlumphBroker._publish_retained_messages_for_subscription`, which serves only the
    session's own subscriptions and checks each retained topic against the ACL (receive).
(c) Retained messages live only in memory: fixed without touching amqtt, by
    :class:`flumph.broker.plugins.RetainedStorePlugin`.
(d) A CONNECT with a client id that is already connected removes that session's subscriptions
    but leaves its connection open (connected, shown online, deaf), and it does so in
    ``_initialize_client_session`` before the password is checked, so even a refused login took
    a device's session away. Fixed by :meth:`FlumphBroker._initialize_client_session`, which
    authenticates first, binds a device account to its own client id
    (:mod:`flumph.broker.identity`) and closes the connection it replaces
    (:meth:`FlumphBroker._take_over`), as MQTT 3.1.1 §3.1.4-2 says.

Also: ``_run_broadcast`` (every publish) and ``_handle_client_session`` (every connect) iterate
``self._subscriptions`` while awaiting the ACL check or a send, so a SUBSCRIBE or a disconnect in
between raises "dictionary changed size during iteration" and the message is not delivered to the
rest of the subscribers; :class:`SnapshotSubscriptions` makes those loops walk a snapshot.

Counted for ``/metrics`` (:mod:`flumph.broker.metrics`): every PUBLISH received from a client
(:meth:`KeepaliveHandler.handle_publish`) and every one sent to a client
(:meth:`KeepaliveHandler.mqtt_publish`), and the sessions, subscriptions and retained messages
read by :class:`FlumphBroker`'s counting methods.

And amqtt waits for the CONNECT packet without a deadline, so a TCP connection that never
speaks holds a connection slot forever; :meth:`FlumphBroker._initialize_client_session` gives
it ``connect_timeout_s``. And amqtt publishes a will without asking the ACL:
:class:`flumph.broker.plugins.WillAclPlugin` drops such a will at CONNECT.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import amqtt
from amqtt.adapters import StreamWriterAdapter, WebSocketsWriter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.utils import format_client_message, gen_client_id

from .identity import ClientIdentity, IdentityRefused
from .metrics import BrokerStats

log = logging.getLogger("flumph.broker")

AMQTT_VERSION = "0.12.1"
KEEPALIVE_FACTOR = 1.5  # MQTT 3.1.1 §3.1.2.10
TAKEOVER_WAIT_S = 3.0  # for the replaced connection's disconnect to be handled

# The upstream code each fix relies on, with the SHA-256 (first 16 hex digits) of its 0.12.1
# source. A different digest means the assumption written next to it must be re-checked.
_UPSTREAM: dict[str, tuple[Callable[..., Any], str, str]] = {
    "ProtocolHandler._reader_loop": (
        ProtocolHandler._reader_loop,
        "93f3b8e4483040d0",
        "(a) waits session.keep_alive s per packet, calls handle_read_timeout, then on EOF "
        "calls handle_connection_closed (which fires the will)",
    ),
    "BrokerProtocolHandler.handle_read_timeout": (
        BrokerProtocolHandler.handle_read_timeout,
        "ffd79f12457f41e1",
        "(a) does nothing",
    ),
    "Broker._initialize_client_session": (
        Broker._initialize_client_session,
        "5dd89158bbe46266",
        "(a, d) replaced: init_from_connect, then clean-session delete or persistent reuse "
        "(copying will, keepalive, credentials), keepalive + delay (0)",
    ),
    "BrokerProtocolHandler.init_from_connect": (
        BrokerProtocolHandler.init_from_connect,
        "036dc04c1133a18f",
        "(d) reads and checks CONNECT, sends its own CONNACK refusals, touches no session",
    ),
    "Broker._authenticate": (
        Broker._authenticate,
        "4d7db8cc6fe2c3f6",
        "(d) asks the auth plugins; called once, by _handle_client_session",
    ),
    "Broker._client_connected": (
        Broker._client_connected,
        "432b724bc4fb7946",
        "NoDataError from _initialize_client_session ends the connection cleanly",
    ),
    "Broker._handle_client_session": (
        Broker._handle_client_session,
        "8b1b52a03df9daf5",
        "(b) on connect, publishes retained messages for every filter in self._subscriptions; "
        "(d) authenticates (our cached result), then stores the session under its client id",
    ),
    "Broker._publish_retained_messages_for_subscription": (
        Broker._publish_retained_messages_for_subscription,
        "d6ad257821ba29ef",
        "(b) replaced here; called on SUBSCRIBE (after add_subscription) and on connect",
    ),
    "Broker._handle_disconnect": (
        Broker._handle_disconnect,
        "8c3b8702f3567055",
        "(will ACL, plugins.WillAclPlugin) publishes the will only while session.will_flag",
    ),
    "Broker.start": (Broker.start, "bd1c165101f6fcbb", "(c) clears retained before PRE_START"),
    "Broker._run_broadcast": (
        Broker._run_broadcast,
        "e852128b3e38e04a",
        "iterates self._subscriptions.items() and awaits inside the loop",
    ),
    "Broker.shutdown": (
        Broker.shutdown,
        "800adcdd80ded223",
        "(c) fires PRE_SHUTDOWN before dropping sessions and retained messages",
    ),
    "ProtocolHandler.handle_publish": (
        ProtocolHandler.handle_publish,
        "b8f1fd3212c7134e",
        "(metrics) called once per PUBLISH packet a client sends, with it",
    ),
    "ProtocolHandler.mqtt_publish": (
        ProtocolHandler.mqtt_publish,
        "30cb8f651cc521c5",
        "(metrics) every application message to a client (deliveries and retained) goes through it",
    ),
    "StreamWriterAdapter.__init__": (
        StreamWriterAdapter.__init__,
        "9612036ac78e5ab2",
        "(a) keeps the asyncio StreamWriter as _writer",
    ),
    "WebSocketsWriter.__init__": (
        WebSocketsWriter.__init__,
        "90c0412c2af927cb",
        "(a) keeps the websockets connection as _protocol",
    ),
}


class UpstreamMismatch(RuntimeError):
    """The installed amqtt is not the code the fixes were written against."""


def _digest(fn: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def check_upstream() -> None:
    """Refuse to run the fixes on any amqtt but the exact 0.12.1 source they patch."""
    if amqtt.__version__ != AMQTT_VERSION:
        raise UpstreamMismatch(
            f"amqtt {amqtt.__version__} is installed; flumph.broker.fixes was written against "
            f"amqtt {AMQTT_VERSION} (pin amqtt=={AMQTT_VERSION}, or re-check its three defects)"
        )
    for name, (fn, expected, assumption) in _UPSTREAM.items():
        try:
            got = _digest(fn)
        except (OSError, TypeError):
            log.warning("amqtt source of %s unavailable; trusting the version number", name)
            continue
        if got != expected:
            raise UpstreamMismatch(
                f"amqtt {AMQTT_VERSION}: {name} is not the source flumph.broker.fixes expects "
                f"(sha256 {got}, expected {expected}); re-check: {assumption}"
            )


def _transport(writer: Any) -> asyncio.BaseTransport | None:
    if isinstance(writer, StreamWriterAdapter):
        t: asyncio.BaseTransport = writer._writer.transport
        return t
    if isinstance(writer, WebSocketsWriter):
        ws_t: asyncio.BaseTransport = writer._protocol.transport
        return ws_t
    return None


def _abort(writer: Any) -> bool:
    """Drop the connection at once. A graceful close would first drain the send buffer, which a
    peer that stopped reading never empties."""
    transport = _transport(writer)
    if transport is None or transport.is_closing():
        return False
    # abort() exists on every stream transport; BaseTransport only declares close().
    transport.abort()  # type: ignore[attr-defined]
    return True


async def _refuse_connect(writer: Any, return_code: int) -> None:
    """CONNACK with a refusal, then close: what upstream sends for a wrong password."""
    try:
        await ConnackPacket.build(0, return_code).to_stream(writer)
    finally:
        await writer.close()


class KeepaliveHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """Defect (a): a read timeout is a dead connection, not a reason to wait again. Also counts
    the messages in and out for ``/metrics``."""

    stats: BrokerStats | None = None

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        if self.stats is not None:
            self.stats.received(len(publish_packet.data or b""))
        await super().handle_publish(publish_packet)

    async def mqtt_publish(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> Any:
        if self.stats is not None:
            self.stats.sent(len(data))
        return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)

    def handle_read_timeout(self) -> None:
        session = self.session
        log.info(
            "client %s sent nothing for %.1f s (1.5 x keepalive): closing, will follows",
            session.client_id if session else "?",
            session.keep_alive if session else 0.0,
        )
        if not _abort(self.writer):
            # Unknown transport: end the session the way the reader loop would on EOF.
            self._closing = asyncio.ensure_future(self.handle_connection_closed())


class SnapshotSubscriptions(dict[str, list[tuple[Any, int]]]):
    """amqtt's topic filter -> subscribers map, iterated over a snapshot: amqtt loops over it
    with awaits inside, while SUBSCRIBE and disconnects change it."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, list[tuple[Any, int]]]]:  # type: ignore[override]
        return [(k, list(v)) for k, v in super().items()]


class FlumphBroker(Broker):  # type: ignore[misc]
    """amqtt's broker without defects (a), (b) and (d); see the module docstring."""

    def __init__(
        self,
        *args: Any,
        connect_timeout_s: float = 10.0,
        identity: ClientIdentity | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._connect_timeout_s = connect_timeout_s
        self._subscriptions = SnapshotSubscriptions(vars(self)["_subscriptions"])
        self._identity = identity or ClientIdentity(enforced=False)
        self.stats = BrokerStats()

    # Read by the metrics collector, possibly from prometheus_client's HTTP thread: list() and
    # len() of a dict are single steps under the GIL, so nothing changes size under them.
    def connected_clients(self) -> int:
        sessions = list(self._sessions.values())
        return sum(1 for session, _ in sessions if session.transitions.state == "connected")

    def subscription_count(self) -> int:
        return sum(len(subs) for subs in list(self._subscriptions.values()))

    def retained_count(self) -> int:
        return len(self._retained_messages)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        """Upstream's method in a safe order: read CONNECT (within a deadline), authenticate,
        bind the client id to the account, close the connection it takes over, and only then
        touch the session table (upstream deletes the session a CONNECT names before asking
        whether its password is right)."""
        peer = format_client_message(address=remote_address, port=remote_port)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, session = await BrokerProtocolHandler.init_from_connect(
                    reader, writer, self.plugins_manager
                )
        except TimeoutError:
            _abort(writer)
            raise NoDataError(
                f"{peer} sent no CONNECT within {self._connect_timeout_s} s"
            ) from None
        except MQTTError as e:  # refused by upstream's checks (it sent the CONNACK) or malformed
            await writer.close()
            raise MQTTError(f"invalid CONNECT from {peer}: {e}") from e
        except (AMQTTError, NoDataError) as e:
            raise AMQTTError(f"cannot read CONNECT from {peer}: {e}") from e

        if not await super()._authenticate(session, None):
            await _refuse_connect(writer, NOT_AUTHORIZED)
            raise NoDataError(f"{peer}: login refused for {session.username!r}")
        try:
            client_id = self._identity.bind(session.username, session.client_id or "")
        except IdentityRefused as e:
            await _refuse_connect(writer, IDENTIFIER_REJECTED)
            raise NoDataError(f"{peer}: {e}") from None
        if client_id != session.client_id:
            log.debug("%s: client id %r -> %r", peer, session.client_id, client_id)
            session.client_id = client_id
        if client_id:
            await self._take_over(client_id)

        if session.clean_session:
            if client_id:
                await self._delete_session(client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif client_id in self._sessions:
            # A persistent session: the new connection brings its will, keepalive, credentials.
            existing, _ = self._sessions[client_id]
            for attr in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain",
                         "keep_alive", "username", "password", "is_anonymous"):  # fmt: skip
                setattr(existing, attr, getattr(session, attr))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        if session.keep_alive > 0:
            # amqtt reads with a timeout of session.keep_alive; the spec allows 1.5 x keepalive.
            session.keep_alive = session.keep_alive * KEEPALIVE_FACTOR
        session.flumph_authenticated = True  # read once by _authenticate below
        handler = KeepaliveHandler(self.plugins_manager, loop=self._loop)
        handler.stats = self.stats
        return handler, session

    async def _authenticate(self, session: Any, listener: Any) -> bool:
        # Called by _handle_client_session; the login was already checked (and refused if wrong)
        # in _initialize_client_session, so it is not paid for twice.
        if getattr(session, "flumph_authenticated", False):
            session.flumph_authenticated = False
            return True
        result: bool = await super()._authenticate(session, listener)
        return result

    async def _take_over(self, client_id: str) -> None:
        """Defect (d): MQTT 3.1.1 §3.1.4-2, the server disconnects the client already connected
        under this client id. Upstream dropped only its subscriptions and left it connected and
        deaf. Its will is not published: the client id is still connected."""
        old = self._sessions.get(client_id)
        if old is None:
            return
        session, handler = old
        if not session.transitions.is_connected():
            return
        log.info("client %s connected again: closing its previous connection", client_id)
        session.will_flag = False
        if not _abort(handler.writer):
            await handler.handle_connection_closed()
        deadline = asyncio.get_running_loop().time() + TAKEOVER_WAIT_S
        while session.transitions.is_connected():
            if asyncio.get_running_loop().time() > deadline:
                log.warning("previous connection of %s did not end; replacing it", client_id)
                return
            await asyncio.sleep(0.01)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        topic_filter, _requested_qos = subscription
        cid = session.client_id
        mine = (q for s, q in self._subscriptions.get(topic_filter, ()) if s.client_id == cid)
        granted = next(mine, None)
        if granted is None:
            return  # another client's filter: upstream asks us to leak its retained messages
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            qos = min(granted, retained.qos if retained.qos is not None else granted)
            sends.append(handler.mqtt_publish(retained.topic, retained.data, qos, retain=True))
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, Exception):
                log.debug("retained message to %s not delivered: %r", session.client_id, result)
