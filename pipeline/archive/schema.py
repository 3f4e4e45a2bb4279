"""The archive's schema: plain SQL files (``migrations/NNNN_name.sql``) applied in order, each once.

Every process that opens the archive (the API, each worker) runs ``migrate`` before its first use: under one
transaction-scoped advisory lock, so concurrent starts apply each file exactly once, and recorded in
``archive_schema_version``, so a second run applies nothing.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg
from psycopg.rows import TupleRow

#: the advisory lock every migration run holds (any fixed 64-bit number; this one spells "litminer")
LOCK_ID = 0x6C69746D696E6572

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class Migration:
    """One SQL file: its version (the number it starts with), its name and its statements."""

    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version = version
        self.name = name
        self.sql = sql


def migrations() -> list[Migration]:
    """Every migration shipped with litminer, oldest first."""
    found = []
    for entry in resources.files("pipeline.archive").joinpath("migrations").iterdir():
        matched = _FILE.match(entry.name)
        if matched:
            found.append(Migration(int(matched[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two archive migrations share a version: {versions}")
    return found


def migrate(conn: psycopg.Connection[TupleRow]) -> list[str]:
    """Apply the migrations ``conn``'s database lacks, in one transaction; returns the names of those applied."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_ID])
        conn.execute(
            "CREATE TABLE IF NOT EXISTS archive_schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM archive_schema_version")}
        for migration in migrations():
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())  # several statements: allowed in a query without parameters
            conn.execute(
                "INSERT INTO archive_schema_version (version, name) VALUES (%s, %s)",
                [migration.version, migration.name],
            )
            applied.append(migration.name)
    return applied
