"""The database: SQLite through aiosqlite, WAL mode, migrations by PRAGMA user_version.

Every write is idempotent (upserts keyed on natural keys), so a replayed gateway event or a
re-run command changes nothing. Guild ids are stored as text: Discord snowflakes and the
CLI's free-form names (e.g. "demo") share one column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

ORIGINS = ("generated", "baseline", "upload_seeded")

# Append-only: each entry moves the schema from version i to i+1. Never edit a shipped one.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE guilds (
        id TEXT PRIMARY KEY,
        name TEXT,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE TABLE model_versions (
        guild_id TEXT NOT NULL REFERENCES guilds(id),
        version TEXT NOT NULL,
        parent TEXT,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (guild_id, version)
    );
    CREATE TABLE tracks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id TEXT NOT NULL REFERENCES guilds(id),
        model_version TEXT NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN {ORIGINS}),
        file TEXT,
        duration_s REAL NOT NULL,
        seed INTEGER NOT NULL,
        created_at REAL NOT NULL,
        channel_id TEXT,
        message_id TEXT UNIQUE,
        FOREIGN KEY (guild_id, model_version) REFERENCES model_versions(guild_id, version)
    );
    CREATE INDEX tracks_by_guild ON tracks(guild_id, created_at);
    """,
]


@dataclass(frozen=True)
class Track:
    id: int
    guild_id: str
    model_version: str
    origin: str
    file: str | None
    duration_s: float
    seed: int
    created_at: float
    channel_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class ModelVersionRow:
    guild_id: str
    version: str
    parent: str | None
    sha256: str
    source: str
    created_at: float


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store.migrate()
        return store

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0])

    async def migrate(self) -> None:
        current = await self.schema_version()
        for i, script in enumerate(MIGRATIONS[current:], start=current):
            # executescript commits first; the version bump rides in the same script so a
            # crash between the two cannot happen.
            await self.db.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version = {i + 1};\nCOMMIT;"
            )

    # --- guilds and model versions --------------------------------------------------------

    async def ensure_guild(self, guild_id: str, name: str | None = None) -> None:
        await self.db.execute(
            "INSERT INTO guilds (id, name, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = COALESCE(excluded.name, guilds.name)",
            (str(guild_id), name, time.time()),
        )
        await self.db.commit()

    async def record_model_version(self, row: ModelVersionRow) -> None:
        await self.ensure_guild(row.guild_id)
        await self.db.execute(
            "INSERT INTO model_versions (guild_id, version, parent, sha256, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(guild_id, version) DO NOTHING",
            (row.guild_id, row.version, row.parent, row.sha256, row.source, row.created_at),
        )
        await self.db.commit()

    async def model_versions(self, guild_id: str) -> list[ModelVersionRow]:
        async with self.db.execute(
            "SELECT guild_id, version, parent, sha256, source, created_at FROM model_versions "
            "WHERE guild_id = ? ORDER BY version", (str(guild_id),)
        ) as cur:
            return [ModelVersionRow(**dict(r)) for r in await cur.fetchall()]

    # --- tracks ---------------------------------------------------------------------------

    async def add_track(
        self, guild_id: str, model_version: str, origin: str, duration_s: float, seed: int,
        file: str | None = None,
    ) -> int:
        if origin not in ORIGINS:
            raise ValueError(f"unknown track origin {origin!r}")
        cur = await self.db.execute(
            "INSERT INTO tracks (guild_id, model_version, origin, file, duration_s, seed, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(guild_id), model_version, origin, file, duration_s, seed, time.time()),
        )
        await self.db.commit()
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def set_track_file(self, track_id: int, file: str) -> None:
        await self.db.execute("UPDATE tracks SET file = ? WHERE id = ?", (file, track_id))
        await self.db.commit()

    async def delete_track(self, track_id: int) -> None:
        await self.db.execute("DELETE FROM tracks WHERE id = ?", (track_id,))
        await self.db.commit()

    async def get_track(self, track_id: int) -> Track | None:
        async with self.db.execute("SELECT * FROM tracks WHERE id = ?", (track_id,)) as cur:
            row = await cur.fetchone()
        return Track(**dict(row)) if row else None

    async def tracks(self, guild_id: str, limit: int = 100) -> list[Track]:
        async with self.db.execute(
            "SELECT * FROM tracks WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (str(guild_id), limit),
        ) as cur:
            return [Track(**dict(r)) for r in await cur.fetchall()]
