"""The broker's pure parts and its refusals: ACL rule, password file, retained store, settings,
and `flumph broker` refusing a bad password file or bad configuration by naming the key."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flumph.broker.acl import Acl
from flumph.broker.config import BrokerSettings
from flumph.broker.fixes import check_upstream
from flumph.broker.main import load, parse_args
from flumph.broker.passwd import (
    PasswdError,
    hash_password,
    parse_passwd,
    read_passwd_file,
    update_passwd_file,
    verify_password,
)
from flumph.broker.server import amqtt_config, preflight
from flumph.broker.store import Retained, RetainedStore, StoreError
from flumph.config import ConfigError


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        ("cam1", "flumph/cam1/status", True),
        ("cam1", "flumph/cam1/cmd/+", True),
        ("cam1", "flumph/cam1/#", True),
        ("cam1", "flumph/cam1", True),
        ("cam1", "flumph/cam2/desired", False),
        ("cam1", "flumph/+/desired", False),
        ("cam1", "flumph/#", False),
        ("cam1", "#", False),
        ("cam1", "flumph", False),
        ("cam1", "other/cam1/status", False),
        ("cam1", "$SYS/broker/uptime", False),
        ("+", "flumph/+/desired", False),  # a username is never a wildcard
        ("#", "flumph/#", False),
        (None, "flumph/cam1/status", False),
        ("flumph-backend", "flumph/+/desired", True),
        ("flumph-ops", "#", True),
        # The answers to set: the ops and backend accounts read all, a device only its own.
        ("flumph-ops", "flumph/+/set/+", True),
        ("flumph-backend", "flumph/cam2/set/rejected", True),
        ("cam1", "flumph/cam1/set/accepted", True),
        ("cam1", "flumph/cam2/set/accepted", False),
        ("cam1", "flumph/+/set/rejected", False),
    ],
)
def test_acl(user: str | None, topic: str, allowed: bool) -> None:
    assert Acl().allows(user, topic) is allowed


def test_acl_multi_level_prefix() -> None:
    acl = Acl("site/a", admins=())
    assert acl.allows("cam1", "site/a/cam1/status")
    assert not acl.allows("cam1", "site/b/cam1/status")
    assert not acl.allows("site", "site/a")


def test_passwd_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "passwd"
    update_passwd_file(f, "cam1", "one")
    update_passwd_file(f, "cam2", "two")
    update_passwd_file(f, "cam1", "uno")  # replaces
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    users = read_passwd_file(f)
    assert list(users) == ["cam1", "cam2"]
    assert verify_password(users["cam1"], "uno") and not verify_password(users["cam1"], "one")
    assert users["cam1"].startswith("$argon2id$")
    update_passwd_file(f, "cam2", None)
    assert list(read_passwd_file(f)) == ["cam1"]
    with pytest.raises(PasswdError, match="'cam9' is not in"):
        update_passwd_file(f, "cam9", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cam1\n", "line 1: expected 'username:hash'"),
        ("# c\n\ncam1:$6$salt$abc\n", "line 3: the hash for 'cam1' is not an Argon2 hash"),
        ("cam1:plain-password\n", "line 1: the hash for 'cam1' is not an Argon2 hash"),
        (":{h}\n", "line 1: username '' must be non-empty"),
        ("a/b:{h}\n", "line 1: username 'a/b'"),
        ("cam1:{h}\ncam1:{h}\n", "line 2: user 'cam1' appears twice"),
    ],
)
def test_bad_passwd_lines_are_named(text: str, message: str) -> None:
    h = hash_password("x")
    with pytest.raises(PasswdError, match="^pw " + message.replace("$", r"\$")):
        parse_passwd(text.replace("{h}", h), "pw")


def test_verify_rejects_garbage_hash() -> None:
    assert not verify_password("not-a-hash", "x")


def test_store_applies_and_reloads(tmp_path: Path) -> None:
    s = RetainedStore(tmp_path / "state")
    s.apply({"a/1": Retained("a/1", 1, b"one"), "a/2": Retained("a/2", 0, b"\x00\xff")})
    s.apply({"a/1": None, "a/2": Retained("a/2", 1, b"two")})
    s.close()
    again = RetainedStore(tmp_path / "state")
    assert again.load() == [Retained("a/2", 1, b"two")]
    again.close()


def test_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "retained.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=f"state_dir {tmp_path}"):
        RetainedStore(tmp_path).load()


def test_settings_defaults_and_anonymous() -> None:
    s = BrokerSettings()
    assert (s.port, s.prefix, s.anonymous_allowed, s.acl_enforced) == (1883, "flumph", True, False)
    s = BrokerSettings(passwd_file="pw")
    assert (s.anonymous_allowed, s.acl_enforced) == (False, True)
    with pytest.raises(ValueError, match="allow_anonymous=false needs a passwd_file"):
        BrokerSettings(allow_anonymous=False)


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "flumph.toml"
    toml.write_text('[broker]\nport = 1884\nprefix = "site"\nadmin_users = ["root"]\n')
    env = {"FLUMPH_BROKER_PORT": "1885", "FLUMPH_BROKER_ADMIN_USERS": "a, b"}
    s = load(parse_args(["--config", str(toml)]), env)
    assert (s.port, s.prefix, s.admin_users) == (1885, "site", ["a", "b"])
    s = load(parse_args(["--config", str(toml), "--port", "1886", "--no-acl"]), env)
    assert (s.port, s.acl) == (1886, False)


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[broker]\nprot = 1\n", {}, "prot: unknown key"),
        ("[broker]\nport = 70000\n", {}, "port: Input should be less than or equal to 65535"),
        ("[broker]\nprefix = 'a/+'\n", {}, "prefix: Value error, topic prefix 'a/\\+'"),
        ("", {"FLUMPH_BROKER_PORT": "x"}, "port: Input should be a valid integer"),
        ("", {"FLUMPH_BROKER_PASWD_FILE": "x"}, "FLUMPH_BROKER_PASWD_FILE names no setting"),
        ("[broker]\nallow_anonymous = false\n", {}, "allow_anonymous=false needs a passwd_file"),
        ("[broker]\nlog_level = 'loud'\n", {}, "log_level: Value error, must be one of"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    f = tmp_path / "flumph.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load(parse_args(["--config", str(f)]), env)


def test_preflight_names_passwd_file_and_state_dir(tmp_path: Path) -> None:
    bad = tmp_path / "pw"
    bad.write_text("cam1:$argon2id$nonsense\n")
    with pytest.raises(ConfigError, match=rf"^passwd_file: {bad} line 1: the hash for 'cam1'"):
        preflight(BrokerSettings(passwd_file=bad, state_dir=tmp_path / "s"))
    with pytest.raises(ConfigError, match=r"^passwd_file: password file .* does not exist"):
        preflight(BrokerSettings(passwd_file=tmp_path / "missing", state_dir=tmp_path / "s"))
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=rf"^state_dir {a_file}"):
        preflight(BrokerSettings(state_dir=a_file))


def test_amqtt_config_wires_the_plugins(tmp_path: Path) -> None:
    s = BrokerSettings(host="127.0.0.1", port=1, ws_port=2, passwd_file="pw", state_dir=tmp_path)
    c = amqtt_config(s)
    assert c["listeners"]["ws"] == {"type": "ws", "bind": "127.0.0.1:2"}
    assert c["timeout_disconnect_delay"] == 0
    plugins = c["plugins"]
    assert plugins["flumph.broker.plugins.DeviceAclPlugin"]["enabled"] is True
    assert plugins["flumph.broker.plugins.PasswordAuthPlugin"]["allow_anonymous"] is False
    assert plugins["flumph.broker.plugins.RetainedStorePlugin"] == {"state_dir": str(tmp_path)}
    assert plugins["flumph.broker.plugins.WillAclPlugin"]["enabled"] is True
    plain = amqtt_config(s, fixes=False)["plugins"]
    assert "flumph.broker.plugins.RetainedStorePlugin" not in plain
    assert "flumph.broker.plugins.WillAclPlugin" not in plain


def test_installed_amqtt_is_the_one_the_fixes_patch() -> None:
    check_upstream()


def test_fixes_refuse_other_amqtt_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import amqtt

    from flumph.broker import fixes

    name = "Broker._handle_client_session"
    fn, _, assumption = fixes._UPSTREAM[name]
    monkeypatch.setitem(fixes._UPSTREAM, name, (fn, "0" * 16, assumption))
    with pytest.raises(fixes.UpstreamMismatch, match=r"Broker\._handle_client_session .* re-check"):
        check_upstream()
    monkeypatch.setattr(amqtt, "__version__", "0.13.0")
    with pytest.raises(fixes.UpstreamMismatch, match=r"amqtt 0\.13\.0 is installed"):
        check_upstream()


def _flumph_broker(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    return subprocess.run(
        [sys.executable, "-m", "flumph", "broker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean | (env or {}),
    )


def test_cli_refuses_a_bad_passwd_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(f"cam1:{hash_password('x')}\ncam2 secret\n")
    r = _flumph_broker("--port", "0", "--passwd-file", str(pw), "--state-dir", str(tmp_path))
    assert r.returncode == 2
    assert f"passwd_file: {pw} line 2: expected 'username:hash'" in r.stderr


def test_cli_refuses_bad_environment(tmp_path: Path) -> None:
    r = _flumph_broker("--state-dir", str(tmp_path), env={"FLUMPH_BROKER_WS_PORT": "many"})
    assert r.returncode == 2
    assert "ws_port: Input should be a valid integer" in r.stderr


def test_cli_passwd_reads_stdin_and_refuses_bad_names(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    r = _flumph_broker("passwd", str(pw), "cam1", stdin="\n")
    assert r.returncode == 2 and "empty password" in r.stderr
    r = _flumph_broker("passwd", str(pw), "a:b", stdin="pw\n")
    assert r.returncode == 2 and "username 'a:b'" in r.stderr
    assert not pw.exists()


def test_store_file_is_plain_sqlite(tmp_path: Path) -> None:
    """Ops can inspect retained state with the sqlite3 tool while the broker is down."""
    s = RetainedStore(tmp_path)
    s.apply({"t": Retained("t", 1, b"x")})
    s.close()
    with sqlite3.connect(tmp_path / "retained.sqlite3") as db:
        assert db.execute("SELECT topic, qos, payload FROM retained").fetchall() == [("t", 1, b"x")]
