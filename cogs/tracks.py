"""/generate: a member asks for a track now (scheduled posts are the bot's, see bot.client)."""

from __future__ import annotations

import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter.client import CrowdtuneBot
from bot.adapter.posting import track_embed, track_file

log = logging.getLogger(__name__)

# Discord keeps an interaction token for 15 minutes; past this, post in the channel instead.
TOKEN_WINDOW_S = 14 * 60


class Tracks(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    @app_commands.command(name="generate", description="Make a new track for this server now")
    @app_commands.guild_only()
    async def generate(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        guild_id = str(interaction.guild.id)
        cfg = await self.bot.services.configs.get(guild_id)
        use = self.bot.generate_limiter.acquire((guild_id, interaction.user.id),
                                                cfg.generate_per_hour)
        started = time.monotonic()
        await interaction.response.defer(thinking=True)  # at once: generation takes a while
        interaction.extras["public_defer"] = True
        try:
            (track,) = await self.bot.services.tracks.generate(guild_id, 1)
        except BaseException:
            self.bot.generate_limiter.refund(use)  # our failure costs the member nothing
            raise
        embed = track_embed(track, requested_by=interaction.user)
        if time.monotonic() - started < TOKEN_WINDOW_S:
            message = await interaction.followup.send(embed=embed, file=track_file(track),
                                                      wait=True)
        else:
            channel = interaction.channel
            assert isinstance(channel, discord.abc.Messageable)
            message = await channel.send(interaction.user.mention, embed=embed,
                                         file=track_file(track))
        await self.bot.attach_track(message, track)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Tracks(bot))
