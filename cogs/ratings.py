"""Votes: 1️⃣-5️⃣ reactions on track posts (raw events, so posts of any age count).

The ordering and the database work are `bot.core.ratings.VoteQueue`'s: this cog turns each
gateway event into one synchronous call on it (arrival order is queue order), and does for it
what only Discord can: take a member's previous vote emoji off a post, and read a post's
reactions. At every READY (a new gateway session: events in between were never delivered) the
recent track posts are read back and the votes made to match their reactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import timedelta

import discord
from discord.ext import commands

from bot.adapter.client import CrowdtuneBot
from bot.core.ratings import PostUnavailable, VoteQueue

log = logging.getLogger(__name__)


class Ratings(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot
        self.votes = VoteQueue(bot.services.ratings, self.remove_reaction)
        self._cannot_remove_reactions: set[int] = set()  # channels; warned once

    @property
    def reconciled(self) -> asyncio.Event:
        """Set after each READY's reconciliation (tests, benchmarks)."""
        return self.votes.reconciled

    async def drain(self) -> None:
        """Wait until every queued event is in the database (tests, benchmarks)."""
        await self.votes.drain()

    async def cog_load(self) -> None:
        self.votes.start()

    async def cog_unload(self) -> None:
        await self.votes.stop()

    # --- gateway events (no awaits before queueing: order is arrival order) ----------------

    def _is_own(self, user_id: int) -> bool:
        return self.bot.user is not None and user_id == self.bot.user.id

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        if event.guild_id is None or self._is_own(event.user_id):
            return
        if event.member is not None and event.member.bot:
            return
        self.votes.added(event.guild_id, event.channel_id, event.message_id, event.user_id,
                         str(event.emoji))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, event: discord.RawReactionActionEvent) -> None:
        if event.guild_id is None or self._is_own(event.user_id):
            return
        self.votes.removed(event.guild_id, event.channel_id, event.message_id, event.user_id,
                           str(event.emoji))

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, event: discord.RawReactionClearEvent) -> None:
        if event.guild_id is not None:
            self.votes.cleared(event.guild_id, event.channel_id, event.message_id)

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(self, event: discord.RawReactionClearEmojiEvent
                                          ) -> None:
        if event.guild_id is not None:
            self.votes.cleared(event.guild_id, event.channel_id, event.message_id,
                               str(event.emoji))

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        since = self.bot.clock() - timedelta(days=self.bot.settings.reconcile_days)
        self.votes.reconcile_soon([g.id for g in self.bot.guilds], since.timestamp(),
                                  self.post_reactions)

    # --- what only Discord can do -----------------------------------------------------------

    async def remove_reaction(self, guild_id: int, channel_id: int, message_id: int,
                              emoji: str, member_id: int) -> None:
        """Take a member's previous vote emoji off a post (a changed vote)."""
        if channel_id in self._cannot_remove_reactions:
            return
        message = self.bot.get_partial_messageable(
            channel_id, guild_id=guild_id).get_partial_message(message_id)
        try:
            await message.remove_reaction(emoji, discord.Object(member_id))
        except discord.Forbidden:
            self._cannot_remove_reactions.add(channel_id)
            log.warning("channel %s: no Manage Messages permission, so a member's previous "
                        "vote emoji stays visible (only the latest counts)", channel_id)
        except discord.HTTPException as exc:
            log.info("could not remove an old vote emoji: %s", exc)

    async def post_reactions(self, guild_id: int, channel_id: int, message_id: int,
                             emojis: Collection[str]) -> dict[str, list[int]] | None:
        """Who reacted with each of `emojis` on a post (bots left out); None if it is gone."""
        guild = self.bot.get_guild(guild_id)
        channel = guild.get_channel(channel_id) if guild is not None else None
        if not isinstance(channel, discord.abc.Messageable):
            return None
        try:
            message = await channel.fetch_message(message_id)
            found: dict[str, list[int]] = {}
            for reaction in message.reactions:
                emoji = str(reaction.emoji)
                if emoji not in emojis or reaction.count <= int(reaction.me):
                    continue  # not a vote, or only the bot's own
                found[emoji] = [u.id async for u in reaction.users(limit=None) if not u.bot]
        except discord.NotFound:
            return None
        except discord.HTTPException as exc:
            raise PostUnavailable(str(exc)) from exc
        return found


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Ratings(bot))
