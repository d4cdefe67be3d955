"""Members' data: /forget-me, /my-data, and moderators' /uploads list and /uploads remove.

Everything goes through `PrivacyService` (bot/core/privacy.py), the same path as `crowdtune
forget`, `crowdtune export` and `crowdtune uploads`. Replies are private; forgetting asks
for a confirmation button first, since it cannot be undone.
"""

from __future__ import annotations

import io
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter import checks
from bot.adapter.client import GENERIC_ERROR, CrowdtuneBot, reply_privately
from bot.core.prompt import describe

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 300


def privacy_pointer(bot: CrowdtuneBot) -> str:
    url = bot.services.settings.privacy_url
    return (f"What is stored and why: <{url}>." if url
            else "Ask a moderator for the bot's privacy notice (PRIVACY.md).")


class ForgetView(discord.ui.View):
    """The confirmation under /forget-me: only the member who asked sees it (ephemeral)."""

    def __init__(self, bot: CrowdtuneBot, member_id: int) -> None:
        super().__init__(timeout=CONFIRM_SECONDS)
        self.bot = bot
        self.member_id = member_id

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger,
                       custom_id="forget:confirm")
    async def confirm(self, interaction: discord.Interaction,
                      _button: discord.ui.Button[ForgetView]) -> None:
        self.stop()
        report = await self.bot.services.privacy.forget(self.member_id)
        await interaction.response.edit_message(
            content=f"Done. {report.summary()} None of it will be used again. Models already "
                    f"trained are not retrained. {privacy_pointer(self.bot)}", view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary,
                       custom_id="forget:cancel")
    async def cancel(self, interaction: discord.Interaction,
                     _button: discord.ui.Button[ForgetView]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)

    async def on_error(self, interaction: discord.Interaction, error: Exception,
                       _item: discord.ui.Item[ForgetView]) -> None:
        log.error("/forget-me failed", exc_info=error)
        await reply_privately(interaction, GENERIC_ERROR)


class Privacy(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    @app_commands.command(name="forget-me",
                          description="Delete your votes, listening and uploads")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "This deletes your votes, your listening time and your uploads (the files too) "
            "in every server this bot is in, and none of it will be used again. Models "
            "already trained on them are not retrained. This cannot be undone.",
            view=ForgetView(self.bot, interaction.user.id), ephemeral=True)

    @app_commands.command(name="my-data", description="Get a file of everything the bot "
                          "holds about you")
    async def my_data(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines = await self.bot.services.privacy.member_lines(interaction.user.id)
        if not lines:
            await interaction.followup.send(
                f"I hold no votes, listening or uploads of yours. {privacy_pointer(self.bot)}",
                ephemeral=True)
            return
        data = "".join(line + "\n" for line in lines).encode()
        await interaction.followup.send(
            f"Everything I hold about you: {len(lines)} rows, one JSON object per line "
            f"(tracks you rated or heard, your votes, listens and uploads). "
            f"{privacy_pointer(self.bot)}",
            file=discord.File(io.BytesIO(data), filename="crowdtune-my-data.jsonl"),
            ephemeral=True)

    uploads_group = checks.ModeratorGroup(name="uploads", description="Members' uploads")

    @uploads_group.command(name="list", description="This server's uploads, newest first")
    async def uploads_list(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        rows = await self.bot.services.uploads.list(interaction.guild.id)
        if not rows:
            await interaction.response.send_message("No uploads yet.", ephemeral=True)
            return
        lines = []
        for r in reversed(rows[-20:]):
            minutes, seconds = divmod(round(r.duration_s), 60)
            who = f"<@{r.member_id}>" if r.member_id.isdigit() else r.member_id
            heard = f", sounds like {describe(r.tags)}" if r.tags else ""
            lines.append(f"**#{r.id}** {discord.utils.escape_markdown(r.original_name)} "
                         f"({minutes}:{seconds:02d}) from {who}{heard}")
        more = f"\n…and {len(rows) - 20} older" if len(rows) > 20 else ""
        await interaction.response.send_message(
            "\n".join(lines)[:1900] + more + "\nRemove one with /uploads remove.",
            ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @uploads_group.command(name="remove", description="Delete an upload: never used again")
    @app_commands.describe(upload="The upload's number, from /uploads list")
    async def uploads_remove(self, interaction: discord.Interaction,
                             upload: app_commands.Range[int, 1]) -> None:
        assert interaction.guild is not None
        row = await self.bot.services.privacy.remove_upload(interaction.guild.id, upload)
        log.info("guild %s: %s removed upload #%d", interaction.guild.id, interaction.user.id,
                 row.id)
        await interaction.response.send_message(
            f"Removed upload #{row.id} ({discord.utils.escape_markdown(row.original_name)}). "
            "It will not be used for training or seeding again; models already trained on it "
            "are not retrained.", ephemeral=True)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Privacy(bot))
