"""Per-guild configuration: channels, the moderator role, the schedule and limits.

Stored in the `guilds.settings` JSON column. Only what a moderator set is stored, so a guild
that never changed a value follows the bot's defaults (`BotSettings`) as they change.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core.config import DAYS, BotSettings
from bot.core.domain import MAX_GENERATE_PER_HOUR, MAX_POSTS_PER_DAY
from bot.core.errors import UserFacingError
from bot.core.store import Store

# Scheduled posts are spread over these hours of the guild's day (09:00 to 23:00).
FIRST_POST_HOUR, POST_SPAN_HOURS = 9, 14


class ConfigError(UserFacingError, ValueError):
    """A setting we will not store; the message is one line a moderator can act on."""


@dataclass(frozen=True)
class GuildConfig:
    guild_id: str
    music_channel_id: int | None = None
    uploads_channel_id: int | None = None
    voice_channel_id: int | None = None
    moderator_role_id: int | None = None
    timezone: str = "UTC"
    round_day: str = "sun"
    round_hour: int = 18
    round_minute: int = 0
    posts_per_day: int = 3
    generate_per_hour: int = 3
    # When this schedule took effect: round times before it were never "missed".
    schedule_since: float = 0.0
    # The latest scheduled round time already handled (run, or found running).
    rounds_handled_until: float = 0.0
    # The how-to pinned in the uploads channel (posted once per channel, by /setup).
    uploads_howto_channel_id: int | None = None
    uploads_howto_message_id: int | None = None

    @property
    def post_hours(self) -> list[int]:
        """Hours of the guild's day with a scheduled post, evenly spread."""
        n = self.posts_per_day
        return [FIRST_POST_HOUR + round(i * POST_SPAN_HOURS / n) for i in range(n)]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def uploads_howto_due(self) -> bool:
        """An uploads channel is set and the how-to was not posted there yet."""
        return (self.uploads_channel_id is not None
                and self.uploads_howto_channel_id != self.uploads_channel_id)

    def round_when(self) -> str:
        return (f"every {self.round_day.capitalize()} at {self.round_hour:02d}:"
                f"{self.round_minute:02d} ({self.timezone})")

    def posts_when(self) -> str:
        if not self.posts_per_day:
            return "no scheduled posts"
        hours = ", ".join(f"{h:02d}:00" for h in self.post_hours)
        return f"{self.posts_per_day} a day at {hours} ({self.timezone})"


_FIELDS = {f.name for f in dataclasses.fields(GuildConfig)} - {"guild_id"}


def validate(changes: dict[str, Any]) -> dict[str, Any]:
    """Check a moderator's changes; `ConfigError` with one line on the first bad one."""
    unknown = set(changes) - _FIELDS
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r}")
    out = dict(changes)
    if out.get("timezone") is not None:
        name = str(out["timezone"]).strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"Unknown time zone {name!r}: use a name like Europe/Berlin, "
                              "America/New_York or UTC.") from None
        out["timezone"] = name
    if out.get("round_day") is not None:
        day = str(out["round_day"]).strip().lower()[:3]
        if day not in DAYS:
            raise ConfigError(f"Unknown day {out['round_day']!r}: use one of {', '.join(DAYS)}.")
        out["round_day"] = day
    ranges = {"round_hour": (0, 23), "round_minute": (0, 59),
              "posts_per_day": (0, MAX_POSTS_PER_DAY),
              "generate_per_hour": (0, MAX_GENERATE_PER_HOUR)}
    for key, (lo, hi) in ranges.items():
        if out.get(key) is not None and not lo <= int(out[key]) <= hi:
            raise ConfigError(f"{key.replace('_', ' ')} must be from {lo} to {hi}.")
    return out


def spread_round_time(guild_id: str, day: str, hour: int, spread_hours: int) -> tuple[str, int]:
    """The default round day and hour moved by this guild's own offset, 0 to
    `spread_hours` - 1 hours (crc32 of the id: the same in every process and release)."""
    if spread_hours <= 1:
        return day, hour
    at = DAYS.index(day) * 24 + hour + zlib.crc32(guild_id.encode()) % spread_hours
    return DAYS[at // 24 % 7], at % 24


class GuildConfigs:
    """Reads and writes guild configs (cached: handlers read them on every event)."""

    def __init__(self, store: Store, defaults: BotSettings) -> None:
        self.store = store
        self.defaults = defaults
        self._cache: dict[str, GuildConfig] = {}

    def _base(self, guild_id: str) -> dict[str, Any]:
        d = self.defaults
        day, hour = spread_round_time(guild_id, d.round_day, d.round_hour, d.round_spread_hours)
        return {"guild_id": guild_id, "timezone": d.timezone, "round_day": day,
                "round_hour": hour, "round_minute": d.round_minute,
                "posts_per_day": d.posts_per_day, "generate_per_hour": d.generate_per_hour}

    async def get(self, guild_id: int | str) -> GuildConfig:
        gid = str(guild_id)
        if gid not in self._cache:
            stored = await self.store.guild_settings(gid)
            known = {k: v for k, v in stored.items() if k in _FIELDS}
            self._cache[gid] = GuildConfig(**{**self._base(gid), **known})
        return self._cache[gid]

    async def update(self, guild_id: int | str, **changes: Any) -> GuildConfig:
        """Store changes (None resets a value to the default) and return the new config."""
        gid = str(guild_id)
        clean = validate(changes)
        stored = await self.store.update_guild_settings(gid, clean)
        known = {k: v for k, v in stored.items() if k in _FIELDS}
        self._cache[gid] = GuildConfig(**{**self._base(gid), **known})
        return self._cache[gid]
