"""paho reconnects with jittered delays: after a broker restart a fleet does not come back in
lockstep. Real paho clients (flumph.mqtt.make_client) against the embedded broker, restarted."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flumph.mqtt import MqttSettings, make_client, next_reconnect_delay
from tests.brokers import start_embedded
from tests.conftest import free_port


@given(
    st.none() | st.floats(0.1, 600),
    st.floats(0.1, 10),
    st.floats(10, 600),
    st.integers(0, 2**32),
)
def test_reconnect_delay_stays_within_its_bounds(
    previous: float | None, low: float, high: float, seed: int
) -> None:
    delay = next_reconnect_delay(previous, low, high, random.Random(seed))
    assert low <= delay <= high
    if previous is not None:
        assert delay <= max(low, 3 * previous)


def test_reconnect_delays_spread_and_grow() -> None:
    rng = random.Random(7)
    firsts = [next_reconnect_delay(None, 1.0, 120.0, rng) for _ in range(1000)]
    assert 1.0 <= min(firsts) < 1.1 and 2.9 < max(firsts) <= 3.0  # spread over [1, 3]
    delay: float | None = None
    for _ in range(40):
        delay = next_reconnect_delay(delay, 1.0, 120.0, rng)
    assert delay is not None and delay > 10  # grows towards the cap


def reconnect_times(tmp_path: Path, jitter: bool, clients: int = 16) -> list[float]:
    """Start a broker, connect ``clients``, restart the broker; when each came back (s after
    the broker listened again)."""
    port = free_port()
    broker = start_embedded(tmp_path, port=port, state_dir=tmp_path / f"state-{jitter}")
    settings = MqttSettings(
        url=f"mqtt://127.0.0.1:{port}",
        reconnect_min_s=1.0,
        reconnect_max_s=8.0,
        reconnect_jitter=jitter,
    )
    lock = threading.Lock()
    connects: dict[int, list[float]] = {i: [] for i in range(clients)}
    paho_clients = []

    def on_connect(i: int) -> Any:
        def callback(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                with lock:
                    connects[i].append(time.monotonic())

        return callback

    try:
        for i in range(clients):
            c = make_client(settings, f"jitter-{jitter}-{i}")
            c.on_connect = on_connect(i)
            c.connect_async("127.0.0.1", port, keepalive=60)
            c.loop_start()
            paho_clients.append(c)
        deadline = time.monotonic() + 20
        while any(not v for v in connects.values()):
            assert time.monotonic() < deadline, "clients did not connect"
            time.sleep(0.05)
        broker.stop()
        broker = start_embedded(tmp_path, port=port, state_dir=tmp_path / f"state-{jitter}")
        back = time.monotonic()
        deadline = back + 40
        while any(len(v) < 2 for v in connects.values()):
            assert time.monotonic() < deadline, f"not all reconnected: {connects}"
            time.sleep(0.05)
        return sorted(v[1] - back for v in connects.values())
    finally:
        for c in paho_clients:
            c.disconnect()
            c.loop_stop()
        broker.stop()


def test_a_fleet_reconnects_spread_out_with_jitter_and_in_lockstep_without(
    tmp_path: Path,
) -> None:
    lockstep = reconnect_times(tmp_path, jitter=False)
    jittered = reconnect_times(tmp_path, jitter=True)
    lockstep_spread = lockstep[-1] - lockstep[0]
    jittered_spread = jittered[-1] - jittered[0]
    # Without jitter paho retries at the same instants in every client: they come back within
    # one retry of each other. With it they are spread over seconds.
    assert lockstep_spread < 0.6, lockstep
    assert jittered_spread > 1.0, jittered  # 16 draws over [1, 3] s: P(range < 1 s) = 0.03 %
