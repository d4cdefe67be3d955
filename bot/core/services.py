"""The composition root: every service built once, the same way, over one store, one
compute backend and one clock. The bot, the CLI, the simulation and the benchmarks all open
their services here, so they write with the same durability and read the same time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.core.clock import Clock, system_clock
from bot.core.compute import Compute, open_compute
from bot.core.config import BotSettings
from bot.core.feedback import FeedbackService
from bot.core.guild_config import GuildConfigs
from bot.core.model_versions import ModelService
from bot.core.privacy import PrivacyService
from bot.core.ratings import RatingService
from bot.core.rounds import RoundService
from bot.core.stats import StatsService
from bot.core.store import Store
from bot.core.tracks import TrackService
from bot.core.uploads import UploadService
from model.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: BotSettings
    store: Store
    registry: ModelRegistry
    compute: Compute
    tracks: TrackService
    feedback: FeedbackService
    uploads: UploadService
    rounds: RoundService
    ratings: RatingService
    configs: GuildConfigs
    clock: Clock
    # Built from the ones above (so `open` need not name them).
    models: ModelService = field(init=False)
    stats: StatsService = field(init=False)
    privacy: PrivacyService = field(init=False)

    def __post_init__(self) -> None:
        self.models = ModelService(self.registry, self.settings.keep_recent_versions)
        self.stats = StatsService(self.store, self.clock)
        self.privacy = PrivacyService(self.store, self.settings, self.registry)

    @classmethod
    async def open(cls, settings: BotSettings, compute: Compute | None = None,
                   clock: Clock = system_clock) -> Services:
        """Every service; `compute` defaults to the settings' backend (ComputeUnavailable,
        one line, when a Ray cluster is asked for and cannot be used)."""
        compute = compute or await asyncio.to_thread(open_compute, settings)
        store = await Store.open(settings.db_path, clock)
        registry = ModelRegistry(settings.models_dir)
        feedback = FeedbackService(store)
        return cls(
            settings=settings, store=store, registry=registry, compute=compute,
            tracks=TrackService(settings, store, registry, compute), feedback=feedback,
            uploads=UploadService(settings, store),
            rounds=RoundService(settings, store, registry, clock, compute),
            ratings=RatingService(store, feedback), configs=GuildConfigs(store, settings),
            clock=clock,
        )

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.compute.close)  # waits for a job in flight
        await self.store.close()
