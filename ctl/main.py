"""`flumph ctl`: the ops tool, on the MQTT contract, against any broker.

    flumph ctl devices                       table of every device's retained state
    flumph ctl start ID | stop ID            patch {"streaming": true|false} on <p>/ID/set
    flumph ctl set ID key=value...           any settings patch on <p>/ID/set
                                             (each waits until ID applied it; --no-wait)
    flumph ctl snapshot ID [-o FILE]         cmd/snapshot, then the new retained still
    flumph ctl cmd ID keyframe|restart       one-shot command, waits for its ack
    flumph ctl grant ID MB                   one-shot data allowance for this budget period
    flumph ctl watch [ID] [--count N]        status/telemetry/... lines until Ctrl-C
    flumph ctl usage [ID]                    data used vs budget (+ 48 h by the hour), from
                                             the dashboard's API (see flumph.ctl.usage)
    flumph ctl add ID | forget ID            make a device known / remove it (ctl.lifecycle)

Patches go to ``set`` (never straight to ``desired``) so that whichever backend owns the shadow
merges them. Each carries a fresh ``client_token``; the backend's answer with that token on
``set/accepted`` gives the version, and then ctl waits until the device reports ``applied_v`` at
least that version (``--no-wait``: only for the backend's answer). A rejection, an offline device,
a device error or the timeout ends it with exit code 1 and the reason (see
:mod:`flumph.ctl.setwait`).
Values in ``key=value`` are JSON when they parse (``bitrate_kbps=300``, ``streaming=true``), else
strings (``codec=av1``), and are validated here before anything is sent. Broker and account:
``--mqtt URL --username U --password P`` or ``FLUMPH_CTL_MQTT_URL``, ``FLUMPH_CTL_MQTT_USERNAME``,
``FLUMPH_CTL_MQTT_PASSWORD`` (or a ``[ctl.mqtt]`` table, like every component's; the older
``FLUMPH_CTL_MQTT``, ``FLUMPH_CTL_USERNAME``, ... and flat ``[ctl]`` keys still work, told once).

Exit codes: 0 done; 1 runtime failure (broker unreachable or refusing, timeout, a patch refused,
a device offline or in error); 2 usage or validation error (the message names the key or value),
or a device that is not known.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flumph.clihelp import default_of
from flumph.config import ConfigError, load_config
from flumph.control import ContractError, Grant, check_device_id, decode, validate_patch
from flumph.ctl import lifecycle as ctl_lifecycle
from flumph.ctl import usage as ctl_usage
from flumph.ctl.commands import cmd_command, cmd_devices, cmd_snapshot, cmd_watch, send_patch
from flumph.ctl.config import ENV_PREFIX, RENAMED, CtlConfig, CtlMqtt
from flumph.ctl.session import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CtlError, Session

# --- pure helpers ---------------------------------------------------------------------------


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["bitrate_kbps=300", "codec=av1"]`` → a validated patch; ContractError names the item."""
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ContractError(f"{item!r} is not key=value")
        try:
            patch[key] = json.loads(text)
        except ValueError:
            patch[key] = text
    if not patch:
        raise ContractError("give at least one key=value")
    return validate_patch(patch)


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("broker")
    sup = argparse.SUPPRESS
    g.add_argument("--mqtt", metavar="URL", default=sup, help="mqtt[s]://host:port")
    g.add_argument("--username", default=sup, help="MQTT username (env FLUMPH_CTL_MQTT_USERNAME)")
    g.add_argument("--password", default=sup, help="prefer env FLUMPH_CTL_MQTT_PASSWORD")
    g.add_argument("--ca-file", default=sup, help="CA bundle for mqtts://")
    g.add_argument("--prefix", default=sup, help=f"topic prefix ({default_of(CtlMqtt, 'prefix')})")
    g.add_argument("--timeout", dest="timeout_s", type=float, default=sup, help="seconds (10)")
    g.add_argument("--config", default=sup, help="TOML file; its [ctl] table is read")

    p = argparse.ArgumentParser(
        prog="flumph ctl",
        parents=[common],
        description="Ops tool: list, start, stop, configure and watch devices over MQTT.",
        epilog="Exit codes: 0 ok, 1 runtime failure (broker, timeout, patch refused, device "
        "offline or in error), 2 usage/validation.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("devices", parents=[common], help="table of the devices' retained state")
    d.add_argument("--wait", type=float, default=1.0, help="seconds to collect (default 1)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, text in (("start", "stream now"), ("stop", "stop streaming")):
        c = sub.add_parser(name, parents=[common], help=f"{text}: patch on <prefix>/ID/set")
        c.add_argument("device")
        _no_wait(c)
    c = sub.add_parser("set", parents=[common], help="patch settings: set ID key=value...")
    c.add_argument("device")
    c.add_argument("assign", nargs="+", metavar="key=value")
    _no_wait(c)
    c = sub.add_parser("snapshot", parents=[common], help="take a still and save it")
    c.add_argument("device")
    c.add_argument("-o", "--output", help="file (default ID-YYYYmmdd-HHMMSS.jpg|avif)")
    c = sub.add_parser("cmd", parents=[common], help="one-shot command: keyframe or restart")
    c.add_argument("device")
    c.add_argument("name", choices=("keyframe", "restart", "snapshot"))
    c = sub.add_parser("grant", parents=[common], help="data allowance: grant ID MB (10^6 B)")
    c.add_argument("device")
    c.add_argument("mb", type=float, help="megabytes for this budget period, on top of it")
    c = sub.add_parser("watch", parents=[common], help="print messages until Ctrl-C")
    c.add_argument("device", nargs="?")
    c.add_argument("--count", type=int, help="exit after this many lines")
    c = sub.add_parser("usage", parents=[common], help="data used vs budget, 48 h by the hour")
    c.add_argument("device", nargs="?")
    c.add_argument("--json", action="store_true", help="print the dashboard's JSON")
    c.add_argument("--dashboard", default=sup, help="dashboard URL (http://127.0.0.1:8000)")
    c.add_argument(
        "--dashboard-password", default=sup, help="prefer env FLUMPH_CTL_DASHBOARD_PASSWORD"
    )
    ctl_lifecycle.add_parsers(sub, common)
    return p


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wait",
        dest="wait_applied",
        action="store_false",
        help="return once the backend accepted the patch (set/accepted), without waiting for "
        "the device to apply it",
    )


def _config(ns: argparse.Namespace) -> CtlConfig:
    # The broker flags keep their names (--mqtt URL, --username, ...) and set [ctl.mqtt] keys.
    names = (*RENAMED, *(k for k in CtlConfig.model_fields if k != "mqtt"))
    flags = {RENAMED.get(k, k): getattr(ns, k, None) for k in names}
    return load_config(
        CtlConfig,
        path=getattr(ns, "config", None),
        section="ctl",
        env_prefix=ENV_PREFIX,
        flags=flags,
        renamed=RENAMED,
    )


def _patch(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.command == "start":
        return {"streaming": True}
    if ns.command == "stop":
        return {"streaming": False}
    return parse_assignments(ns.assign)


def run(ns: argparse.Namespace, cfg: CtlConfig) -> int:
    device = getattr(ns, "device", None)
    patch: dict[str, Any] | None = None
    # Everything that can be checked without the broker is checked first (exit 2).
    if device is not None:
        check_device_id(device)
    if ns.command in ("start", "stop", "set"):
        patch = _patch(ns)
    if ns.command == "usage":
        dashboard = ctl_usage.Dashboard(cfg.dashboard, cfg.dashboard_password, cfg.timeout_s)
        try:
            lines = ctl_usage.usage(dashboard, device, ns.json)
        except ctl_usage.UsageError as e:
            raise CtlError(str(e)) from None
        print("\n".join(lines))
        return EXIT_OK
    if ns.command == "grant":
        decode(Grant, json.dumps({"id": "check", "mb": ns.mb}))  # bad MB: exit 2, named
    s = Session(cfg)
    try:
        s.connect()
        if ns.command == "devices":
            return cmd_devices(s, ns)
        if ns.command == "add":
            return ctl_lifecycle.cmd_add(s, ns.device)
        if ns.command == "forget":
            return ctl_lifecycle.cmd_forget(s, ns.device)
        if ns.command != "watch":
            ctl_lifecycle.require_known(s, ns.device)  # UnknownDevice: exit 2, says how to add
        if patch is not None:
            return send_patch(s, ns.device, patch, ns.wait_applied)
        if ns.command == "snapshot":
            return cmd_snapshot(s, ns.device, ns.output)
        if ns.command == "cmd":
            return cmd_command(s, ns.device, ns.name)
        if ns.command == "grant":
            return cmd_command(s, ns.device, "grant", ns.mb)
        return cmd_watch(s, device, ns.count)
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = sys.argv[1:] if argv is None else argv
    if not args:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    ns = parser.parse_args(args)  # exits 2 on a usage error
    try:
        cfg = _config(ns)
        return run(ns, cfg)
    except (ContractError, ConfigError) as e:
        print(f"flumph ctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CtlError as e:
        print(f"flumph ctl: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
