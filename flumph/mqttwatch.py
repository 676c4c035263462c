"""Why an MQTT client is not connected, said as it happens.

paho's threaded client (``connect_async`` + ``loop_start``) retries a broker it cannot reach by
itself and says nothing: no exception reaches the caller, ``on_connect`` never runs, and its own
log line ("Connection failed, retrying") carries no reason. paho calls ``on_connect_fail`` from
inside the ``except OSError`` block of its retry loop, so the exception being handled there is
the reason; :func:`watch_connection` reads it, logs one line per failed attempt (paho's backoff
spaces them: ``reconnect_min_s`` doubling up to ``reconnect_max_s``) and hands it to the service,
whose health endpoint can then say ``connected: false, error: "…"``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

# Backend services (dashboard, ingest) sit beside their broker: they retry every few seconds and
# say so each time. Devices keep MqttSettings' longer backoff (a fleet reconnecting at once after
# a broker restart, on metered links).
BACKEND_RECONNECT_MAX_S = 10.0


def failure_reason(error: BaseException | None, host: str, port: int) -> str:
    """One line for why a TCP/TLS connection to ``host:port`` failed."""
    where = f"{host}:{port}"
    if error is None:
        return f"cannot connect to {where}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where} (no broker listening there?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host!r}: {error.strerror or error}"
    if isinstance(error, TimeoutError):
        return f"no answer from {where} (timed out)"
    if isinstance(error, ssl.SSLError):
        return f"TLS with {where} failed: {error.reason or error}"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot connect to {where}: {error.strerror}"
    return f"cannot connect to {where}: {error}"


def watch_connection(
    client: Any,
    *,
    url: str,
    host: str,
    port: int,
    log: logging.Logger,
    flag: str,
    on_failure: Callable[[str], object] | None = None,
) -> None:
    """Log every failed connection attempt of ``client`` with its reason, and report it.

    Call it after setting ``client.on_connect``: it wraps it, to log the recovery. ``flag``
    names the option that points at the broker (``--mqtt``), for the operator who typed the
    wrong one. ``on_failure`` runs on paho's thread: hop to your own loop from it.
    """
    failures = 0

    def connect_failed(_client: Any, _userdata: Any) -> None:
        nonlocal failures
        failures += 1
        reason = failure_reason(sys.exc_info()[1], host, port)
        log.warning(
            "cannot reach the MQTT broker %s: %s; retrying (attempt %d; check %s)",
            url, reason, failures, flag,
        )  # fmt: skip
        if on_failure is not None:
            on_failure(reason)

    def connected(*_args: Any) -> None:
        nonlocal failures
        if failures:
            log.info("reached the MQTT broker %s after %d failed attempts", url, failures)
        failures = 0

    client.on_connect_fail = connect_failed
    previous = client.on_connect

    def on_connect(*args: Any) -> None:
        connected()
        if previous is not None:
            previous(*args)

    client.on_connect = on_connect
