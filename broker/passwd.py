"""The broker's password file: one ``username:argon2-hash`` per line, ``#`` comments allowed.

The same layout as mosquitto's and amqtt's password files, with Argon2 hashes only (the PHC
string argon2-cffi writes, ``$argon2id$v=19$m=...``), so a file made by amqtt's own tools works
too. Parsing is pure; :func:`update_passwd_file` rewrites the file atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# One of OWASP's equivalent minimums for Argon2id (9 MiB, 4 passes, 1 lane): ~30 ms per check on
# an idle core here, like 19 MiB x 2, but the broker's two Argon2 threads then keep ~18 MiB of
# malloc arena instead of ~40 MiB. Verification reads the parameters from each hash.
_HASHER = argon2.PasswordHasher(time_cost=4, memory_cost=9216, parallelism=1)


class PasswdError(ValueError):
    """A password file or entry that cannot be used; the message names the file and line."""


def check_username(username: str) -> str:
    if not username or any(c in username for c in ":#+/\x00") or username != username.strip():
        raise PasswdError(
            f"username {username!r} must be non-empty, without spaces around it, "
            "and contain none of ':', '#', '+', '/'"
        )
    return username


def hash_password(password: str) -> str:
    if not password:
        raise PasswdError("empty password")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; costs one Argon2 run, so call it off the event loop."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def parse_passwd(text: str, source: str = "password file") -> dict[str, str]:
    """``username -> hash``; raises PasswdError naming the line of the first bad entry."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password_hash = line.partition(":")
        where = f"{source} line {number}"
        if not sep:
            raise PasswdError(f"{where}: expected 'username:hash', found no ':'")
        try:
            check_username(username)
        except PasswdError as e:
            raise PasswdError(f"{where}: {e}") from None
        try:
            argon2.extract_parameters(password_hash)
        except InvalidHashError:
            raise PasswdError(
                f"{where}: the hash for {username!r} is not an Argon2 hash "
                "(write entries with 'flumph broker passwd FILE USER')"
            ) from None
        if username in users:
            raise PasswdError(f"{where}: user {username!r} appears twice")
        users[username] = password_hash
    return users


def read_passwd_file(path: str | Path) -> dict[str, str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswdError(f"password file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PasswdError(f"password file {p} cannot be read: {e}") from None
    return parse_passwd(text, str(p))


def render_passwd(users: dict[str, str]) -> str:
    return "".join(f"{user}:{h}\n" for user, h in users.items())


def update_passwd_file(path: str | Path, username: str, password: str | None) -> None:
    """Add or replace ``username`` (``password`` None deletes it); the file is replaced atomically
    with mode 0600, so a broker reading it never sees half a file."""
    p = Path(path)
    check_username(username)
    users = read_passwd_file(p) if p.exists() else {}
    if password is None:
        if username not in users:
            raise PasswdError(f"user {username!r} is not in {p}")
        del users[username]
    else:
        users[username] = hash_password(password)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_passwd(users))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
