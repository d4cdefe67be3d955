"""The database: SQLite through aiosqlite, WAL mode, migrations by PRAGMA user_version.

Every write is idempotent (upserts keyed on natural keys), so a replayed gateway event or a
re-run command changes nothing. Guild ids are stored as text: Discord snowflakes and the
CLI's free-form names (e.g. "demo") share one column.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from bot.core.clock import Clock, system_clock
from bot.core.domain import MAX_STARS, MIN_STARS, Origin, RoundStatus
from bot.core.listening import merge_intervals, union_seconds

ORIGINS = tuple(o.value for o in Origin)  # as written in the CHECK constraints below
ROUND_STATUSES = tuple(s.value for s in RoundStatus)

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
    # 2: feedback (votes, listens), uploads and learning rounds.
    f"""
    -- One vote per (track, member); a new reaction replaces the old one.
    CREATE TABLE votes (
        track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        member_id TEXT NOT NULL,
        stars INTEGER NOT NULL CHECK (stars BETWEEN {MIN_STARS} AND {MAX_STARS}),
        updated_at REAL NOT NULL,
        PRIMARY KEY (track_id, member_id)
    );
    -- Listen intervals as offsets (s) into one play of a track. The key makes a replayed
    -- interval a no-op; a zero-length interval records presence without listening (a
    -- member present at the start who deafened at once is a signal too).
    CREATE TABLE listens (
        track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        member_id TEXT NOT NULL,
        play_started_at REAL NOT NULL,  -- wall clock of the play's start; 0 when imported
        start_s REAL NOT NULL CHECK (start_s >= 0),
        end_s REAL NOT NULL CHECK (end_s >= start_s),
        present_at_start INTEGER NOT NULL CHECK (present_at_start IN (0, 1)),
        recorded_at REAL NOT NULL,  -- when first stored (or extended): feedback windows
        PRIMARY KEY (track_id, member_id, play_started_at, start_s)
    );
    CREATE TABLE uploads (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id TEXT NOT NULL REFERENCES guilds(id),
        member_id TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        file TEXT NOT NULL,
        original_name TEXT NOT NULL,
        format TEXT NOT NULL,
        duration_s REAL NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (guild_id, sha256)
    );
    CREATE TABLE rounds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id TEXT NOT NULL REFERENCES guilds(id),
        started_at REAL NOT NULL,
        ended_at REAL,
        status TEXT NOT NULL CHECK (status IN {ROUND_STATUSES}),
        parent_version TEXT,
        candidate_version TEXT,
        promoted INTEGER NOT NULL DEFAULT 0 CHECK (promoted IN (0, 1)),
        reason TEXT,
        counts TEXT NOT NULL DEFAULT '{{}}',
        metrics TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE INDEX rounds_by_guild ON rounds(guild_id, started_at);
    -- At most one running round per guild, even with two schedulers racing.
    CREATE UNIQUE INDEX rounds_one_running ON rounds(guild_id) WHERE status = 'running';
    """,
    # 3: the tags a track was made with, a JSON object {field: value} (model/tags.py); NULL
    # when it was made unconditioned (no tags asked, or a model that takes none).
    """
    ALTER TABLE tracks ADD COLUMN tags TEXT;
    """,
    # 4: members who asked to be forgotten (/forget-me, `crowdtune forget`). Their votes,
    # listens and uploads are deleted; this row only keeps their reactions still on older
    # posts from being counted again when the bot reconciles those posts.
    """
    CREATE TABLE forgotten (
        guild_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        forgotten_at REAL NOT NULL,
        PRIMARY KEY (guild_id, member_id)
    );
    -- When the bot was removed from the guild (NULL while it is in it): its data is purged
    -- CROWDTUNE_GUILD_RETENTION_DAYS later unless it comes back.
    ALTER TABLE guilds ADD COLUMN left_at REAL;
    """,
    # 5: how closely a track followed its tags (the guidance scale, model/tags.py); NULL when
    # it was made unconditioned, or before this column (then it was the default).
    """
    ALTER TABLE tracks ADD COLUMN guidance REAL;
    """,
    # 6: the tags the tagger hears in an upload (a JSON object, set by the first round that
    # trains on it; NULL until then): evidence for the guild's taste over tags.
    """
    ALTER TABLE uploads ADD COLUMN tags TEXT;
    """,
]


class RoundConflict(Exception):
    """A round cannot start (one is already running) or finish (it is not running)."""


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
    tags: Mapping[str, str] | None = None  # what it was made with; None: unconditioned
    guidance: float | None = None  # how closely it followed them; None: unrecorded or no tags


@dataclass(frozen=True)
class ModelVersionRow:
    guild_id: str
    version: str
    parent: str | None
    sha256: str
    source: str
    created_at: float


@dataclass(frozen=True)
class VoteRow:
    track_id: int
    member_id: str
    stars: int
    updated_at: float


@dataclass(frozen=True)
class ListenRow:
    track_id: int
    member_id: str
    play_started_at: float
    start_s: float
    end_s: float
    present_at_start: bool
    recorded_at: float


@dataclass(frozen=True)
class ListenTotal:
    """A member's listening on one track: the union of all their intervals (over every
    play) clipped to the track, and whether they were present at the start of any play."""

    track_id: int
    member_id: str
    listened_s: float
    duration_s: float
    present_at_start: bool


@dataclass(frozen=True)
class UploadRow:
    id: int
    guild_id: str
    member_id: str
    sha256: str
    file: str
    original_name: str
    format: str
    duration_s: float
    created_at: float
    tags: Mapping[str, str] | None = None  # what the tagger heard in it; None: not yet


def _upload(row: aiosqlite.Row) -> UploadRow:
    d = dict(row)
    return UploadRow(**{**d, "tags": json.loads(d["tags"]) if d.get("tags") else None})


@dataclass(frozen=True)
class RoundRow:
    id: int
    guild_id: str
    started_at: float
    ended_at: float | None
    status: str
    parent_version: str | None
    candidate_version: str | None
    promoted: bool
    reason: str | None
    counts: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Forgotten:
    """What `Store.forget_member` deleted: counts of rows, and the uploads (whose files the
    caller deletes once the rows are gone)."""

    votes: int
    listens: int
    uploads: tuple[UploadRow, ...]


@dataclass(frozen=True)
class TrackFeedback:
    """One track with its current votes and per-member listening (what rewards need)."""

    track: Track
    votes: tuple[VoteRow, ...]
    listens: tuple[ListenTotal, ...]


def _track(row: aiosqlite.Row) -> Track:
    d = dict(row)
    return Track(**{**d, "tags": json.loads(d["tags"]) if d["tags"] else None})


def _round(row: aiosqlite.Row) -> RoundRow:
    d = dict(row)
    return RoundRow(**{**d, "promoted": bool(d["promoted"]), "counts": json.loads(d["counts"]),
                       "metrics": json.loads(d["metrics"])})


def _listen(row: aiosqlite.Row) -> ListenRow:
    d = dict(row)
    return ListenRow(**{**d, "present_at_start": bool(d["present_at_start"])})


class Store:
    def __init__(self, db: aiosqlite.Connection, clock: Clock = system_clock) -> None:
        self.db = db
        self.clock = clock
        self._batch_depth = 0

    def now(self) -> float:
        """The injected clock's time, as the database stores it (Unix seconds)."""
        return self.clock().timestamp()

    async def _commit(self) -> None:
        # Inside `batch()` the commit is deferred to its end (one fsync, not one per row).
        if self._batch_depth == 0:
            await self.db.commit()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Group many writes into one transaction (e.g. a feedback import); rolled back if
        the block raises. Writes keep their own idempotence, so a retried batch is safe.
        Other coroutines' writes through this store in the meantime join the transaction,
        so keep batches to work that runs alone (the CLI)."""
        self._batch_depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                await (self.db.commit() if ok else self.db.rollback())

    @classmethod
    async def open(cls, path: Path, clock: Clock = system_clock) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit no longer waits for an fsync (10x the vote throughput); the
        # database stays consistent, and only a power cut can lose the last commits.
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db, clock)
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
            (str(guild_id), name, self.now()),
        )
        await self._commit()

    async def guild_joined(self, guild_id: str, name: str | None) -> None:
        """The bot is in the guild (again): recorded, and no longer due for a purge."""
        await self.ensure_guild(guild_id, name)
        await self.db.execute("UPDATE guilds SET left_at = NULL WHERE id = ?", (str(guild_id),))
        await self._commit()

    async def guild_left(self, guild_id: str) -> None:
        """The bot was removed from the guild: the retention period starts (once)."""
        await self.db.execute("UPDATE guilds SET left_at = ? WHERE id = ? AND left_at IS NULL",
                              (self.now(), str(guild_id)))
        await self._commit()

    async def discord_guilds(self) -> dict[str, float | None]:
        """Guilds the bot has seen on Discord (they have a name; the CLI's have none), and
        when it left each (None: still in it)."""
        async with self.db.execute(
            "SELECT id, left_at FROM guilds WHERE name IS NOT NULL ORDER BY id") as cur:
            return {r["id"]: r["left_at"] for r in await cur.fetchall()}

    async def guilds_left_before(self, before: float) -> list[str]:
        async with self.db.execute(
            "SELECT id FROM guilds WHERE left_at IS NOT NULL AND left_at < ? ORDER BY id",
            (before,)) as cur:
            return [r["id"] for r in await cur.fetchall()]

    async def delete_guild(self, guild_id: str) -> None:
        """Every row of a guild (votes and listens go with its tracks)."""
        g = str(guild_id)
        for table in ("tracks", "uploads", "rounds", "model_versions", "forgotten"):
            await self.db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (g,))  # noqa: S608
        await self.db.execute("DELETE FROM guilds WHERE id = ?", (g,))
        await self._commit()

    async def record_model_version(self, row: ModelVersionRow) -> None:
        await self.ensure_guild(row.guild_id)
        await self.db.execute(
            "INSERT INTO model_versions (guild_id, version, parent, sha256, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(guild_id, version) DO NOTHING",
            (row.guild_id, row.version, row.parent, row.sha256, row.source, row.created_at),
        )
        await self._commit()

    async def model_versions(self, guild_id: str) -> list[ModelVersionRow]:
        async with self.db.execute(
            "SELECT guild_id, version, parent, sha256, source, created_at FROM model_versions "
            "WHERE guild_id = ? ORDER BY version", (str(guild_id),)
        ) as cur:
            return [ModelVersionRow(**dict(r)) for r in await cur.fetchall()]

    # --- tracks ---------------------------------------------------------------------------

    async def add_track(
        self, guild_id: str, model_version: str, origin: str, duration_s: float, seed: int,
        file: str | None = None, tags: Mapping[str, str] | None = None,
        guidance: float | None = None,
    ) -> int:
        """A new track; `tags` are what it was made with (empty or None: unconditioned),
        `guidance` how closely it followed them."""
        if origin not in ORIGINS:
            raise ValueError(f"unknown track origin {origin!r}")
        cur = await self.db.execute(
            "INSERT INTO tracks (guild_id, model_version, origin, file, duration_s, seed, "
            "created_at, tags, guidance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(guild_id), model_version, origin, file, duration_s, seed, self.now(),
             json.dumps(dict(tags)) if tags else None, guidance if tags else None),
        )
        await self._commit()
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def set_track_file(self, track_id: int, file: str) -> None:
        await self.db.execute("UPDATE tracks SET file = ? WHERE id = ?", (file, track_id))
        await self._commit()

    async def delete_track(self, track_id: int) -> None:
        await self.db.execute("DELETE FROM tracks WHERE id = ?", (track_id,))
        await self._commit()

    async def get_track(self, track_id: int) -> Track | None:
        async with self.db.execute("SELECT * FROM tracks WHERE id = ?", (track_id,)) as cur:
            row = await cur.fetchone()
        return _track(row) if row else None

    async def tracks(self, guild_id: str, limit: int = 100) -> list[Track]:
        async with self.db.execute(
            "SELECT * FROM tracks WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (str(guild_id), limit),
        ) as cur:
            return [_track(r) for r in await cur.fetchall()]

    # --- votes ----------------------------------------------------------------------------

    async def upsert_vote(
        self, track_id: int, member_id: str, stars: int, at: float | None = None
    ) -> bool:
        """Record a member's vote, replacing any earlier one; True if anything changed.

        Re-sending the same stars is a no-op that keeps `updated_at`, so a replayed reaction
        does not look like fresh feedback to a round's window.
        """
        cur = await self.db.execute(
            "INSERT INTO votes (track_id, member_id, stars, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(track_id, member_id) DO UPDATE SET stars = excluded.stars, "
            "updated_at = excluded.updated_at WHERE votes.stars != excluded.stars",
            (track_id, str(member_id), stars, self.now() if at is None else at),
        )
        await self._commit()
        return cur.rowcount > 0

    async def delete_vote(self, track_id: int, member_id: str) -> bool:
        """Remove a member's vote; True if there was one."""
        cur = await self.db.execute(
            "DELETE FROM votes WHERE track_id = ? AND member_id = ?", (track_id, str(member_id))
        )
        await self._commit()
        return cur.rowcount > 0

    async def get_vote(self, track_id: int, member_id: str) -> VoteRow | None:
        async with self.db.execute(
            "SELECT * FROM votes WHERE track_id = ? AND member_id = ?",
            (track_id, str(member_id)),
        ) as cur:
            row = await cur.fetchone()
        return VoteRow(**dict(row)) if row else None

    async def votes(self, track_id: int) -> list[VoteRow]:
        async with self.db.execute(
            "SELECT * FROM votes WHERE track_id = ? ORDER BY member_id", (track_id,)
        ) as cur:
            return [VoteRow(**dict(r)) for r in await cur.fetchall()]

    # --- listens --------------------------------------------------------------------------

    async def add_listen(
        self, track_id: int, member_id: str, play_started_at: float, start_s: float,
        end_s: float, present_at_start: bool, at: float | None = None,
    ) -> bool:
        """Record one listen interval (offsets in seconds into the play); True if it changed
        anything. A replay is a no-op; the same start with a later end extends the interval
        (an interval closed early by a crash, then closed properly)."""
        cur = await self.db.execute(
            "INSERT INTO listens (track_id, member_id, play_started_at, start_s, end_s, "
            "present_at_start, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(track_id, member_id, play_started_at, start_s) DO UPDATE SET "
            "end_s = MAX(listens.end_s, excluded.end_s), "
            "present_at_start = MAX(listens.present_at_start, excluded.present_at_start), "
            "recorded_at = excluded.recorded_at "
            "WHERE excluded.end_s > listens.end_s "
            "OR excluded.present_at_start > listens.present_at_start",
            (track_id, str(member_id), play_started_at, start_s, end_s, int(present_at_start),
             self.now() if at is None else at),
        )
        await self._commit()
        return cur.rowcount > 0

    async def compact_listens(self, before: float) -> int:
        """Replace each (track, member)'s listen rows, when all were recorded before
        `before` and there are several, by the disjoint runs of their union: what rewards
        read (seconds listened over every play, presence at a start) is unchanged, and a
        later listen still adds exactly what it adds. How many rows went."""
        async with self.db.execute(
            "SELECT track_id, member_id FROM listens GROUP BY track_id, member_id "
            "HAVING COUNT(*) > 1 AND MAX(recorded_at) < ?", (before,)
        ) as cur:
            pairs = [(r["track_id"], r["member_id"]) for r in await cur.fetchall()]
        removed = 0
        for track_id, member_id in pairs:
            key = (track_id, member_id)
            async with self.db.execute(
                "SELECT start_s, end_s, present_at_start, recorded_at FROM listens "
                "WHERE track_id = ? AND member_id = ?", key
            ) as cur:
                rows = list(await cur.fetchall())
            runs = merge_intervals((r["start_s"], r["end_s"]) for r in rows) or [(0.0, 0.0)]
            present = max(r["present_at_start"] for r in rows)
            at = max(r["recorded_at"] for r in rows)
            await self.db.execute("DELETE FROM listens WHERE track_id = ? AND member_id = ?",
                                  key)
            await self.db.executemany(
                "INSERT INTO listens (track_id, member_id, play_started_at, start_s, end_s, "
                "present_at_start, recorded_at) VALUES (?, ?, 0, ?, ?, ?, ?)",
                [(track_id, member_id, s, e, present, at) for s, e in runs])
            await self._commit()  # per pair: each is consistent on its own
            removed += len(rows) - len(runs)
        return removed

    async def listens(self, track_id: int) -> list[ListenRow]:
        async with self.db.execute(
            "SELECT * FROM listens WHERE track_id = ? "
            "ORDER BY member_id, play_started_at, start_s", (track_id,)
        ) as cur:
            return [_listen(r) for r in await cur.fetchall()]

    async def listen_totals(self, track_ids: Sequence[int]) -> list[ListenTotal]:
        """Per (track, member): listened seconds and presence at the start of a play."""
        if not track_ids:
            return []
        marks = ",".join("?" * len(track_ids))
        return await self._listen_totals(f"l.track_id IN ({marks})", list(track_ids))

    async def _listen_totals(self, where: str, params: Sequence[Any]) -> list[ListenTotal]:
        async with self.db.execute(
            "SELECT l.track_id, l.member_id, l.start_s, l.end_s, l.present_at_start, "
            "t.duration_s FROM listens l JOIN tracks t ON t.id = l.track_id "
            f"WHERE {where} ORDER BY l.track_id, l.member_id", params,
        ) as cur:
            rows = await cur.fetchall()
        grouped: dict[tuple[int, str], tuple[float, list[tuple[float, float]], bool]] = {}
        for r in rows:
            key = (r["track_id"], r["member_id"])
            duration, spans, present = grouped.get(key, (r["duration_s"], [], False))
            spans.append((r["start_s"], r["end_s"]))
            grouped[key] = (duration, spans, present or bool(r["present_at_start"]))
        # Offsets from every play share one time axis (the track), so replays of the same
        # part are counted once: the union says how much of the track the member heard.
        return [
            ListenTotal(track_id=t, member_id=m, listened_s=union_seconds(spans, duration),
                        duration_s=duration, present_at_start=present)
            for (t, m), (duration, spans, present) in grouped.items()
        ]

    # --- uploads --------------------------------------------------------------------------

    async def add_upload(
        self, guild_id: str, member_id: str, sha256: str, file: str, original_name: str,
        format: str, duration_s: float,
    ) -> tuple[UploadRow, bool]:
        """Record an upload; the same song (sha256) twice in a guild is one upload.

        Returns the stored row (the first upload's, for a duplicate) and whether it is new.
        """
        await self.ensure_guild(guild_id)
        cur = await self.db.execute(
            "INSERT INTO uploads (guild_id, member_id, sha256, file, original_name, format, "
            "duration_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(guild_id, sha256) DO NOTHING",
            (str(guild_id), str(member_id), sha256, file, original_name, format, duration_s,
             self.now()),
        )
        await self._commit()
        row = await self.upload_by_sha(guild_id, sha256)
        assert row is not None
        return row, cur.rowcount > 0

    async def upload_by_sha(self, guild_id: str, sha256: str) -> UploadRow | None:
        async with self.db.execute(
            "SELECT * FROM uploads WHERE guild_id = ? AND sha256 = ?", (str(guild_id), sha256)
        ) as cur:
            row = await cur.fetchone()
        return _upload(row) if row else None

    async def set_upload_tags(self, upload_id: int, tags: Mapping[str, str]) -> None:
        """Record what the tagger heard in an upload (once heard, the same audio stays)."""
        await self.db.execute("UPDATE uploads SET tags = ? WHERE id = ?",
                              (json.dumps(dict(tags)), upload_id))
        await self._commit()

    async def set_upload_file(self, upload_id: int, file: str) -> None:
        await self.db.execute("UPDATE uploads SET file = ? WHERE id = ?", (file, upload_id))
        await self._commit()

    async def uploads(self, guild_id: str, since: float | None = None) -> list[UploadRow]:
        """A guild's uploads, oldest first (those created at or after `since`, if given)."""
        async with self.db.execute(
            "SELECT * FROM uploads WHERE guild_id = ? AND (? IS NULL OR created_at >= ?) "
            "ORDER BY id", (str(guild_id), since, since),
        ) as cur:
            return [_upload(r) for r in await cur.fetchall()]

    async def get_upload(self, guild_id: str, upload_id: int) -> UploadRow | None:
        async with self.db.execute(
            "SELECT * FROM uploads WHERE guild_id = ? AND id = ?", (str(guild_id), upload_id)
        ) as cur:
            row = await cur.fetchone()
        return _upload(row) if row else None

    async def delete_upload(self, guild_id: str, upload_id: int) -> UploadRow | None:
        """Remove one upload's row (the caller deletes its file); None if there is none."""
        row = await self.get_upload(guild_id, upload_id)
        if row is not None:
            await self.db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            await self._commit()
        return row

    # --- members' data --------------------------------------------------------------------

    async def forget_member(self, guild_id: str, member_id: str) -> Forgotten:
        """Delete a member's votes, listens and uploads in a guild, and remember that they
        asked (`forgotten`). Every statement is idempotent, so a forget cut short by a crash
        is finished by running it again."""
        g, m = str(guild_id), str(member_id)
        in_guild = "track_id IN (SELECT id FROM tracks WHERE guild_id = ?)"
        votes = await self.db.execute(
            f"DELETE FROM votes WHERE member_id = ? AND {in_guild}", (m, g))
        listens = await self.db.execute(
            f"DELETE FROM listens WHERE member_id = ? AND {in_guild}", (m, g))
        async with self.db.execute(
            "SELECT * FROM uploads WHERE guild_id = ? AND member_id = ? ORDER BY id", (g, m)
        ) as cur:
            uploads = tuple(_upload(r) for r in await cur.fetchall())
        await self.db.execute("DELETE FROM uploads WHERE guild_id = ? AND member_id = ?", (g, m))
        await self.db.execute(
            "INSERT INTO forgotten (guild_id, member_id, forgotten_at) VALUES (?, ?, ?) "
            "ON CONFLICT(guild_id, member_id) DO UPDATE SET forgotten_at = excluded.forgotten_at",
            (g, m, self.now()))
        await self._commit()
        return Forgotten(votes=votes.rowcount, listens=listens.rowcount, uploads=uploads)

    async def forgotten_at(self, guild_id: str) -> dict[str, float]:
        """Members of a guild who asked to be forgotten, and when (their last request)."""
        async with self.db.execute(
            "SELECT member_id, forgotten_at FROM forgotten WHERE guild_id = ?", (str(guild_id),)
        ) as cur:
            return {r["member_id"]: r["forgotten_at"] for r in await cur.fetchall()}

    async def member_guilds(self, member_id: str) -> list[str]:
        """Guilds where a member has votes, listens or uploads."""
        m = str(member_id)
        async with self.db.execute(
            "SELECT t.guild_id AS g FROM votes v JOIN tracks t ON t.id = v.track_id "
            "WHERE v.member_id = :m UNION "
            "SELECT t.guild_id FROM listens l JOIN tracks t ON t.id = l.track_id "
            "WHERE l.member_id = :m UNION "
            "SELECT guild_id FROM uploads WHERE member_id = :m ORDER BY 1", {"m": m},
        ) as cur:
            return [r["g"] for r in await cur.fetchall()]

    async def export_rows(self, guild_id: str, member_id: str | None = None
                          ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """A guild's data as (kind, row) pairs, kind one of track, vote, listen, upload:
        every track with its votes and listens, and its uploads; with `member_id`, only that
        member's votes, listens and uploads (and the tracks they voted on or heard).
        Uploads' file paths are left out (they are the bot's, not the member's)."""
        g, m = str(guild_id), None if member_id is None else str(member_id)
        mine = "(:m IS NULL OR member_id = :m)"
        params = {"g": g, "m": m}
        queries = [
            ("track", "SELECT * FROM tracks WHERE guild_id = :g AND (:m IS NULL OR id IN ("
             "SELECT track_id FROM votes WHERE member_id = :m UNION "
             "SELECT track_id FROM listens WHERE member_id = :m)) ORDER BY id"),
            ("vote", f"SELECT * FROM votes WHERE {mine} AND track_id IN "
             "(SELECT id FROM tracks WHERE guild_id = :g) ORDER BY track_id, member_id"),
            ("listen", f"SELECT * FROM listens WHERE {mine} AND track_id IN "
             "(SELECT id FROM tracks WHERE guild_id = :g) "
             "ORDER BY track_id, member_id, play_started_at, start_s"),
            ("upload", f"SELECT * FROM uploads WHERE guild_id = :g AND {mine} ORDER BY id"),
        ]
        for kind, sql in queries:
            async with self.db.execute(sql, params) as cur:
                async for r in cur:
                    row = dict(r)
                    if kind in ("track", "upload"):
                        row["tags"] = json.loads(row["tags"]) if row["tags"] else None
                        row.pop("file")
                    yield kind, row

    # --- feedback windows -----------------------------------------------------------------

    async def track_feedback(
        self, guild_id: str, since: float | None = None
    ) -> list[TrackFeedback]:
        """A guild's tracks with their votes and listening, oldest track first.

        With `since`, only tracks created at or after it or with feedback recorded at or
        after it (a vote set or changed, a listen stored); each comes with all its current
        feedback, since a reward needs the whole picture of a track, not the window's slice.
        Without `since`, every track of the guild, rated or not.
        """
        window = (
            "SELECT id FROM tracks t WHERE t.guild_id = :g AND (:since IS NULL "
            "OR t.created_at >= :since "
            "OR EXISTS (SELECT 1 FROM votes v WHERE v.track_id = t.id "
            "AND v.updated_at >= :since) "
            "OR EXISTS (SELECT 1 FROM listens l WHERE l.track_id = t.id "
            "AND l.recorded_at >= :since))"
        )
        params = {"g": str(guild_id), "since": since}
        async with self.db.execute(
            f"SELECT * FROM tracks WHERE id IN ({window}) ORDER BY id", params
        ) as cur:
            tracks = [_track(r) for r in await cur.fetchall()]
        async with self.db.execute(
            f"SELECT * FROM votes WHERE track_id IN ({window}) ORDER BY track_id, member_id",
            params,
        ) as cur:
            votes = [VoteRow(**dict(r)) for r in await cur.fetchall()]
        totals = await self._listen_totals(f"l.track_id IN ({window})", params)
        by_track_votes: dict[int, list[VoteRow]] = {}
        for v in votes:
            by_track_votes.setdefault(v.track_id, []).append(v)
        by_track_listens: dict[int, list[ListenTotal]] = {}
        for li in totals:
            by_track_listens.setdefault(li.track_id, []).append(li)
        return [
            TrackFeedback(track=t, votes=tuple(by_track_votes.get(t.id, ())),
                          listens=tuple(by_track_listens.get(t.id, ())))
            for t in tracks
        ]

    # --- learning rounds ------------------------------------------------------------------

    async def start_round(
        self, guild_id: str, parent_version: str | None = None, at: float | None = None
    ) -> RoundRow:
        """Insert a running round; `RoundConflict` if the guild already has one running."""
        await self.ensure_guild(guild_id)
        try:
            cur = await self.db.execute(
                "INSERT INTO rounds (guild_id, started_at, status, parent_version) "
                "VALUES (?, ?, 'running', ?)",
                (str(guild_id), self.now() if at is None else at, parent_version),
            )
        except aiosqlite.IntegrityError as exc:
            running = await self.running_round(guild_id)
            raise RoundConflict(
                f"guild {guild_id} already has round {running.id if running else '?'} running"
            ) from exc
        await self._commit()
        assert cur.lastrowid is not None
        row = await self.get_round(cur.lastrowid)
        assert row is not None
        return row

    async def finish_round(
        self, round_id: int, status: str, *, parent_version: str | None = None,
        candidate_version: str | None = None, promoted: bool = False, reason: str | None = None,
        counts: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> RoundRow:
        """End a running round with its outcome. `RoundConflict` if it is not running (a
        finished round's record is history and is never rewritten); KeyError if unknown."""
        if status not in ROUND_STATUSES or status == RoundStatus.RUNNING:
            raise ValueError(f"a round finishes as succeeded, failed or skipped, not {status!r}")
        cur = await self.db.execute(
            "UPDATE rounds SET status = ?, ended_at = ?, "
            "parent_version = COALESCE(?, parent_version), candidate_version = ?, "
            "promoted = ?, reason = ?, counts = ?, metrics = ? "
            "WHERE id = ? AND status = 'running'",
            (status, self.now() if at is None else at, parent_version, candidate_version,
             int(promoted), reason, json.dumps(dict(counts or {})),
             json.dumps(dict(metrics or {})), round_id),
        )
        await self._commit()
        row = await self.get_round(round_id)
        if row is None:
            raise KeyError(f"no round {round_id}")
        if cur.rowcount == 0:
            raise RoundConflict(f"round {round_id} is not running (it {row.status})")
        return row

    async def get_round(self, round_id: int) -> RoundRow | None:
        async with self.db.execute("SELECT * FROM rounds WHERE id = ?", (round_id,)) as cur:
            row = await cur.fetchone()
        return _round(row) if row else None

    async def rounds(self, guild_id: str, limit: int | None = None) -> list[RoundRow]:
        """A guild's rounds, newest first."""
        async with self.db.execute(
            "SELECT * FROM rounds WHERE guild_id = ? ORDER BY started_at DESC, id DESC "
            "LIMIT ?", (str(guild_id), -1 if limit is None else limit),
        ) as cur:
            return [_round(r) for r in await cur.fetchall()]

    async def running_round(self, guild_id: str) -> RoundRow | None:
        async with self.db.execute(
            "SELECT * FROM rounds WHERE guild_id = ? AND status = 'running'", (str(guild_id),)
        ) as cur:
            row = await cur.fetchone()
        return _round(row) if row else None

    # --- the bot: guild settings, posted messages, statistics -----------------------------

    async def guild_settings(self, guild_id: str) -> dict[str, Any]:
        """The guild's settings JSON (what moderators set with /setup and /schedule)."""
        async with self.db.execute(
            "SELECT settings FROM guilds WHERE id = ?", (str(guild_id),)
        ) as cur:
            row = await cur.fetchone()
        return json.loads(row["settings"]) if row else {}

    async def update_guild_settings(
        self, guild_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `changes` into the guild's settings (a None value removes a key) in one
        statement, so two moderators saving at once cannot lose each other's change."""
        await self.ensure_guild(guild_id)
        await self.db.execute(
            "UPDATE guilds SET settings = json_patch(settings, ?) WHERE id = ?",
            (json.dumps(dict(changes)), str(guild_id)),
        )
        await self._commit()
        return await self.guild_settings(guild_id)

    async def set_track_message(self, track_id: int, channel_id: str, message_id: str) -> None:
        """Where the track was posted; reactions on that message are votes on it."""
        await self.db.execute(
            "UPDATE tracks SET channel_id = ?, message_id = ? WHERE id = ?",
            (str(channel_id), str(message_id), track_id),
        )
        await self._commit()

    async def track_by_message(self, message_id: str) -> Track | None:
        async with self.db.execute(
            "SELECT * FROM tracks WHERE message_id = ?", (str(message_id),)
        ) as cur:
            row = await cur.fetchone()
        return _track(row) if row else None

    async def posted_tracks(self, guild_id: str, since: float, limit: int = 500) -> list[Track]:
        """A guild's tracks posted to a channel since `since`, newest first."""
        async with self.db.execute(
            "SELECT * FROM tracks WHERE guild_id = ? AND message_id IS NOT NULL "
            "AND created_at >= ? ORDER BY id DESC LIMIT ?", (str(guild_id), since, limit),
        ) as cur:
            return [_track(r) for r in await cur.fetchall()]

    async def recent_origins(self, guild_id: str, limit: int = 20) -> list[str]:
        """Origins of the guild's latest tracks, newest first (to keep the posting mix)."""
        async with self.db.execute(
            "SELECT origin FROM tracks WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (str(guild_id), limit),
        ) as cur:
            return [r["origin"] for r in await cur.fetchall()]

    async def delete_votes(self, track_id: int, stars: int | None = None) -> int:
        """Remove a track's votes (only those of `stars`, if given); how many went."""
        cur = await self.db.execute(
            "DELETE FROM votes WHERE track_id = ? AND (? IS NULL OR stars = ?)",
            (track_id, stars, stars),
        )
        await self._commit()
        return cur.rowcount

    async def guild_stats(self, guild_id: str, since: float, top: int = 5) -> GuildStats:
        """Feedback since `since`: votes, voters, listeners, uploads and the best tracks."""
        g = str(guild_id)
        async with self.db.execute(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT v.member_id) AS members FROM votes v "
            "JOIN tracks t ON t.id = v.track_id WHERE t.guild_id = ? AND v.updated_at >= ?",
            (g, since),
        ) as cur:
            votes = await cur.fetchone()
        async with self.db.execute(
            "SELECT COUNT(DISTINCT l.member_id) AS members, "
            "COALESCE(SUM(l.end_s - l.start_s), 0) AS seconds FROM listens l "
            "JOIN tracks t ON t.id = l.track_id WHERE t.guild_id = ? AND l.recorded_at >= ? "
            "AND l.end_s > l.start_s", (g, since),
        ) as cur:
            listens = await cur.fetchone()
        async with self.db.execute(
            "SELECT COUNT(*) AS n FROM uploads WHERE guild_id = ? AND created_at >= ?", (g, since)
        ) as cur:
            uploads = await cur.fetchone()
        async with self.db.execute(
            "SELECT COUNT(*) AS n FROM tracks WHERE guild_id = ? AND created_at >= ?", (g, since)
        ) as cur:
            tracks = await cur.fetchone()
        async with self.db.execute(
            "SELECT t.id, t.model_version, t.origin, t.channel_id, t.message_id, "
            "AVG(v.stars) AS mean, COUNT(*) AS n FROM tracks t JOIN votes v ON v.track_id = t.id "
            "WHERE t.guild_id = ? AND t.created_at >= ? GROUP BY t.id "
            "ORDER BY mean DESC, n DESC, t.id DESC LIMIT ?", (g, since, top),
        ) as cur:
            best = [TopTrack(track_id=r["id"], model_version=r["model_version"],
                             origin=r["origin"], channel_id=r["channel_id"],
                             message_id=r["message_id"], mean_stars=float(r["mean"]),
                             votes=int(r["n"]))
                    for r in await cur.fetchall()]
        return GuildStats(votes=votes["n"], voters=votes["members"],
                          listeners=listens["members"], listened_s=float(listens["seconds"]),
                          uploads=uploads["n"], tracks=tracks["n"], top=tuple(best))


@dataclass(frozen=True)
class TopTrack:
    track_id: int
    model_version: str
    origin: str
    channel_id: str | None
    message_id: str | None
    mean_stars: float
    votes: int


@dataclass(frozen=True)
class GuildStats:
    """What `/stats` shows for a period (listening seconds summed over intervals)."""

    votes: int
    voters: int
    listeners: int
    listened_s: float
    uploads: int
    tracks: int
    top: tuple[TopTrack, ...]
