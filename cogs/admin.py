"""The owner's `@crowdtune sync`: registers slash commands before any exists (a mention
makes the message's content visible without the Message Content intent)."""

from __future__ import annotations

import logging

from discord.ext import commands

from bot.adapter.client import CrowdtuneBot

log = logging.getLogger(__name__)


class Admin(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    @commands.command(name="sync", help="Register the slash commands with Discord")
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[CrowdtuneBot]) -> None:
        lines = await self.bot.sync_commands()
        log.info("owner %s synced: %s", ctx.author.id, "; ".join(lines))
        await ctx.reply("Synced " + "; ".join(lines) + ".", mention_author=False)

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[CrowdtuneBot],
                               error: commands.CommandError) -> None:
        if isinstance(error, commands.NotOwner):
            await ctx.reply("Only the bot's owner can do that.", mention_author=False)
        elif not isinstance(error, commands.CommandNotFound):
            log.error("@bot %s failed", ctx.invoked_with, exc_info=error)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Admin(bot))
