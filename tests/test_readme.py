"""README.md stays true: its configuration reference is the one the models generate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT


def test_config_reference_matches_the_models() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == generated, (
        "README.md's configuration reference is stale: run "
        "python scripts/config_reference.py --write"
    )


# --- the deployment steps, walked as far as this machine allows ------------------------------

DEPLOY_README = ROOT / "deploy" / "README.md"
UNIT = ROOT / "deploy" / "systemd" / "flumph-agent.service"


def sh_block(text: str, after: str) -> str:
    """The first ```sh block after the line that starts with ``after``."""
    m = re.search(rf"^{re.escape(after)}.*?```sh\n(.+?)\n```", text, re.S | re.M)
    assert m, f"no sh block after {after!r}"
    return m.group(1)


def test_readme_mentions_the_api_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "/docs" in readme and "/openapi.json" in readme


def test_readme_docker_env_passes_compose_config(tmp_path: Path) -> None:
    """The README's .env, written by its own command, satisfies docker-compose.yml."""
    block = sh_block((ROOT / "README.md").read_text(), "## Docker Compose")
    lines = block.splitlines()
    end = lines.index("EOF")
    heredoc = "\n".join(lines[: end + 1]) + "\n"
    assert lines[0].startswith("cat > .env <<EOF")
    subprocess.run(["bash", "-euc", heredoc], cwd=tmp_path, check=True, timeout=30)
    written = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert set(written) == {
        "FLUMPH_BACKEND_PASSWORD", "FLUMPH_AUTH_SECRET", "FLUMPH_DASHBOARD_PASSWORD",
    }  # fmt: skip
    assert len(written["FLUMPH_AUTH_SECRET"]) == 64  # openssl rand -hex 32 really ran
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    r = subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "--project-directory", str(ROOT),
         "--env-file", str(tmp_path / ".env"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    dashboard = services["dashboard"]["environment"]
    assert dashboard["FLUMPH_DASHBOARD_PASSWORD"] == written["FLUMPH_DASHBOARD_PASSWORD"]
    assert dashboard["FLUMPH_DASHBOARD_AUTH_SECRET"] == written["FLUMPH_AUTH_SECRET"]
    # What follows needs a Docker engine (none here): the documented compose commands only.
    rest = [line.split("#")[0].strip() for line in lines[end + 1 :]]
    assert rest == ["docker compose up -d --build", "docker compose --profile demo up -d"]


def unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_readme_systemd_steps_install_what_the_unit_reads(tmp_path: Path) -> None:
    """README's systemd steps are deploy/README.md's; run under a scratch root, they put the
    unit, its env file and its password file where the unit reads them, and the unit then passes
    ``systemd-analyze verify`` there. apt-get, useradd, pip and systemctl cannot run here: the
    user they would create is checked against the unit, pip's result is a stub binary."""
    readme = sh_block((ROOT / "README.md").read_text(), "## Installing an agent")
    deploy = sh_block(DEPLOY_README.read_text(), "## Agent on a Linux box")
    assert readme == deploy, "README.md and deploy/README.md give different systemd steps"
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)  # there on any systemd machine
    (unit_user,) = unit_values("User")
    state = unit_values("StateDirectory")[0]

    def rooted(command: str) -> str:
        return re.sub(r"(?<![\w.])/(etc|opt|var)/", f"{root}/\\1/", command)

    skipped = []
    for line in readme.splitlines():
        command = line.split("   #")[0].strip()
        word = command.split()[0]
        if word in ("apt-get", "systemctl", "journalctl"):
            skipped.append(word)
        elif word == "useradd":
            assert command.split()[-1] == unit_user
            assert f"--home-dir /var/lib/{state}" in command
            skipped.append(word)
        elif word == "python3":  # the virtualenv; pip's install is stood in for below
            assert command == "python3 -m venv /opt/flumph/venv"
        elif word.endswith("/pip"):
            binary = Path(rooted(word)).parent / "flumph"
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\n")
            binary.chmod(0o755)
        else:
            subprocess.run(["bash", "-euc", rooted(command)], cwd=ROOT, check=True, timeout=30)
    assert skipped == ["apt-get", "useradd", "systemctl", "systemctl", "journalctl"]

    # The files the unit reads are the ones the steps installed.
    (env_file,) = unit_values("EnvironmentFile")
    installed_env = (root / env_file.lstrip("/")).read_text()
    assert installed_env == (UNIT.parent / "flumph-agent.env").read_text()
    (credential,) = unit_values("LoadCredential")
    password = root / credential.split(":", 1)[1].lstrip("/")
    assert password.read_text() == "THE-DEVICE-PASSWORD\n"
    assert password.stat().st_mode & 0o077 == 0  # root only
    exec_start = unit_values("ExecStart")[0].split()[0]
    assert (root / exec_start.lstrip("/")).is_file()

    # systemd-analyze verify against that root (the host's own units for the targets it names).
    units = root / "usr" / "lib" / "systemd" / "system"
    units.parent.mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    analyze = shutil.which("systemd-analyze") or "systemd-analyze"
    r = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", UNIT.name],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout == r.stderr == "", r.stdout + r.stderr
