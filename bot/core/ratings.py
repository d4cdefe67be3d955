"""Reaction votes: which message is which track, one vote per member, and reconciliation.

No discord here. The ratings cog turns each gateway event into a synchronous call on
`VoteQueue` (plain ids and the emoji's text), in arrival order. The queue hands them to
`WORKERS` workers, each owning a share of the (post, member) pairs: one member's quick
"3, then 5, then take 5 back" is applied in order by one worker and ends exactly where they
left it, while different members' votes go to the database side by side. Events about a whole
post (reactions cleared, reconciliation) wait for every worker first. What only Discord can
do (take a member's old emoji off a post, read a post's reactions) comes in as callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class TrackPost:
    """Where a track was posted: reactions on that message are votes on it."""

    track_id: int
    channel_id: int
    message_id: int


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

    async def posts_since(self, guild_id: int | str, since: float) -> list[TrackPost]:
        """The guild's tracks posted to a channel since `since` (a timestamp), newest first."""
        return [TrackPost(t.id, int(t.channel_id or 0), int(t.message_id or 0))
                for t in await self.store.posted_tracks(str(guild_id), since)]

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
        else the highest (the bot was not there to see which came last). Reactions of a
        member forgotten since the track was made are skipped.
        """
        track = await self.store.get_track(track_id)
        if track is None:
            return Reconciled(track_id)
        # A member who asked to be forgotten after this track was made: their reactions
        # left on it are from before the request, so they are not votes again.
        forgotten = {m for m, at in (await self.store.forgotten_at(track.guild_id)).items()
                     if at >= track.created_at}
        by_member: dict[str, set[int]] = {}
        for stars, members in reactions.items():
            for m in members:
                if str(m) not in forgotten:
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


# --- the vote queue: gateway events in arrival order, applied by a few workers ------------

WORKERS = 8

RemoveReaction = Callable[[int, int, int, str, int], Awaitable[None]]
"""`(guild_id, channel_id, message_id, emoji, member_id)`: take a member's previous vote
emoji off a post (best effort; it handles its own failures)."""

FetchReactions = Callable[[int, int, int, Collection[str]],
                          Awaitable[Mapping[str, Iterable[int]] | None]]
"""`(guild_id, channel_id, message_id, emojis)`: the members (bots left out) who reacted with
each of `emojis` on a post; None when the post is gone (its votes stay as they are); raise
`PostUnavailable` to skip the post with a warning."""


class PostUnavailable(Exception):
    """A post's reactions could not be read now (reconciliation skips it)."""


@dataclass(frozen=True)
class Change:
    kind: str  # add | remove | clear | reconcile
    guild_id: int
    channel_id: int
    message_id: int
    member_id: int = 0
    stars: int | None = None  # None with "clear": every emoji
    track_id: int = 0  # reconcile: the track and its post's reactions (stars -> members)
    reactions: dict[int, list[int]] = field(default_factory=dict)


class VoteQueue:
    """Reaction events in, votes out, in the order each member made them.

    The event methods (`added`, `removed`, `cleared`) are synchronous and only queue: call
    them straight from the gateway handler, before any await, so queue order is arrival
    order. `start` the workers first; `stop` writes what was received, then ends them.
    """

    def __init__(self, ratings: RatingService, remove_reaction: RemoveReaction, *,
                 workers: int = WORKERS, emoji_stars: Mapping[str, int] | None = None) -> None:
        self.ratings = ratings
        self.remove_reaction = remove_reaction
        self.emoji_stars = dict(EMOJI_STARS if emoji_stars is None else emoji_stars)
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        self._shards: list[asyncio.Queue[Change]] = [asyncio.Queue() for _ in range(workers)]
        self._tasks: list[asyncio.Task[None]] = []
        self._reconciling: asyncio.Task[None] | None = None
        self.reconciled = asyncio.Event()  # set after each reconciliation (per READY)

    @property
    def star_emojis(self) -> dict[int, str]:
        return {stars: emoji for emoji, stars in self.emoji_stars.items()}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._dispatch(), name="votes-dispatch")]
        self._tasks += [asyncio.create_task(self._work(q), name=f"votes-{i}")
                        for i, q in enumerate(self._shards)]

    async def stop(self, timeout: float = 10.0) -> None:
        """Shutdown: votes already received are written before the workers stop."""
        if self._reconciling is not None:
            self._reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciling
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def drain(self) -> None:
        """Wait until every queued event is in the database (tests, benchmarks, shutdown)."""
        await self.queue.join()
        await asyncio.gather(*(q.join() for q in self._shards))

    # --- events (synchronous: no await before queueing) -----------------------------------

    def added(self, guild_id: int, channel_id: int, message_id: int, member_id: int,
              emoji: str) -> bool:
        """A member reacted; False if `emoji` is not a vote."""
        return self._member_change("add", guild_id, channel_id, message_id, member_id, emoji)

    def removed(self, guild_id: int, channel_id: int, message_id: int, member_id: int,
                emoji: str) -> bool:
        """A member took a reaction back; False if `emoji` is not a vote."""
        return self._member_change("remove", guild_id, channel_id, message_id, member_id, emoji)

    def _member_change(self, kind: str, guild_id: int, channel_id: int, message_id: int,
                       member_id: int, emoji: str) -> bool:
        stars = self.emoji_stars.get(emoji)
        if stars is None:
            return False
        self.queue.put_nowait(Change(kind, guild_id, channel_id, message_id, member_id, stars))
        return True

    def cleared(self, guild_id: int, channel_id: int, message_id: int,
                emoji: str | None = None) -> bool:
        """A post's reactions were cleared: all of them (`emoji` None) or one emoji's."""
        stars = None if emoji is None else self.emoji_stars.get(emoji)
        if emoji is not None and stars is None:
            return False
        self.queue.put_nowait(Change("clear", guild_id, channel_id, message_id, stars=stars))
        return True

    def snapshot(self, guild_id: int, post: TrackPost,
                 reactions: Mapping[int, Iterable[int]]) -> None:
        """A post's reactions as read now (`stars -> member ids`): the votes are made to match
        them, after the events received before and before those received after."""
        self.queue.put_nowait(Change(
            "reconcile", guild_id, post.channel_id, post.message_id, track_id=post.track_id,
            reactions={stars: list(members) for stars, members in reactions.items()}))

    # --- applying -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            change = await self.queue.get()
            try:
                if change.kind in ("add", "remove"):
                    key = hash((change.message_id, change.member_id))
                    self._shards[key % len(self._shards)].put_nowait(change)
                else:  # about the whole post: after everything before it
                    await asyncio.gather(*(q.join() for q in self._shards))
                    await self._apply_logged(change)
            finally:
                self.queue.task_done()

    async def _work(self, queue: asyncio.Queue[Change]) -> None:
        while True:
            change = await queue.get()
            try:
                await self._apply_logged(change)
            finally:
                queue.task_done()

    async def _apply_logged(self, change: Change) -> None:
        try:
            await self._apply(change)
        except Exception:
            log.exception("reaction %s on message %s not applied", change.kind,
                          change.message_id)

    async def _apply(self, change: Change) -> None:
        ratings = self.ratings
        if change.kind == "remove":
            assert change.stars is not None
            await ratings.remove(change.message_id, change.member_id, change.stars)
        elif change.kind == "clear":
            await ratings.clear(change.message_id, change.stars)
        elif change.kind == "reconcile":
            await ratings.reconcile(change.track_id, change.reactions)
        else:
            assert change.stars is not None
            outcome = await ratings.add(change.message_id, change.member_id, change.stars)
            if outcome is not None and outcome.previous not in (None, outcome.stars):
                # One vote per member: their previous emoji goes, so the post shows what
                # counts. The REMOVE event this causes is ignored (not their vote any more).
                emoji = self.star_emojis.get(outcome.previous)
                if emoji is not None:
                    await self.remove_reaction(change.guild_id, change.channel_id,
                                               change.message_id, emoji, change.member_id)

    # --- reconciliation -------------------------------------------------------------------

    def reconcile_soon(self, guild_ids: Iterable[int], since: float,
                       fetch: FetchReactions) -> None:
        """At a new gateway session (READY): reconcile in the background, unless a
        reconciliation is still running; `reconciled` is set when it is done."""
        self.reconciled.clear()
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.create_task(
                self.reconcile_all(list(guild_ids), since, fetch), name="reconcile")

    async def reconcile_all(self, guild_ids: Iterable[int], since: float,
                            fetch: FetchReactions) -> None:
        """Votes cast or taken back while the bot was away, from the track posts since
        `since` (a timestamp) in each guild."""
        try:
            await self.drain()  # live events first
            for guild_id in guild_ids:
                for post in await self.ratings.posts_since(guild_id, since):
                    try:
                        await self.reconcile_post(guild_id, post, fetch)
                    except PostUnavailable as exc:
                        log.warning("track %d: reconciliation skipped: %s", post.track_id, exc)
            await self.drain()
            log.info("votes reconciled with the reactions on recent track posts")
        except Exception:
            log.exception("vote reconciliation failed")
        finally:
            self.reconciled.set()

    async def reconcile_post(self, guild_id: int, post: TrackPost,
                             fetch: FetchReactions) -> None:
        found = await fetch(guild_id, post.channel_id, post.message_id,
                            frozenset(self.emoji_stars))
        if found is None:
            return  # the post was deleted: its votes stay as they were
        reactions = {self.emoji_stars[emoji]: list(members) for emoji, members in found.items()
                     if emoji in self.emoji_stars}
        # Through the queue, so events that arrive after this read are applied after it.
        self.snapshot(guild_id, post, reactions)
