"""The one `flumph` program: dispatches each subcommand to the component that owns it.

Components are imported lazily so that `flumph agent` works on a device that has only the agent's
dependencies installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flumph import __version__

# subcommand -> (module with main(argv) -> int, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("flumph.up.main", "the whole backend in one process (broker + ingest + dashboard)"),
    "broker": ("flumph.broker.main", "the embedded MQTT broker alone"),
    "ingest": ("flumph.ingest.main", "the SRT ingest and WebSocket relay alone"),
    "dashboard": ("flumph.dashboard.main", "the dashboard web app alone"),
    "agent": ("flumph.agent.main", "the device agent: camera -> encoder -> SRT"),
    "ctl": ("flumph.ctl.main", "ops tool: list, start, stop and configure devices"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flumph",
        description="Live video from remote cameras on metered links.",
        epilog="Run 'flumph COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"flumph {__version__}")
    p.add_argument(
        "command",
        choices=sorted(SUBCOMMANDS),
        metavar="COMMAND",
        help="; ".join(f"{k}: {v[1]}" for k, v in SUBCOMMANDS.items()),
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = _parser()
    if not args or args[0].startswith("-"):
        parser.parse_args(args)  # handles --help/--version, or errors out
        parser.print_help()
        return 2
    ns = parser.parse_args(args[:1])
    module_name = SUBCOMMANDS[ns.command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(
            f"flumph {ns.command}: missing dependency {e.name!r}; install the extra it needs, "
            "e.g. pip install 'flumph[server]' or 'flumph[agent]'",
            file=sys.stderr,
        )
        return 3
    result: int = module.main(args[1:])
    return result
