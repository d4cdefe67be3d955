"""Settings of the Discord bot itself, on top of the shared `Settings` (same env and file).

They are the defaults every guild starts from; moderators change their guild's copy with
`/setup` and `/schedule set` (stored in the guild's settings JSON, see `bot.guild_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from bot.config import Settings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BotSettings(Settings):
    # discord.py's AutoShardedBot: only needed past ~2,500 guilds (Discord then requires it).
    auto_shard: bool = False
    # Guild ids (comma-separated) that slash commands are synced to; empty: synced globally
    # (global commands can take a while to appear; guild commands appear at once).
    sync_guilds: str = ""
    # Take every audio post in the uploads channel (needs the privileged Message Content
    # intent); without it a post must mention the bot, or members use /upload.
    message_content: bool = False

    # Per-guild defaults.
    generate_per_hour: int = Field(default=3, ge=0, le=60)  # /generate per member
    posts_per_day: int = Field(default=3, ge=0, le=12)  # scheduled tracks in the music channel
    round_day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "sun"
    round_hour: int = Field(default=18, ge=0, le=23)
    round_minute: int = Field(default=0, ge=0, le=59)
    timezone: str = "UTC"
    # Votes cast while the bot was offline are read back from posts this recent.
    reconcile_days: float = Field(default=14.0, gt=0)

    @field_validator("sync_guilds")
    @classmethod
    def _ids(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if not part.isdigit():
                raise ValueError(f"expected comma-separated guild ids, got {part!r}")
        return value

    @property
    def sync_guild_ids(self) -> list[int]:
        return [int(p) for p in self.sync_guilds.split(",") if p.strip()]


def load_bot_settings(config: Path | None = None, **overrides: object) -> BotSettings:
    """Like `bot.config.load_settings`, for the bot's settings."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        return BotSettings(_env_file=config, **clean)  # type: ignore[call-arg]
    return BotSettings(**clean)  # type: ignore[call-arg]
