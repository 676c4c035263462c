"""`flumph broker`: the embedded MQTT broker alone; `flumph broker passwd FILE USER` manages its
password file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys

from flumph.clihelp import default_of
from flumph.config import ConfigError, load_config
from flumph.logsetup import LOG_LEVELS, setup_logging
from flumph.service.ports import PortWanted, first_problem

from .config import ENV_PREFIX, BrokerSettings

log = logging.getLogger("flumph.broker")

_FLAGS = (
    "host", "port", "ws_port", "passwd_file", "allow_anonymous", "acl", "prefix", "state_dir",
    "connect_timeout_s", "log_level", "metrics_port", "metrics_host",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    def d(name: str) -> str:
        return default_of(BrokerSettings, name)

    p = argparse.ArgumentParser(
        prog="flumph broker",
        description="MQTT 3.1.1 broker (amqtt) with argon2 passwords, a per-device ACL, a will "
        "for clients that go silent, and retained messages that survive a restart. "
        "'flumph broker passwd FILE USER' adds or updates an account.",
    )
    p.add_argument("--config", help="TOML file; its [broker] table is read")
    p.add_argument("--host", help=f"bind address ({d('host')})")
    p.add_argument("--port", type=int, help=f"MQTT TCP port ({d('port')})")
    p.add_argument("--ws-port", type=int, help="also serve MQTT over WebSockets on this port")
    p.add_argument("--passwd-file", help="username:argon2-hash file (default: no authentication)")
    p.add_argument(
        "--allow-anonymous",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="accept clients without username (default: only when there is no passwd file)",
    )
    p.add_argument(
        "--acl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="devices reach only <prefix>/<username>/... (default on, with a passwd file)",
    )
    p.add_argument("--prefix", help=f"topic prefix ({d('prefix')})")
    p.add_argument("--state-dir", help="retained messages (default: ~/.local/state/flumph/broker)")
    p.add_argument(
        "--connect-timeout-s", type=float, help=f"time to send CONNECT ({d('connect_timeout_s')})"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this HTTP port (default: off)",
    )
    p.add_argument("--metrics-host", help=f"bind address of --metrics-port ({d('metrics_host')})")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load(ns: argparse.Namespace, environ: dict[str, str] | None = None) -> BrokerSettings:
    return load_config(
        BrokerSettings,
        path=ns.config,
        section="broker",
        env_prefix=ENV_PREFIX,
        environ=os.environ if environ is None else environ,
        flags={k: getattr(ns, k) for k in _FLAGS},
    )


async def serve(settings: BrokerSettings) -> int:
    from .server import BrokerStartError, EmbeddedBroker

    broker = EmbeddedBroker(settings)
    try:
        await broker.start()
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except (BrokerStartError, OSError) as e:
        log.error("%s", e)
        return 1
    metrics_server = None
    if settings.metrics_port is not None:
        from .metrics import serve_metrics

        try:
            metrics_server = serve_metrics(
                broker.metrics, settings.metrics_host, settings.metrics_port
            )
        except OSError as e:
            log.error(
                "metrics on %s:%d: %s: choose another with --metrics-port",
                settings.metrics_host, settings.metrics_port, e,
            )  # fmt: skip
            await broker.stop()
            return 1
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics_host,
                 metrics_server.port)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: writing retained messages")
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.stop)
        await broker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["passwd"]:
        return passwd_main(args[1:])
    ns = parse_args(args)
    setup_logging(ns.log_level or "info", json_lines=ns.log_json)
    try:
        settings = load(ns)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    setup_logging(settings.log_level, json_lines=ns.log_json)
    from .server import quiet_amqtt_logging

    quiet_amqtt_logging(settings.log_level)
    wanted = [PortWanted("--port", settings.host, settings.port)]
    if settings.ws_port is not None:
        wanted.append(PortWanted("--ws-port", settings.host, settings.ws_port))
    if settings.metrics_port is not None:
        wanted.append(PortWanted("--metrics-port", settings.metrics_host, settings.metrics_port,
                                 host_flag="--metrics-host"))  # fmt: skip
    problem = first_problem(wanted)
    if problem is not None:
        log.error("%s", problem)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(settings))
    return 0


def _read_password(username: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass(f"password for {username}: ")
    if first != getpass.getpass("again: "):
        raise ValueError("the two passwords differ")
    return first


def passwd_main(argv: list[str]) -> int:
    from .passwd import PasswdError, update_passwd_file

    p = argparse.ArgumentParser(
        prog="flumph broker passwd",
        description="Add or update USER in the broker's password file (argon2id). The password "
        "is read from the first line of stdin, or prompted for on a terminal. A device's "
        "username is its device id.",
    )
    p.add_argument("file", help="password file (created with mode 0600 if missing)")
    p.add_argument("user", help="username: a device id, flumph-backend or flumph-ops")
    p.add_argument("-D", "--delete", action="store_true", help="remove USER instead")
    ns = p.parse_args(argv)
    try:
        password = None if ns.delete else _read_password(ns.user)
        update_passwd_file(ns.file, ns.user, password)
    except (PasswdError, ValueError, OSError) as e:
        print(f"flumph broker passwd: {e}", file=sys.stderr)
        return 2
    print(f"{'removed' if ns.delete else 'set'} {ns.user} in {ns.file}", file=sys.stderr)
    return 0
