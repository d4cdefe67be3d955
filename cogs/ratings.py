"""Votes: 1️⃣-5️⃣ reactions on track posts (raw events, so posts of any age count).

Events are queued in arrival order and applied by a few workers, each owning a share of the
(post, member) pairs: one member's quick "3, then 5, then take 5 back" is applied in order
by one worker and ends exactly where they left it, while different members' votes go to the
database side by side (one at a time, each vote waits on several database round trips).
Events about a whole post (reactions cleared, reconciliation) wait for every worker first.
At every READY (a new gateway session: events in between were never delivered) the recent
track posts are read back and the votes made to match their reactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import discord
from discord.ext import commands

from bot.adapter.client import CrowdtuneBot
from bot.core.ratings import EMOJI_STARS, STAR_EMOJIS

log = logging.getLogger(__name__)


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


WORKERS = 8


class Ratings(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        self._shards: list[asyncio.Queue[Change]] = [asyncio.Queue() for _ in range(WORKERS)]
        self._tasks: list[asyncio.Task[None]] = []
        self._reconciling: asyncio.Task[None] | None = None
        self._cannot_remove_reactions: set[int] = set()  # channels; warned once
        self.reconciled = asyncio.Event()  # set after each READY's reconciliation

    async def cog_load(self) -> None:
        self._tasks = [asyncio.create_task(self._dispatch(), name="ratings-dispatch")]
        self._tasks += [asyncio.create_task(self._work(q), name=f"ratings-{i}")
                        for i, q in enumerate(self._shards)]

    async def cog_unload(self) -> None:
        """Shutdown: votes already received are written before the workers stop."""
        if self._reconciling is not None:
            self._reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciling
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), 10.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self) -> None:
        """Wait until every queued event is in the database (tests, benchmarks)."""
        await self.queue.join()
        await asyncio.gather(*(q.join() for q in self._shards))

    # --- gateway events (no awaits before queueing: order is arrival order) ----------------

    def _is_own(self, user_id: int) -> bool:
        return self.bot.user is not None and user_id == self.bot.user.id

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        stars = EMOJI_STARS.get(str(event.emoji))
        if stars is None or event.guild_id is None or self._is_own(event.user_id):
            return
        if event.member is not None and event.member.bot:
            return
        self.queue.put_nowait(Change("add", event.guild_id, event.channel_id, event.message_id,
                                     event.user_id, stars))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, event: discord.RawReactionActionEvent) -> None:
        stars = EMOJI_STARS.get(str(event.emoji))
        if stars is None or event.guild_id is None or self._is_own(event.user_id):
            return
        self.queue.put_nowait(Change("remove", event.guild_id, event.channel_id,
                                     event.message_id, event.user_id, stars))

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, event: discord.RawReactionClearEvent) -> None:
        if event.guild_id is not None:
            self.queue.put_nowait(Change("clear", event.guild_id, event.channel_id,
                                         event.message_id))

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(self, event: discord.RawReactionClearEmojiEvent
                                          ) -> None:
        stars = EMOJI_STARS.get(str(event.emoji))
        if stars is not None and event.guild_id is not None:
            self.queue.put_nowait(Change("clear", event.guild_id, event.channel_id,
                                         event.message_id, stars=stars))

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self.reconciled.clear()
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.create_task(self.reconcile_all(), name="reconcile")

    # --- applying -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            change = await self.queue.get()
            try:
                if change.kind in ("add", "remove"):
                    key = hash((change.message_id, change.member_id))
                    self._shards[key % WORKERS].put_nowait(change)
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
        ratings = self.bot.services.ratings
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
                await self._remove_old_reaction(change, outcome.previous)

    async def _remove_old_reaction(self, change: Change, stars: int | None) -> None:
        """One vote per member: their previous emoji goes, so the post shows what counts.
        The REMOVE event this causes is ignored (it is not their vote any more)."""
        if stars is None or change.channel_id in self._cannot_remove_reactions:
            return
        message = self.bot.get_partial_messageable(
            change.channel_id, guild_id=change.guild_id).get_partial_message(change.message_id)
        try:
            await message.remove_reaction(STAR_EMOJIS[stars - 1], discord.Object(change.member_id))
        except discord.Forbidden:
            self._cannot_remove_reactions.add(change.channel_id)
            log.warning("channel %s: no Manage Messages permission, so a member's previous "
                        "vote emoji stays visible (only the latest counts)", change.channel_id)
        except discord.HTTPException as exc:
            log.info("could not remove an old vote emoji: %s", exc)

    # --- reconciliation -------------------------------------------------------------------

    async def reconcile_all(self) -> None:
        """Votes cast or taken back while the bot was away, from recent track posts."""
        try:
            since = self.bot.clock() - timedelta(days=self.bot.settings.reconcile_days)
            await self.drain()  # live events first
            for guild in self.bot.guilds:
                tracks = await self.bot.services.store.posted_tracks(str(guild.id),
                                                                     since.timestamp())
                for track in tracks:
                    try:
                        await self.reconcile_track(guild, track.id, int(track.channel_id or 0),
                                                   int(track.message_id or 0))
                    except discord.NotFound:
                        continue  # the post was deleted: its votes stay as they were
                    except discord.HTTPException as exc:
                        log.warning("track %d: reconciliation skipped: %s", track.id, exc)
            await self.drain()
            log.info("votes reconciled with the reactions on recent track posts")
        except Exception:
            log.exception("vote reconciliation failed")
        finally:
            self.reconciled.set()

    async def reconcile_track(self, guild: discord.Guild, track_id: int, channel_id: int,
                              message_id: int) -> None:
        channel = guild.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return
        message = await channel.fetch_message(message_id)
        reactions: dict[int, list[int]] = {}
        for reaction in message.reactions:
            stars = EMOJI_STARS.get(str(reaction.emoji))
            if stars is None or reaction.count <= int(reaction.me):
                continue
            reactions[stars] = [u.id async for u in reaction.users(limit=None)
                                if not u.bot]
        # Through the queue, so events that arrive after this snapshot are applied after it.
        self.queue.put_nowait(Change("reconcile", guild.id, channel_id, message_id,
                                     track_id=track_id, reactions=reactions))

async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Ratings(bot))
