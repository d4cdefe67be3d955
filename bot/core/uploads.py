"""Recording song uploads: the one path for the bot's attachments and `crowdtune upload`.

`ingest` takes a file (the CLI), `ingest_bytes` an attachment's bytes (the bot), and the
bot checks an attachment's declared size with `check_size` before downloading it.

`bot.core.ingest` checks, converts and stores the file (blocking; run here in a thread); this
service records it in the database, one upload per song (sha256 of the original bytes) per
guild. A song already known is recognised from its hash before any decoding, so a re-upload
costs one read of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path

from bot.core.config import Settings
from bot.core.ids import is_valid_id
from bot.core.ingest import DEFAULT_LIMITS, UploadLimits, check_size, ingest_upload, spool_bytes
from bot.core.store import Store, UploadRow
from model.files import sha256_file

log = logging.getLogger(__name__)


def _known_sha256(path: Path, limits: UploadLimits) -> str | None:
    """The file's sha256 if it can be read within the size limit; None otherwise (then
    `ingest_upload` runs and gives the member its proper reason)."""
    try:
        size = path.stat().st_size
        if not 0 < size <= limits.max_bytes or not path.is_file():
            return None
        return sha256_file(path)
    except OSError:
        return None


class UploadService:
    def __init__(self, settings: Settings, store: Store,
                 limits: UploadLimits = DEFAULT_LIMITS) -> None:
        self.settings = settings
        self.store = store
        self.limits = limits

    async def list(self, guild_id: int | str) -> list[UploadRow]:
        """A guild's uploads, oldest first (removing one: `PrivacyService.remove_upload`)."""
        return await self.store.uploads(str(guild_id))

    def check_size(self, size_bytes: int) -> None:
        """`UploadRejected` (with the reason) when a file of this size is not taken: an
        attachment's declared size, checked before anything is downloaded."""
        check_size(size_bytes, self.limits)

    async def ingest_bytes(self, guild_id: str | int, member_id: int | str, data: bytes,
                           filename: str) -> tuple[UploadRow, bool]:
        """`ingest` for a file held in memory (a Discord attachment's bytes, named
        `filename` by the member)."""
        check_size(len(data), self.limits)  # an attachment's declared size may be wrong
        path = await asyncio.to_thread(spool_bytes, data, filename)
        try:
            return await self.ingest(str(guild_id), member_id, path, original_name=filename)
        finally:
            await asyncio.to_thread(shutil.rmtree, path.parent, True)

    async def ingest(
        self, guild_id: str, member_id: int | str, path: str | os.PathLike[str],
        original_name: str | None = None,
    ) -> tuple[UploadRow, bool]:
        """Check, convert, store and record a member's song; returns the upload and whether
        it is new (False: this guild already had this song, and its first upload is returned).

        Raises `bot.core.ingest.UploadRejected` (one line for the member) for a file we will not
        take; then nothing is stored.
        """
        guild, member = str(guild_id), str(member_id)
        if not is_valid_id(guild) or not is_valid_id(member):
            raise ValueError(f"invalid guild or member id: {guild!r}, {member!r}")
        source = Path(path)
        sha = await asyncio.to_thread(_known_sha256, source, self.limits)
        if sha is not None:
            known = await self.store.upload_by_sha(guild, sha)
            if known is not None and Path(known.file).is_file():
                log.info("guild %s: upload %r is already known as #%d", guild,
                         original_name or source.name, known.id)
                return known, False

        dest = (self.settings.uploads_dir / guild).absolute()
        ingested = await asyncio.to_thread(ingest_upload, source, dest,
                                           original_name=original_name, limits=self.limits)
        try:
            row, is_new = await self.store.add_upload(
                guild, member, ingested.sha256, str(ingested.path), ingested.original_name,
                ingested.format, round(ingested.duration_s, 3))
        except BaseException:
            # No file without its row (unless a row for the same song already has it).
            if await self.store.upload_by_sha(guild, ingested.sha256) is None:
                with contextlib.suppress(OSError):
                    ingested.path.unlink()
            raise
        if not is_new and Path(row.file) != ingested.path:
            # The stored name is `<sha256>.wav`, so a duplicate usually rewrote the same file
            # with the same bytes; elsewhere (the data folder moved) it must not leave a copy,
            # unless the known file is gone, and then this one takes its place.
            if Path(row.file).is_file():
                ingested.path.unlink(missing_ok=True)
            else:
                await self.store.set_upload_file(row.id, str(ingested.path))
                row = dataclasses.replace(row, file=str(ingested.path))
        log.info("guild %s: upload #%d %r (%s, %.1f s)%s", guild, row.id, row.original_name,
                 row.format, row.duration_s, "" if is_new else ", already known")
        return row, is_new
