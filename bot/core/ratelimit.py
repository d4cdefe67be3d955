"""A sliding-window limit per key (e.g. /generate per member per hour), on an injected clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


class RateLimited(Exception):
    """Too many uses; `retry_after` seconds until the next one is allowed."""

    def __init__(self, limit: int, window_s: float, retry_after: float) -> None:
        super().__init__(f"limit of {limit} per {window_s:g} s reached; retry in "
                         f"{retry_after:.0f} s")
        self.limit = limit
        self.window_s = window_s
        self.retry_after = retry_after


@dataclass(frozen=True)
class Use:
    key: Hashable
    at: float


class SlidingWindowLimiter:
    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self.clock = clock
        self._uses: dict[Hashable, deque[float]] = {}

    def _recent(self, key: Hashable, now: float) -> deque[float]:
        uses = self._uses.setdefault(key, deque())
        while uses and uses[0] <= now - self.window_s:
            uses.popleft()
        return uses

    def acquire(self, key: Hashable, limit: int) -> Use:
        """Count one use of `key`, or raise `RateLimited` if `limit` are in the window."""
        now = self.clock()
        uses = self._recent(key, now)
        if len(uses) >= limit:
            retry = uses[0] + self.window_s - now if uses else self.window_s
            raise RateLimited(limit, self.window_s, max(retry, 0.0))
        uses.append(now)
        return Use(key, now)

    def refund(self, use: Use) -> None:
        """Give a use back (the work it paid for failed on our side)."""
        uses = self._uses.get(use.key)
        if uses and use.at in uses:
            uses.remove(use.at)
