"""A device cannot silence another by taking its MQTT session, and a device that connects twice
is connected once. Each attack runs against plain amqtt 0.12.1 (strict xfail: the defect is
real), the embedded broker, and mosquitto as deploy/mosquitto/mosquitto.conf configures it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.brokers import (
    BACKEND_USER,
    OPS_PASSWORD,
    OPS_USER,
    Broker,
    Probe,
    start_embedded,
    start_mosquitto_deploy,
)
from tests.mqttraw import RawClient
from tests.test_broker_defects import STARTERS as DEFECT_STARTERS
from tests.test_broker_defects import USERS, Starter, plain_xfail

DESIRED = "flumph/cam1/desired"

# As in test_broker_defects, but mosquitto as deploy/mosquitto/mosquitto.conf runs it.
STARTERS: dict[str, Starter] = DEFECT_STARTERS | {"mosquitto": start_mosquitto_deploy}


@pytest.fixture
def broker_of(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []

    def start(kind: str, **kw: object) -> Broker:
        b = STARTERS[kind](tmp_path, USERS, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


class Device:
    """cam1 as the agent connects: paho, client id flumph-dev-cam1, subscribed to its desired;
    counts the times the broker dropped it."""

    def __init__(self, b: Broker) -> None:
        self.drops: list[float] = []
        self.probe = Probe(b, "cam1", client_id="flumph-dev-cam1")
        self.probe.client.on_disconnect = lambda *_: self.drops.append(time.monotonic())
        assert self.probe.subscribe(DESIRED) == [1]

    def hears(self, b: Broker, v: int) -> bool:
        """Whether a desired document published now by the backend reaches the device."""
        backend = Probe(b, BACKEND_USER)
        try:
            backend.publish(DESIRED, json.dumps({"v": v}).encode())
        finally:
            backend.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for m in self.probe.received(0.2):
                if m.topic == DESIRED and json.loads(m.payload) == {"v": v}:
                    return True
        return False

    def close(self) -> None:
        self.probe.close()


@pytest.mark.parametrize(
    "kind",
    [
        plain_xfail("amqtt 0.12.1 lets any account take over another client id's session"),
        "flumph",
        "mosquitto",
    ],
)
def test_another_device_account_cannot_take_over_a_device(kind: str, broker_of: Starter) -> None:
    b = broker_of(kind)
    cam1 = Device(b)
    attackers = []
    try:
        assert cam1.hears(b, 1)
        # cam2 logs in with its own password but cam1's client id (the agent's, and mosquitto's
        # derived one), and stays connected listening.
        for client_id in ("flumph-dev-cam1", "cam1"):
            a = RawClient(b.port_for("cam2"), client_id, "cam2", USERS["cam2"])
            assert a.return_code == 0
            attackers.append(a)
        time.sleep(1.0)
        assert cam1.hears(b, 2), "the device went deaf"
        assert cam1.drops == [], "the broker dropped the real device"
    finally:
        for a in attackers:
            a.close()
        cam1.close()


@pytest.mark.parametrize(
    "kind",
    [
        plain_xfail("amqtt 0.12.1 drops the session a CONNECT names before checking its password"),
        "flumph",
        "mosquitto",
    ],
)
def test_a_refused_login_takes_nothing_over(kind: str, broker_of: Starter) -> None:
    b = broker_of(kind)
    cam1 = Device(b)
    try:
        for user, password in (("cam2", "wrong"), ("cam1", "wrong"), ("nobody", "x")):
            a = RawClient(b.port_for("cam1"), "flumph-dev-cam1", user, password)
            assert a.return_code in (4, 5), a.return_code  # bad password / not authorised
            a.close()
        assert cam1.hears(b, 3), "a refused login silenced the device"
        assert cam1.drops == []
    finally:
        cam1.close()


@pytest.mark.parametrize(
    "kind",
    [
        plain_xfail("amqtt 0.12.1 leaves the replaced connection open, subscribed to nothing"),
        "flumph",
        "mosquitto",
    ],
)
def test_a_second_connection_of_a_device_replaces_the_first(kind: str, broker_of: Starter) -> None:
    b = broker_of(kind)
    first = RawClient(b.port_for("cam1"), "flumph-dev-cam1", "cam1", USERS["cam1"])
    second = None
    try:
        assert first.return_code == 0
        assert first.subscribe(DESIRED) == b"\x01"
        # The device reboots: a new connection while the old one is still open (half-open on a
        # cellular link). The old one must be closed, never left connected and deaf.
        second = Device(b)
        assert first.closed_within(5.0), "the replaced connection was left open"
        assert second.hears(b, 4)
    finally:
        first.close()
        if second is not None:
            second.close()


def test_embedded_derives_the_client_id_of_every_device_account(tmp_path: Path) -> None:
    """Whatever client id a device account sends, its session is flumph-dev-<username>: two
    different ids of one account are one session (the second replaces the first); admin accounts
    keep their own ids, so several backend connections live side by side."""
    b = start_embedded(tmp_path, USERS)
    clients = []
    try:
        first = RawClient(b.port, "whatever-1", "cam2", USERS["cam2"])
        clients.append(first)
        clients.append(RawClient(b.port, "whatever-2", "cam2", USERS["cam2"]))
        assert first.closed_within(5.0)
        ops = [RawClient(b.port, f"ops-{i}", OPS_USER, OPS_PASSWORD) for i in range(2)]
        clients += ops
        assert not ops[0].closed_within(1.0)
    finally:
        for c in clients:
            c.close()
        b.stop()


def test_embedded_reserves_device_client_ids_from_anonymous_clients(tmp_path: Path) -> None:
    b = start_embedded(tmp_path, USERS, extra_args=["--allow-anonymous"])
    cam1 = Device(b)
    try:
        a = RawClient(b.port, "flumph-dev-cam1", None, None)
        assert a.return_code == 2  # identifier rejected
        a.close()
        other = RawClient(b.port, "some-sensor", None, None)
        assert other.return_code == 0
        other.close()
        assert cam1.hears(b, 5) and cam1.drops == []
        assert "reserved for device account 'cam1'" in b.log()
    finally:
        cam1.close()
        b.stop()
