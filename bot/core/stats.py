"""What /stats shows: a guild's feedback over the last days (votes, listening, uploads and
the best-rated tracks), read from the store."""

from __future__ import annotations

from datetime import timedelta

from bot.core.clock import Clock, system_clock
from bot.core.store import GuildStats, Store, TopTrack

__all__ = ["GuildStats", "StatsService", "TopTrack"]


class StatsService:
    def __init__(self, store: Store, clock: Clock = system_clock, top: int = 5) -> None:
        self.store = store
        self.clock = clock
        self.top = top

    async def last_days(self, guild_id: int | str, days: int) -> GuildStats:
        """Feedback since `days` days ago, by the services' clock."""
        since = (self.clock() - timedelta(days=days)).timestamp()
        return await self.store.guild_stats(str(guild_id), since, top=self.top)
