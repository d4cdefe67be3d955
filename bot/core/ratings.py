"""Reaction votes: which message is which track, one vote per member, and reconciliation.

No discord here: the ratings cog turns gateway events into calls on `RatingService`, in
arrival order (one consumer), so "add 3, then 5, then remove 5" ends where the member did.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.feedback import FeedbackError, FeedbackService
from bot.core.store import Store

log = logging.getLogger(__name__)

STAR_EMOJIS: tuple[str, ...] = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")
EMOJI_STARS: dict[str, int] = {e: i + 1 for i, e in enumerate(STAR_EMOJIS)}


@dataclass(frozen=True)
class VoteOutcome:
    track_id: int
    stars: int
    previous: int | None  # the member's vote before this one (None: first vote)
    changed: bool


@dataclass(frozen=True)
class Reconciled:
    track_id: int
    added: int = 0  # votes recorded or changed from reactions found on the message
    removed: int = 0  # stored votes whose reaction is gone


class RatingService:
    def __init__(self, store: Store, feedback: FeedbackService, cache_size: int = 10_000) -> None:
        self.store = store
        self.feedback = feedback
        self.cache_size = cache_size
        # message id -> track id; only hits are cached (a miss may be a post in progress).
        self._tracks: OrderedDict[int, int] = OrderedDict()

    def remember(self, message_id: int, track_id: int) -> None:
        self._tracks[message_id] = track_id
        self._tracks.move_to_end(message_id)
        while len(self._tracks) > self.cache_size:
            self._tracks.popitem(last=False)

    async def track_for(self, message_id: int) -> int | None:
        track_id = self._tracks.get(message_id)
        if track_id is None:
            track = await self.store.track_by_message(str(message_id))
            if track is None:
                return None
            track_id = track.id
        self.remember(message_id, track_id)
        return track_id

    async def add(self, message_id: int, member_id: int, stars: int) -> VoteOutcome | None:
        """A member reacted with `stars`; None if the message is not a track."""
        track_id = await self.track_for(message_id)
        if track_id is None:
            return None
        old = await self.store.get_vote(track_id, str(member_id))
        try:
            changed = await self.feedback.record_vote(track_id, member_id, stars)
        except FeedbackError as exc:  # the track was deleted meanwhile
            log.info("vote on message %s not recorded: %s", message_id, exc)
            return None
        return VoteOutcome(track_id, stars, old.stars if old else None, changed)

    async def remove(self, message_id: int, member_id: int, stars: int) -> bool:
        """A member took a reaction back; their vote goes only if it was that one (the bot
        removing their previous emoji after a change must not cancel the new vote)."""
        track_id = await self.track_for(message_id)
        if track_id is None:
            return False
        vote = await self.store.get_vote(track_id, str(member_id))
        if vote is None or vote.stars != stars:
            return False
        return await self.feedback.remove_vote(track_id, member_id)

    async def clear(self, message_id: int, stars: int | None = None) -> int:
        """Reactions were cleared (all, or one emoji): the matching votes go."""
        track_id = await self.track_for(message_id)
        if track_id is None:
            return 0
        return await self.store.delete_votes(track_id, stars)

    async def reconcile(self, track_id: int, reactions: Mapping[int, Iterable[int]]
                        ) -> Reconciled:
        """Make the stored votes match the message's reactions (`stars -> member ids`,
        the bot itself excluded): votes cast or taken back while the bot was offline.

        A member with several star reactions keeps their stored vote if it is among them,
        else the highest (the bot was not there to see which came last).
        """
        by_member: dict[str, set[int]] = {}
        for stars, members in reactions.items():
            for m in members:
                by_member.setdefault(str(m), set()).add(stars)
        added = removed = 0
        stored = {v.member_id: v.stars for v in await self.store.votes(track_id)}
        for member, options in sorted(by_member.items()):
            keep = stored.get(member)
            if keep not in options:
                added += await self.feedback.record_vote(track_id, member, max(options))
        for member in sorted(set(stored) - set(by_member)):
            if member.isdigit():  # a Discord member; not a name from `feedback import`
                removed += await self.feedback.remove_vote(track_id, member)
        if added or removed:
            log.info("track %d: reconciled %d vote(s) cast and %d taken back while offline",
                     track_id, added, removed)
        return Reconciled(track_id, added, removed)
