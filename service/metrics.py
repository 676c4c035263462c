"""``GET /metrics`` in the Prometheus text format, for the server components.

Server components only (prometheus_client and, for the route, FastAPI: the ``[server]`` extra);
the agent never imports it. Each component provides a :class:`MetricsSource`: a prometheus_client
collector that reads the component's own state when scraped (nothing is kept twice), and an
async ``refresh`` for what must not be read on the event loop (libsrt statistics are C calls).
``flumph up`` serves the sources of the broker, the ingest and the dashboard on one route.

Naming (Prometheus' conventions, as MediaMTX applies them): ``flumph_<component>_…``, base units
(``_seconds``, ``_bytes``), counters end in ``_total``, one label set per stream or device, and
only ids that are known devices or published streams become label values, up to a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from fastapi import FastAPI

# The classic text format, which every Prometheus version reads; every name here is valid in it.
# (prometheus_client 0.26 labels the same text "version=1.0.0", unknown to Prometheus 2.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    def collect(self) -> Iterable[Metric]: ...
    async def refresh(self) -> None: ...


class _Collector:
    """Adapts a source to a registry (which calls ``collect`` while rendering)."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the source may not be running yet


class _Collected:
    """Families already collected: what a registry renders off the event loop."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families

    def describe(self) -> list[Metric]:
        return []


def registry_of(sources: Sequence[MetricsSource]) -> CollectorRegistry:
    """A registry that collects ``sources`` whenever it renders (any thread)."""
    registry = CollectorRegistry(auto_describe=False)
    for source in sources:
        registry.register(_Collector(source))
    return registry


def _format(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families))
    return generate_latest(registry)


async def render(sources: Sequence[MetricsSource]) -> bytes:
    """Collect on the event loop (the sources' state lives there: nothing changes under a
    collector), format in a thread: formatting is ~3/4 of a scrape (bench/metrics_cost.py)."""
    await asyncio.gather(*(s.refresh() for s in sources))
    families = [family for source in sources for family in source.collect()]
    return await asyncio.to_thread(_format, families)


def add_metrics_route(
    app: FastAPI, sources: Sequence[MetricsSource], guard: Callable[..., Any] | None
) -> None:
    """``GET /metrics`` on ``app``; ``guard`` is the API's own auth dependency (None: open)."""
    # Imported here: the standalone broker uses registry_of without a web framework.
    from fastapi import Depends
    from fastapi.responses import Response

    dependencies = [Depends(guard)] if guard is not None else []

    @app.get("/metrics", dependencies=dependencies, include_in_schema=False)
    async def metrics() -> Response:
        body = await render(sources)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
