"""/generate: a member asks for a track now (scheduled posts are the bot's, see bot.client)."""

from __future__ import annotations

import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter.client import CrowdtuneBot
from bot.adapter.posting import track_embed, track_file
from bot.core.prompt import VOCAB, TagRequest, read_request

log = logging.getLogger(__name__)

# Discord keeps an interaction token for 15 minutes; past this, post in the channel instead.
TOKEN_WINDOW_S = 14 * 60
MAX_PROMPT = 200


def _values(field: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=v, value=v) for v in VOCAB[field]]


def reply_content(request: TagRequest, made_with: dict[str, str]) -> str | None:
    """What was understood, and a note when the guild's model could not take it."""
    line = request.reply_line()
    if line is not None and request.tags and not made_with:
        line += " (this server's model does not take tags, so they were not used)"
    return line


class Tracks(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    @app_commands.command(name="generate", description="Make a new track for this server now")
    @app_commands.describe(
        mood="Happy (major key) or sad (minor key)", instrument="The lead instrument",
        tempo="How fast", style="The kind of music", drums="With or without drums",
        prompt="Say it in words, e.g. 'sad slow piano' (the options above win)")
    @app_commands.choices(
        mood=[app_commands.Choice(name="happy (major key)", value="happy"),
              app_commands.Choice(name="sad (minor key)", value="sad")],
        instrument=_values("instrument"), tempo=_values("tempo"), style=_values("style"),
        drums=[app_commands.Choice(name="with drums", value="yes"),
               app_commands.Choice(name="no drums", value="no")])
    @app_commands.guild_only()
    async def generate(
        self, interaction: discord.Interaction, mood: str | None = None,
        instrument: str | None = None, tempo: str | None = None, style: str | None = None,
        drums: str | None = None,
        prompt: app_commands.Range[str, 1, MAX_PROMPT] | None = None,
    ) -> None:
        assert interaction.guild is not None
        # Nothing asked (no option, no prompt): tags None, the guild's default policy.
        request = read_request(prompt, mood=mood, instrument=instrument, tempo=tempo,
                               style=style, drums=drums)
        guild_id = str(interaction.guild.id)
        cfg = await self.bot.services.configs.get(guild_id)
        use = self.bot.generate_limiter.acquire((guild_id, interaction.user.id),
                                                cfg.generate_per_hour)
        started = time.monotonic()
        await interaction.response.defer(thinking=True)  # at once: generation takes a while
        interaction.extras["public_defer"] = True
        try:
            (track,) = await self.bot.services.tracks.generate(guild_id, 1,
                                                               tags=request.tags)
        except BaseException:
            self.bot.generate_limiter.refund(use)  # our failure costs the member nothing
            raise
        embed = track_embed(track, requested_by=interaction.user)
        said = reply_content(request, track.tags)
        if time.monotonic() - started < TOKEN_WINDOW_S:
            message = await interaction.followup.send(said or discord.utils.MISSING,
                                                      embed=embed, file=track_file(track),
                                                      wait=True)
        else:
            channel = interaction.channel
            assert isinstance(channel, discord.abc.Messageable)
            mention = interaction.user.mention
            message = await channel.send(f"{mention} {said}" if said else mention,
                                         embed=embed, file=track_file(track))
        await self.bot.attach_track(message, track)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Tracks(bot))
