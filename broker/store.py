"""Retained messages on disk, so they survive a broker restart (amqtt 0.12.1 keeps them only in
memory).

One SQLite file, one row per topic: a retained ``desired`` or snapshot changes one row, never
rewrites the whole set, and every batch is one transaction, so a crash leaves either the old or
the new state. Blocking calls; the broker runs them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FILENAME = "retained.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""


class StoreError(ValueError):
    """The state directory or its database cannot be used; the message names the path."""


@dataclass(frozen=True)
class Retained:
    topic: str
    qos: int
    payload: bytes


class RetainedStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One thread at a time uses the connection (the broker serialises its flushes).
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"state_dir {self.path.parent}: cannot open {FILENAME}: {e}") from None

    def load(self) -> list[Retained]:
        try:
            rows = self._db.execute("SELECT topic, qos, payload FROM retained ORDER BY topic")
            return [Retained(str(t), int(q), bytes(p)) for t, q, p in rows]
        except sqlite3.Error as e:
            raise StoreError(f"state_dir {self.path.parent}: cannot read {FILENAME}: {e}") from None

    def apply(self, changes: Mapping[str, Retained | None]) -> None:
        """Write each topic's new retained message, or delete it (None), in one transaction."""
        upserts = [(r.topic, r.qos, r.payload) for r in changes.values() if r is not None]
        deletes = [(t,) for t, r in changes.items() if r is None]
        with self._transaction():
            if upserts:
                self._db.executemany(
                    "INSERT INTO retained (topic, qos, payload) VALUES (?, ?, ?) "
                    "ON CONFLICT(topic) DO UPDATE "
                    "SET qos = excluded.qos, payload = excluded.payload",
                    upserts,
                )
            if deletes:
                self._db.executemany("DELETE FROM retained WHERE topic = ?", deletes)

    def replace_all(self, messages: Iterable[Retained]) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM retained")
            self._db.executemany(
                "INSERT INTO retained (topic, qos, payload) VALUES (?, ?, ?)",
                [(r.topic, r.qos, r.payload) for r in messages],
            )

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
