"""Generating tracks for a guild: the active model, the worker, the encoder, the database."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bot.core.audio import encode
from bot.core.compute import Compute
from bot.core.config import Settings
from bot.core.domain import Origin
from bot.core.store import ModelVersionRow, Store
from bot.core.tag_policy import TagPolicy
from bot.core.worker import GenerationJob
from model import tags as tagvocab
from model.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)


def plan_origins(recent: Sequence[str], n: int, baseline_share: float, upload_share: float,
                 has_uploads: bool) -> list[Origin]:
    """The posting policy, used by the bot's scheduled posts, the simulation and the
    benchmarks: each next track takes the origin furthest below its share among the
    `recent` ones and those planned before it, so one post at a time and a batch both follow
    the mix (a share of baseline tracks to measure each round against, some seeded from
    uploads, the rest from the guild's current model). Ties go to the current model."""
    shares = {Origin.BASELINE: baseline_share,
              Origin.UPLOAD_SEEDED: upload_share if has_uploads else 0.0}
    shares[Origin.GENERATED] = max(0.0, 1.0 - sum(shares.values()))
    live = {o: s for o, s in shares.items() if s > 0} or {Origin.GENERATED: 1.0}
    order = list(Origin)
    history = list(recent)
    plan: list[Origin] = []
    for _ in range(n):
        total = len(history) + 1
        deficit = {o: s * total - history.count(o) for o, s in live.items()}
        pick = max(deficit, key=lambda o: (round(deficit[o], 9), -order.index(o)))
        plan.append(pick)
        history.append(pick)
    return plan


@dataclass(frozen=True)
class GeneratedTrack:
    track_id: int
    path: str
    model_version: str
    duration_s: float
    seed: int
    origin: Origin
    tags: dict[str, str] = field(default_factory=dict)  # made with; {}: the model took none
    guidance: float | None = None  # how closely it followed them; None without tags

    def to_dict(self) -> dict:
        return asdict(self)


def mel_file(settings: Settings, guild: str, track_id: int) -> Path:
    """Where a generated track's mel windows are kept: fine-tuning learns from exactly what
    the model made, not from the decoded-and-re-encoded audio (which adds codec artifacts)."""
    return settings.tracks_dir / guild / "mels" / f"track-{track_id:06d}.npy"


def version_row(info: VersionInfo) -> ModelVersionRow:
    weights = sorted(d for f, d in info.files.items() if f.endswith(".safetensors"))
    return ModelVersionRow(guild_id=info.guild, version=info.version, parent=info.parent,
                           sha256=",".join(weights), source=info.source,
                           created_at=info.created_at)


class TrackService:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry,
                 compute: Compute) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.compute = compute

    async def active_version(self, guild: str) -> VersionInfo:
        """The guild's intact active version (file hashing runs off the event loop)."""
        await self.store.ensure_guild(guild)
        info = await asyncio.to_thread(self.registry.ensure_guild, guild)
        await self.store.record_model_version(version_row(info))
        return info

    async def model_for(self, guild: str, origin: Origin) -> VersionInfo:
        """The active model, or for baseline tracks the base (the guild's v0001) or the
        previous champion, per `baseline_source`."""
        active = await self.active_version(guild)
        if origin != Origin.BASELINE:
            return active
        if self.settings.baseline_source == "previous" and active.parent:
            info = self.registry.info(guild, active.parent)
        else:
            info = self.registry.versions(guild)[0]
        await self.store.record_model_version(version_row(info))
        return info

    async def tag_policy(self, guild: str) -> TagPolicy:
        """The guild's taste over tags (bot/core/tag_policy.py), learnt from the rewards of
        its tracks and the tags heard in its uploads of the last `reward_history_days`;
        uniform with `tag_policy` off."""
        s = self.settings
        if not s.tag_policy:
            return TagPolicy.for_guild([], s)
        since = self.store.now() - s.reward_history_days * 86400 if s.reward_history_days else None
        songs = [u.tags for u in await self.store.uploads(guild, since=since) if u.tags]
        return TagPolicy.for_guild(await self.store.track_feedback(guild, since=since), s, songs)

    async def default_tags(self, guild: str, origin: Origin, seeds: Sequence[int]
                           ) -> list[tuple[tagvocab.Tags, float]]:
        """The tags tracks are made with when nobody asked for any, and how closely they
        follow them (guidance), one pair per seed (a seed reproduces its pair given the same
        ratings): drawn from the guild's policy; the baseline arm stays uniform at the
        default guidance, so it measures where the guild started."""
        policy = None if origin == Origin.BASELINE else await self.tag_policy(guild)
        if policy is None or not policy.learnt:  # nothing learnt yet: uniform, as at the start
            return [(tagvocab.uniform(random.Random(s)), tagvocab.GUIDANCE) for s in seeds]
        return [policy.serve(random.Random(s)) for s in seeds]

    async def generate(
        self, guild: str, n: int, out_dir: Path | None = None, seed: int | None = None,
        seconds: float | None = None, origin: Origin = Origin.GENERATED,
        tags: Mapping[str, str] | None = None,
    ) -> list[GeneratedTrack]:
        """n tracks made with `tags` (fields left out mean "any"; {} asks for none), or with
        the guild's default policy, per track, when `tags` is None; either way followed as
        closely as the policy says. TagError for an unknown field or value."""
        asked = None if tags is None else tagvocab.validate(tags)
        info = await self.model_for(guild, origin)
        out_dir = out_dir or self.settings.tracks_dir / guild
        out_dir.mkdir(parents=True, exist_ok=True)
        seconds = seconds or self.settings.track_seconds
        first = seed if seed is not None else secrets.randbelow(2**31 - n)
        seeds = tuple(first + i for i in range(n))
        seed_audio: tuple[str, ...] = ()
        if origin == Origin.UPLOAD_SEEDED:
            uploads = await self.store.uploads(guild)
            if not uploads:
                raise ValueError(f"guild {guild} has no uploads to seed generation from")
            rng = random.Random(first)
            seed_audio = tuple(u.file for u in rng.sample(uploads, min(4, len(uploads))))
        served = await self.default_tags(guild, origin, seeds)
        if asked is not None:
            served = [(asked, g) for _, g in served]
        job = GenerationJob(model_dir=str(self.registry.version_dir(guild, info.version)),
                            seeds=seeds, seconds=seconds, steps=self.settings.sampler_steps,
                            seed_audio=seed_audio,
                            tags=tuple(tagvocab.format_tags(t) for t, _ in served),
                            guidance=tuple(g for _, g in served))
        result = await self.compute.generate(job)
        made = []
        for audio, mel, s, used, (_, g) in zip(result.audios, result.mels, seeds, result.tags,
                                               served, strict=True):
            track = await self._save(guild, info.version, origin, audio, result.sample_rate, s,
                                     out_dir, used, g if used else None)
            path = mel_file(self.settings, guild, track.track_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(np.save, path, mel)
            made.append(track)
        return made

    async def plan_origins(self, guild: str, n: int, recent: Sequence[str] = ()
                           ) -> list[Origin]:
        """The posting policy for this guild's next `n` tracks (after `recent`)."""
        s = self.settings
        return plan_origins(recent, n, s.baseline_share, s.upload_seeded_share,
                            bool(await self.store.uploads(guild)))

    async def next_post(self, guild: str) -> GeneratedTrack:
        """One scheduled post, in the posting mix given the guild's latest tracks."""
        (origin,) = await self.plan_origins(guild, 1, await self.store.recent_origins(guild))
        (track,) = await self.generate(guild, 1, origin=origin)
        return track

    async def generate_mix(
        self, guild: str, n: int, out_dir: Path | None = None, seed: int | None = None,
        seconds: float | None = None, tags: Mapping[str, str] | None = None,
    ) -> list[GeneratedTrack]:
        """n tracks in the posting mix (the bot's policy, over this batch): a share from the
        baseline model, a share seeded from uploads (when the guild has any), the rest from
        the active model; consecutive seeds per origin, then shuffled. `tags` as in
        `generate`."""
        first = seed if seed is not None else secrets.randbelow(2**30)
        plan = await self.plan_origins(guild, n)
        made: list[GeneratedTrack] = []
        for origin in Origin:  # a batch per origin: one model load, one seed range each
            count = plan.count(origin)
            if count > 0:
                made += await self.generate(guild, count, out_dir, first + len(made), seconds,
                                            origin, tags)
        random.Random(first).shuffle(made)
        return made

    async def _save(self, guild: str, version: str, origin: Origin, audio, sr: int, seed: int,
                    out_dir: Path, tags: dict[str, str], guidance: float | None
                    ) -> GeneratedTrack:
        duration = len(audio) / sr
        track_id = await self.store.add_track(guild, version, origin, duration, seed,
                                              tags=tags, guidance=guidance)
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
                              duration_s=round(duration, 3), seed=seed, origin=origin,
                              tags=dict(tags), guidance=guidance)
