"""Members' data: forget a member, remove an upload, export what is stored, and purge a
guild some time after the bot left it.

One path for the bot (/forget-me, /upload remove, /my-data) and the CLI (`crowdtune forget`,
`upload-remove`, `export`). Rows go first, then files: once the rows are gone nothing reads the
files (training, seeding and the reward model's history all start from the database), and a
file whose deletion failed is logged, not resurrected. Models already trained on the data are
not retrained; PRIVACY.md says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.core.config import Settings
from bot.core.errors import UserFacingError
from bot.core.ids import is_valid_id
from bot.core.store import Store, UploadRow
from model.files import atomic_path
from model.registry import ModelRegistry

log = logging.getLogger(__name__)

class UnknownUpload(UserFacingError):
    """No such upload in this guild."""


@dataclass(frozen=True)
class ForgetReport:
    member_id: str
    guilds: tuple[str, ...]  # where something was deleted (or asked for)
    votes: int
    listens: int
    uploads: int
    files_left: int  # upload files that could not be deleted (logged)

    def to_dict(self) -> dict[str, object]:
        return {"member_id": self.member_id, "guilds": list(self.guilds), "votes": self.votes,
                "listens": self.listens, "uploads": self.uploads, "files_left": self.files_left}

    def summary(self) -> str:
        """One line for the member."""
        return (f"Deleted {self.votes} vote(s), {self.listens} listening record(s) and "
                f"{self.uploads} upload(s)."
                + (f" {self.files_left} file(s) could not be removed yet; a moderator has "
                   "been told." if self.files_left else ""))


def _unlink(paths: Iterable[str]) -> int:
    """Delete files; how many could not be deleted (already gone counts as deleted)."""
    failed = 0
    for p in paths:
        try:
            Path(p).unlink(missing_ok=True)
        except OSError as exc:
            failed += 1
            log.error("could not delete %s: %s", p, exc)
    return failed


def _check_id(kind: str, value: str) -> str:
    if not is_valid_id(value):
        raise ValueError(f"invalid {kind} id: {value!r}")
    return value


class PrivacyService:
    def __init__(self, store: Store, settings: Settings, registry: ModelRegistry) -> None:
        self.store = store
        self.settings = settings
        self.registry = registry

    async def purge_departed(self, now: float | None = None) -> list[str]:
        """Delete every guild the bot left more than `guild_retention_days` ago: rows, then
        uploads, tracks and model versions on disk. The guilds purged."""
        days = self.settings.guild_retention_days
        cutoff = (now if now is not None else self.store.now()) - days * 86400
        purged = await self.store.guilds_left_before(cutoff)
        for g in purged:
            await self.store.delete_guild(g)
            for folder in (self.settings.uploads_dir / g, self.settings.tracks_dir / g,
                           self.registry.guild_dir(g)):
                await asyncio.to_thread(shutil.rmtree, folder, True)
            log.info("guild %s: purged, %g days after the bot left it", g, days)
        return purged

    async def forget(self, member_id: int | str, guild_id: int | str | None = None
                     ) -> ForgetReport:
        """Delete a member's votes, listens and uploads (the files too) in one guild, or in
        every guild where they have any when `guild_id` is None."""
        member = _check_id("member", str(member_id))
        guilds = ([_check_id("guild", str(guild_id))] if guild_id is not None
                  else await self.store.member_guilds(member))
        votes = listens = 0
        uploads: list[UploadRow] = []
        for g in guilds:
            done = await self.store.forget_member(g, member)
            votes, listens = votes + done.votes, listens + done.listens
            uploads += done.uploads
        left = await asyncio.to_thread(_unlink, [u.file for u in uploads])
        report = ForgetReport(member, tuple(guilds), votes, listens, len(uploads), left)
        log.info("forgot member %s in %d guild(s): %d votes, %d listens, %d uploads",
                 member, len(guilds), votes, listens, len(uploads))
        return report

    async def remove_upload(self, guild_id: int | str, upload_id: int) -> UploadRow:
        """Delete one upload (row, then file): never used again for training or seeding."""
        row = await self.store.delete_upload(str(guild_id), upload_id)
        if row is None:
            raise UnknownUpload(f"There is no upload #{upload_id} in this server.")
        await asyncio.to_thread(_unlink, [row.file])
        log.info("guild %s: removed upload #%d %r", guild_id, upload_id, row.original_name)
        return row

    async def export_lines(self, guild_id: int | str, member_id: int | str | None = None
                           ) -> list[str]:
        """The guild's (or one member's) data as JSON Lines: one object per row, with its
        `kind` (track, vote, listen, upload) and `guild_id`; rows about a member carry
        `member_id`."""
        g = str(guild_id)
        return [json.dumps({"kind": kind, **row, "guild_id": g}, sort_keys=True)
                async for kind, row in self.store.export_rows(
                    g, None if member_id is None else str(member_id))]

    async def member_lines(self, member_id: int | str) -> list[str]:
        """`export_lines` of one member in every guild where they have data (/my-data)."""
        member = _check_id("member", str(member_id))
        return [line for g in await self.store.member_guilds(member)
                for line in await self.export_lines(g, member)]

    async def export(self, out: Path, guild_id: int | str, member_id: int | str | None = None
                     ) -> int:
        """Write `export_lines` to `out` (atomically); how many rows."""
        lines = await self.export_lines(guild_id, member_id)

        def write() -> None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                tmp.write_text("".join(line + "\n" for line in lines))

        await asyncio.to_thread(write)
        return len(lines)
