"""The product's small vocabulary, in one place: track origins, round statuses, the stars."""

from __future__ import annotations

from enum import StrEnum


class Origin(StrEnum):
    """Where a posted track came from (the arms that each round compares)."""

    GENERATED = "generated"  # the guild's current model (the champion)
    BASELINE = "baseline"  # the base model (or the previous champion): the yardstick
    UPLOAD_SEEDED = "upload_seeded"  # the champion, seeded from members' uploads


class RoundStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


MIN_STARS, MAX_STARS = 1, 5

# What a moderator may set for their guild (the bot's defaults obey the same bounds).
MAX_POSTS_PER_DAY = 12  # scheduled tracks in the music channel
MAX_GENERATE_PER_HOUR = 60  # /generate per member
