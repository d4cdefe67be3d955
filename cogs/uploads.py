"""Song uploads: `/upload` with an attachment, or a post in the guild's uploads channel.

The declared size is checked before anything is downloaded; the bytes then go through
`UploadService.ingest_bytes`, the same checks, conversion and records as `crowdtune upload`,
and the member hears what was understood (duration, format) or the one reason it was not
taken.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter.client import CrowdtuneBot
from bot.core.ingest import UploadRejected
from bot.core.uploads import UploadRow

log = logging.getLogger(__name__)


def accepted_text(row: UploadRow, is_new: bool) -> str:
    minutes, seconds = divmod(round(row.duration_s), 60)
    what = f"{discord.utils.escape_markdown(row.original_name)} ({minutes}:{seconds:02d}, " \
           f"{row.format})"
    if not is_new:
        return f"I already have {what}; thanks, it still counts once."
    return f"Got it: {what}. It will seed new tracks and guide this week's training."


class Uploads(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    async def ingest(self, guild_id: int, member_id: int, attachment: discord.Attachment
                     ) -> tuple[UploadRow, bool]:
        """Check the size, download, ingest; `UploadRejected` with the reason otherwise."""
        uploads = self.bot.services.uploads
        uploads.check_size(attachment.size)  # before downloading anything
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            raise UploadRejected("I could not download that file from Discord; please try "
                                 "again.") from exc
        return await uploads.ingest_bytes(guild_id, member_id, data, attachment.filename)

    @app_commands.command(name="upload", description="Share a song the model should learn from")
    @app_commands.describe(song="An audio file: mp3, ogg, wav, flac or m4a, 10 s to 10 min")
    @app_commands.guild_only()
    async def upload(self, interaction: discord.Interaction, song: discord.Attachment) -> None:
        assert interaction.guild is not None
        self.bot.services.uploads.check_size(song.size)  # refuse before deferring
        await interaction.response.defer(ephemeral=True, thinking=True)
        row, is_new = await self.ingest(interaction.guild.id, interaction.user.id, song)
        await interaction.followup.send(accepted_text(row, is_new), ephemeral=True)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Audio posted in the uploads channel (without the Message Content intent Discord
        only shows the bot attachments of posts that mention it)."""
        if message.guild is None or message.author.bot or not message.attachments:
            return
        cfg = await self.bot.services.configs.get(message.guild.id)
        if cfg.uploads_channel_id != message.channel.id:
            return
        for attachment in message.attachments:
            try:
                row, is_new = await self.ingest(message.guild.id, message.author.id,
                                                attachment)
                text = accepted_text(row, is_new)
            except UploadRejected as exc:
                text = f"{discord.utils.escape_markdown(attachment.filename)}: {exc.reason}"
            except Exception:
                log.exception("upload %s failed", attachment.filename)
                text = (f"{discord.utils.escape_markdown(attachment.filename)}: something "
                        "went wrong on my side; please try again later.")
            try:
                await message.reply(text, mention_author=False)
            except discord.HTTPException as exc:
                log.warning("could not answer an upload: %s", exc)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Uploads(bot))
