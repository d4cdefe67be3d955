"""Listen time: who listened to which track, and for how many seconds.

Two pure pieces, no discord and no database:

- `union_seconds` / `listened_seconds`: the arithmetic over stored intervals. A member's
  listened seconds on a track are the length of the union of their intervals, clipped to the
  track's playing window [start, start + duration]. Overlapping or duplicated intervals count
  once, so a replayed gateway event (or a row stored twice) changes nothing.
- `ListenTracker`: a state machine the voice cog drives with voice-state changes. It opens an
  interval when a member starts listening during a track, closes it when they stop, when the
  track ends or when the bot leaves, and hands the closed `ListenInterval`s back for the
  caller to persist (`open_so_far` hands out the open ones too, for periodic saving). It
  also remembers who was listening when each track started, which the rewards need (only
  those members' listen fraction says anything about the track).

Time is any float clock (e.g. `time.time()`); every method takes `at`, so tests use a fake one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ListenInterval:
    """One closed stretch of `member_id` listening to `track_id`, in clock seconds."""

    track_id: int
    member_id: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The disjoint runs covering the union of `(start, end)` intervals, in order; empty,
    reversed and NaN intervals are ignored."""
    # `e > s` is False for NaN, so NaNs drop out before sorting.
    spans = sorted((s, e) for s, e in intervals if e > s)
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def union_seconds(
    intervals: Iterable[tuple[float, float]], duration_s: float, track_start: float = 0.0
) -> float:
    """Seconds covered by the union of `(start, end)` intervals, clipped to the track.

    The track plays over [track_start, track_start + duration_s]; with the default
    `track_start=0` the intervals are offsets into the track. Empty, reversed and NaN
    intervals are ignored; the result is never more than `duration_s`.
    """
    lo, hi = track_start, track_start + max(0.0, duration_s)
    clipped = ((max(a, lo), min(b, hi)) for a, b in intervals)
    return sum(e - s for s, e in merge_intervals(clipped))


def listened_seconds(
    intervals: Iterable[ListenInterval], track_id: int, track_start: float, duration_s: float
) -> dict[int, float]:
    """Listened seconds per member on one track (intervals of other tracks are skipped)."""
    per_member: dict[int, list[tuple[float, float]]] = {}
    for iv in intervals:
        if iv.track_id == track_id:
            per_member.setdefault(iv.member_id, []).append((iv.start, iv.end))
    return {m: union_seconds(spans, duration_s, track_start) for m, spans in per_member.items()}


@dataclass(frozen=True)
class Play:
    """One track playing in one guild's voice channel."""

    guild_id: int
    track_id: int
    start: float
    duration_s: float
    present_at_start: frozenset[int]  # members listening when it started

    @property
    def end(self) -> float:
        return self.start + self.duration_s


@dataclass
class _GuildState:
    listening: set[int] = field(default_factory=set)  # in the bot's channel and not deafened
    play: Play | None = None
    open: dict[int, float] = field(default_factory=dict)  # member -> interval start


class ListenTracker:
    """Listen intervals for every guild the bot plays in, driven by the voice cog.

    "Listening" means in the bot's voice channel and not deafened; the cog computes it from
    VOICE_STATE_UPDATE (leaving, deafening or moving to another channel -> False). Every event
    is idempotent: a repeated `member_update` with the same state changes nothing.

    The bot's own member (and other bots) must be filtered out by the caller: the tracker
    records whatever member ids it is given. The bot's own leaving reaches it as `bot_left`.

    Every mutating method returns the intervals it closed (possibly none), in member-id order;
    intervals with no length are dropped, and none extends past its track's end.
    """

    def __init__(self) -> None:
        self._guilds: dict[int, _GuildState] = {}

    def current(self, guild_id: int) -> Play | None:
        """The track playing in `guild_id` (persist its `present_at_start` for the rewards)."""
        state = self._guilds.get(guild_id)
        return state.play if state else None

    def listening(self, guild_id: int) -> frozenset[int]:
        """Members currently listening in `guild_id`, whether or not a track is playing."""
        state = self._guilds.get(guild_id)
        return frozenset(state.listening) if state else frozenset()

    def track_started(
        self,
        guild_id: int,
        track_id: int,
        duration_s: float,
        at: float,
        listeners_present: Iterable[int],
    ) -> list[ListenInterval]:
        """A track starts; `listeners_present` (from the voice channel) is authoritative.

        A previous track still playing is ended at `at` first; its intervals are returned.
        """
        if not duration_s > 0:
            raise ValueError(f"track duration must be positive, got {duration_s}")
        state = self._guilds.setdefault(guild_id, _GuildState())
        closed = self._close_open(state, at)
        state.listening = set(listeners_present)
        state.play = Play(guild_id, track_id, at, duration_s, frozenset(state.listening))
        state.open = {m: at for m in state.listening}
        return closed

    def track_ended(
        self, guild_id: int, at: float, track_id: int | None = None
    ) -> list[ListenInterval]:
        """The track stopped (finished or skipped) at `at`; every open interval closes.

        With `track_id`, a late end event for an earlier track is ignored instead of cutting
        the current one short.
        """
        state = self._guilds.get(guild_id)
        if state is None or state.play is None:
            return []
        if track_id is not None and track_id != state.play.track_id:
            return []
        closed = self._close_open(state, at)
        state.play = None
        return closed

    def member_update(
        self, guild_id: int, member_id: int, listening: bool, at: float
    ) -> list[ListenInterval]:
        """A member's listening state is now `listening` (from their voice state)."""
        state = self._guilds.setdefault(guild_id, _GuildState())
        play = state.play
        if listening:
            state.listening.add(member_id)
            # Already open: a replayed event must not move the start. An event stamped before
            # the track started (clock skew) counts from the start.
            if play is not None and member_id not in state.open:
                state.open[member_id] = max(at, play.start)
            return []
        state.listening.discard(member_id)
        start = state.open.pop(member_id, None)
        if play is None or start is None:
            return []
        return self._interval(play, member_id, start, at)

    def bot_left(self, guild_id: int, at: float) -> list[ListenInterval]:
        """The bot left (or was moved out of) the voice channel: the track and all listening stop.

        The guild is forgotten; the next `track_started` gives the fresh listener set.
        """
        state = self._guilds.pop(guild_id, None)
        return self._close_open(state, at) if state else []

    def open_so_far(self, guild_id: int, at: float) -> list[ListenInterval]:
        """The guild's open intervals as they stand at `at`, left open. Saved periodically,
        so a hard crash loses at most the time since (the stored interval is extended, not
        repeated, when it closes later)."""
        state = self._guilds.get(guild_id)
        if state is None or state.play is None:
            return []
        return [iv for m in sorted(state.open)
                for iv in self._interval(state.play, m, state.open[m], at)]

    def close_all(self, at: float) -> list[ListenInterval]:
        """Shutdown or restart: every open interval in every guild closes at `at`."""
        closed: list[ListenInterval] = []
        for guild_id in list(self._guilds):
            closed.extend(self.bot_left(guild_id, at))
        return closed

    def _close_open(self, state: _GuildState, at: float) -> list[ListenInterval]:
        closed: list[ListenInterval] = []
        if state.play is not None:
            for member_id in sorted(state.open):
                closed.extend(self._interval(state.play, member_id, state.open[member_id], at))
        state.open.clear()
        return closed

    @staticmethod
    def _interval(play: Play, member_id: int, start: float, at: float) -> list[ListenInterval]:
        end = min(at, play.end)  # the track's end bounds every interval, even late events
        return [ListenInterval(play.track_id, member_id, start, end)] if end > start else []
