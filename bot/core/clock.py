"""The one clock. Every "now" in the core (database timestamps, the scheduler, a round's
history window) comes from the `Clock` that the composition root (`Services.open`) injects,
so tests and the simulation can move time without patching anything."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # an aware datetime (UTC)


def system_clock() -> datetime:
    return datetime.now(UTC)
