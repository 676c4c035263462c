"""amqtt 0.12.1 iterates its subscription map while awaiting the ACL check for each subscriber, so
a client that subscribes or leaves while a message is being fanned out raises "dictionary
changed size during iteration" inside the broker and that message never reaches the subscribers
after it (seen first when the dashboard tests' mosquitto_pub/mosquitto_sub came and went around
the embedded broker). Absent from the embedded broker, with mosquitto as the reference. On plain
amqtt the loss is a race that a run triggers often but not always (a strict xfail here passed once
under a quiet machine), so plain amqtt is not parametrised: the mechanism is shown
deterministically by ``test_snapshot_subscriptions_iterate_a_copy``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flumph.broker.fixes import SnapshotSubscriptions
from tests.brokers import (
    BACKEND_PASSWORD,
    BACKEND_USER,
    Broker,
    Probe,
    start_embedded,
    start_mosquitto,
)

CHURNERS = [f"churn{i}" for i in range(6)]
USERS = {BACKEND_USER: BACKEND_PASSWORD, **{c: f"{c}-pw" for c in CHURNERS}}
MESSAGES = 300
STARTERS: dict[str, Callable[[Path, dict[str, str]], Broker]] = {
    "flumph": start_embedded,
    "mosquitto": start_mosquitto,
}


def test_snapshot_subscriptions_iterate_a_copy() -> None:
    subs = SnapshotSubscriptions({"a/#": [("s1", 1)]})
    for key in subs:
        subs[key + "x"] = []  # a plain dict raises here
    for _key, holders in subs.items():
        holders.append(("s2", 0))  # a copy: the map is not changed
        subs.clear()
    assert subs == {}


@pytest.mark.parametrize("kind", ["flumph", "mosquitto"])
def test_every_message_arrives_while_other_clients_subscribe_and_leave(
    kind: str, tmp_path: Path
) -> None:
    broker = STARTERS[kind](tmp_path, USERS)
    stop = threading.Event()
    receiver = publisher = None
    try:
        receiver = Probe(broker, BACKEND_USER, client_id="receiver")
        assert receiver.subscribe("flumph/+/telemetry") == [1]
        publisher = Probe(broker, BACKEND_USER, client_id="publisher")

        def churn(name: str) -> None:
            while not stop.is_set():
                p = Probe(broker, name, client_id=f"{name}-{time.monotonic_ns()}")
                p.subscribe(f"flumph/{name}/#")
                p.close()

        threads = [threading.Thread(target=churn, args=(c,), daemon=True) for c in CHURNERS]
        for t in threads:
            t.start()
        for i in range(MESSAGES):
            publisher.publish(f"flumph/cam{i % 7}/telemetry", f'{{"n": {i}}}', qos=1)
        stop.set()
        for t in threads:
            t.join(30)
        got: list[object] = []
        deadline = time.monotonic() + 60  # a loaded machine delivers late, not never
        while len(got) < MESSAGES and time.monotonic() < deadline:
            got += [m for m in receiver.received(1) if m.topic.endswith("/telemetry")]
        assert len(got) == MESSAGES, f"{len(got)} of {MESSAGES} arrived"
        assert "changed size during iteration" not in broker.log()
    finally:
        stop.set()
        for p in (receiver, publisher):
            if p is not None:
                p.close()
        broker.stop()
