"""Generating tracks for a guild: the active model, the worker, the encoder, the database."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.audio import encode
from bot.config import Settings
from bot.store import ModelVersionRow, Store
from bot.worker import GenerationJob, GenerationWorker
from model.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedTrack:
    track_id: int
    path: str
    model_version: str
    duration_s: float
    seed: int
    origin: str

    def to_dict(self) -> dict:
        return asdict(self)


def version_row(info: VersionInfo) -> ModelVersionRow:
    weights = sorted(d for f, d in info.files.items() if f.endswith(".safetensors"))
    return ModelVersionRow(guild_id=info.guild, version=info.version, parent=info.parent,
                           sha256=",".join(weights), source=info.source,
                           created_at=info.created_at)


class TrackService:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry,
                 worker: GenerationWorker) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.worker = worker

    async def active_version(self, guild: str) -> VersionInfo:
        """The guild's intact active version (file hashing runs off the event loop)."""
        await self.store.ensure_guild(guild)
        info = await asyncio.to_thread(self.registry.ensure_guild, guild)
        await self.store.record_model_version(version_row(info))
        return info

    async def generate(
        self, guild: str, n: int, out_dir: Path | None = None, seed: int | None = None,
        seconds: float | None = None, origin: str = "generated",
    ) -> list[GeneratedTrack]:
        info = await self.active_version(guild)
        out_dir = out_dir or self.settings.tracks_dir / guild
        out_dir.mkdir(parents=True, exist_ok=True)
        seconds = seconds or self.settings.track_seconds
        first = seed if seed is not None else secrets.randbelow(2**31 - n)
        seeds = tuple(first + i for i in range(n))
        job = GenerationJob(model_dir=str(self.registry.version_dir(guild, info.version)),
                            seeds=seeds, seconds=seconds, steps=self.settings.sampler_steps)
        audios, sr = await self.worker.run(job)
        made = []
        for audio, s in zip(audios, seeds, strict=True):
            made.append(await self._save(guild, info.version, origin, audio, sr, s, out_dir))
        return made

    async def _save(self, guild: str, version: str, origin: str, audio, sr: int, seed: int,
                    out_dir: Path) -> GeneratedTrack:
        duration = len(audio) / sr
        track_id = await self.store.add_track(guild, version, origin, duration, seed)
        fmt = self.settings.audio_format
        path = out_dir / f"track-{track_id:06d}.{fmt}"
        try:
            await asyncio.to_thread(encode, audio, sr, path, fmt)
            if self.settings.keep_wav:
                await asyncio.to_thread(encode, audio, sr, path.with_suffix(".wav"), "wav")
        except BaseException:
            await self.store.delete_track(track_id)  # no row without its file
            raise
        await self.store.set_track_file(track_id, str(path))
        log.info("guild %s: track %d (%s, %.1f s) -> %s", guild, track_id, version, duration,
                 path)
        return GeneratedTrack(track_id=track_id, path=str(path), model_version=version,
                              duration_s=round(duration, 3), seed=seed, origin=origin)
