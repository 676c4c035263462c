"""The `flumph` program's contract with scripts: --version, --help everywhere, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flumph import __version__
from flumph.cli import SUBCOMMANDS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumph", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"flumph {__version__}"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(command: str) -> None:
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert f"flumph {command}" in r.stdout and "--" in r.stdout


def test_unknown_command_and_no_command_exit_2() -> None:
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    assert run().returncode == 2
