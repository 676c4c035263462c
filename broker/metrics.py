"""The embedded broker's Prometheus metrics: clients, messages in and out, subscriptions,
retained messages. Aggregates only: no client id or topic becomes a label (both are chosen by
whoever connects).

Where they are served:

- ``flumph up``: on its one HTTP server's ``/metrics``, with the ingest's and the dashboard's,
  behind the dashboard's login when a password is set. One process, one scrape target, no port
  more to open or to protect.
- ``flumph broker --metrics-port N``: the broker alone has no HTTP server, and FastAPI + uvicorn
  for one route would be most of its memory again; prometheus_client's own small HTTP server runs
  in a thread instead, on loopback unless ``--metrics-host`` says otherwise (it has no login:
  the numbers are fleet-wide counts, but keep it off public interfaces). Off by default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric


class BrokerStats:
    """Counters the protocol handlers bump on the event loop; read from any thread (int reads
    are atomic under the GIL; a scrape may see one counter a message ahead of another)."""

    def __init__(self) -> None:
        self.messages_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0

    def received(self, size: int) -> None:
        self.messages_received += 1
        self.bytes_received += size

    def sent(self, size: int) -> None:
        self.messages_sent += 1
        self.bytes_sent += size


class CountingBroker(Protocol):
    stats: BrokerStats

    def connected_clients(self) -> int: ...
    def subscription_count(self) -> int: ...
    def retained_count(self) -> int: ...


class BrokerMetrics:
    """A metrics source (see :mod:`flumph.service.metrics`) over a running broker, or nothing while
    it is stopped."""

    def __init__(self, broker: Callable[[], CountingBroker | None]) -> None:
        self._broker = broker

    async def refresh(self) -> None:
        return None

    def collect(self) -> Iterable[Metric]:
        broker = self._broker()
        yield GaugeMetricFamily(
            "flumph_broker_up", "1 while the embedded broker runs", value=int(broker is not None)
        )
        if broker is None:
            return
        st = broker.stats
        yield GaugeMetricFamily(
            "flumph_broker_clients", "Connected clients", value=broker.connected_clients()
        )
        yield GaugeMetricFamily(
            "flumph_broker_subscriptions", "Subscriptions of every session",
            value=broker.subscription_count(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "flumph_broker_retained_messages", "Retained messages held",
            value=broker.retained_count(),
        )  # fmt: skip
        yield CounterMetricFamily(
            "flumph_broker_messages_received", "PUBLISH packets received from clients",
            value=st.messages_received,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flumph_broker_messages_sent", "Messages sent to clients (deliveries and retained)",
            value=st.messages_sent,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flumph_broker_received_bytes", "Payload bytes received from clients",
            value=st.bytes_received,
        )  # fmt: skip
        yield CounterMetricFamily(
            "flumph_broker_sent_bytes", "Payload bytes sent to clients", value=st.bytes_sent
        )


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server for the standalone broker, stopped with :meth:`stop`."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(metrics: BrokerMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (0: any free port) from a thread of its own."""
    from prometheus_client import start_http_server

    from flumph.service.metrics import registry_of

    registry = registry_of([metrics])
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
