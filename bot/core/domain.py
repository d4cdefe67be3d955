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
