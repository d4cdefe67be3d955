"""This guild's model versions for moderators (/model info, /model rollback).

The registry (`model.registry`) keeps every version on disk and swaps the active pointer
atomically; this service runs its blocking calls off the event loop and turns a refused
rollback into a one-line `UserFacingError`, so the commands never touch the registry.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.core.errors import UserFacingError
from model.registry import ModelRegistry, RegistryError, VersionInfo

log = logging.getLogger(__name__)

__all__ = ["ModelOverview", "ModelService", "RollbackRefused", "VersionInfo"]


class RollbackRefused(UserFacingError):
    """There is no version to go back to (or the one named does not exist)."""


@dataclass(frozen=True)
class ModelOverview:
    active: str | None  # None: the guild has no model yet (its first track makes v0001)
    versions: list[VersionInfo]  # oldest first
    kept: dict[str, list[str]]  # why each version is kept (active, ancestor, recent, pinned)


class ModelService:
    def __init__(self, registry: ModelRegistry, keep_recent: int = 4) -> None:
        self.registry = registry
        self.keep_recent = keep_recent

    async def overview(self, guild_id: int | str) -> ModelOverview:
        gid = str(guild_id)
        versions = await asyncio.to_thread(self.registry.versions, gid)
        active = await asyncio.to_thread(self.registry.active_name, gid) if versions else None
        kept = await asyncio.to_thread(self.registry.kept, gid, self.keep_recent)
        return ModelOverview(active, versions, kept)

    async def pin(self, guild_id: int | str, version: str, pinned: bool = True) -> None:
        """Keep `version` through pruning (or stop keeping it for that reason)."""
        try:
            await asyncio.to_thread(self.registry.pin, str(guild_id), version, pinned)
        except RegistryError as exc:
            raise RollbackRefused(f"Cannot pin: {exc}.") from exc

    async def rollback(self, guild_id: int | str, version: str | None = None) -> VersionInfo:
        """Make `version` (default: the active version's parent) active again."""
        try:
            return await asyncio.to_thread(self.registry.rollback, str(guild_id),
                                           version or None)
        except RegistryError as exc:
            raise RollbackRefused(f"Cannot roll back: {exc}.") from exc
