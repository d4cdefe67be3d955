"""/radio start|stop|skip|now, and listening time from voice state updates.

The player itself is `bot.adapter.radio.Radio` (`bot.radio`); these are its commands.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter import checks
from bot.adapter.client import CrowdtuneBot, UserFacingError

log = logging.getLogger(__name__)


class RadioCommands(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    radio = app_commands.Group(name="radio", description="The bot plays tracks in voice",
                               guild_only=True)

    @radio.command(name="start", description="Play this server's tracks in voice")
    async def start(self, interaction: discord.Interaction) -> None:
        guild = interaction.guild
        assert guild is not None
        cfg = await self.bot.services.configs.get(guild.id)
        channel = guild.get_channel(cfg.voice_channel_id) if cfg.voice_channel_id else None
        if channel is None:
            voice = getattr(interaction.user, "voice", None)
            channel = voice.channel if voice is not None else None
        if not isinstance(channel, discord.VoiceChannel):
            raise UserFacingError("Join a voice channel first, or ask a moderator to set one "
                                  "with /setup.")
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        await self.bot.radio.start(guild, channel)
        await interaction.followup.send(f"📻 Radio on in {channel.mention}: listening time "
                                        "counts as feedback (deafened does not).")

    @radio.command(name="stop", description="Stop the radio")
    @checks.radio_listener_or_moderator()
    async def stop(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        if self.bot.radio.channel_of(interaction.guild.id) is None:
            raise UserFacingError("The radio is not on.")
        await self.bot.radio.stop(interaction.guild.id)
        await interaction.response.send_message("Radio off.")

    @radio.command(name="skip", description="Skip to the next track")
    @checks.radio_listener_or_moderator()
    async def skip(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        if not self.bot.radio.skip(interaction.guild.id):
            raise UserFacingError("Nothing is playing.")
        await interaction.response.send_message("Skipped.")

    @radio.command(name="now", description="What the radio is playing")
    async def now(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        playing = self.bot.radio.now(interaction.guild.id)
        if playing is None:
            raise UserFacingError("Nothing is playing; start the radio with /radio start.")
        t = playing.track
        elapsed = max(0.0, self.bot.timestamp() - playing.started_at)
        link = (f" · https://discord.com/channels/{interaction.guild.id}/{t.channel_id}/"
                f"{t.message_id}" if t.message_id else "")
        await interaction.response.send_message(
            f"Now playing track #{t.id} ({t.model_version}), {elapsed:.0f} s of "
            f"{t.duration_s:.0f} s, in <#{playing.channel_id}> with {playing.listeners} "
            f"listener(s){link}", ephemeral=True)

    @commands.Cog.listener()
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        # Synchronous all the way: the states are read before anything else can run.
        me = self.bot.user is not None and member.id == self.bot.user.id
        self.bot.radio.voice_update(member, after, me)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(RadioCommands(bot))
