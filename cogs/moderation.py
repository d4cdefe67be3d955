"""Moderator commands: /setup, /round, /model, /stats, /schedule, /sync.

Hidden from members by default (Manage Server), and checked on every call as well
(`checks.moderator_only`), since a server can show the commands to anyone: a member needs
Manage Server or the moderator role set with /setup. Replies are private. Everything else is
the services': rounds, model versions, statistics, guild settings.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter import checks
from bot.adapter.client import CrowdtuneBot, UserFacingError
from bot.core.domain import MAX_GENERATE_PER_HOUR, MAX_POSTS_PER_DAY, RoundStatus
from bot.core.guild_config import GuildConfig
from bot.core.rounds import RoundRow
from bot.core.tag_policy import taste_lines

log = logging.getLogger(__name__)

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def when(ts: float | None) -> str:
    """A Discord timestamp: each member sees it in their own time zone."""
    if not ts:
        return "never"
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{discord.utils.format_dt(moment, 'f')} ({discord.utils.format_dt(moment, 'R')})"


def round_line(r: RoundRow) -> str:
    outcome = r.status
    if r.status == RoundStatus.SUCCEEDED:
        outcome = (f"promoted {r.candidate_version}" if r.promoted
                   else f"kept {r.parent_version} ({r.candidate_version} not promoted)")
    reason = (r.reason or "").splitlines()[0][:150] if r.reason else ""
    return f"**#{r.id}** {when(r.started_at)}: {outcome}" + (f" - {reason}" if reason else "")


def channel_mention(channel_id: int | None) -> str:
    return f"<#{channel_id}>" if channel_id else "not set"


class Moderation(commands.Cog):
    def __init__(self, bot: CrowdtuneBot) -> None:
        self.bot = bot

    async def _reply(self, interaction: discord.Interaction, text: str) -> None:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    # --- /setup ---------------------------------------------------------------------------

    @app_commands.command(name="setup", description="Channels and the moderator role")
    @app_commands.describe(
        music_channel="Where tracks and round reports are posted",
        uploads_channel="Where members can post songs to learn from",
        voice_channel="Where /radio plays",
        moderator_role="Members with this role may use the moderator commands")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @checks.moderator_only()
    async def setup_command(self, interaction: discord.Interaction,
                            music_channel: discord.TextChannel | None = None,
                            uploads_channel: discord.TextChannel | None = None,
                            voice_channel: discord.VoiceChannel | None = None,
                            moderator_role: discord.Role | None = None) -> None:
        guild = interaction.guild
        assert guild is not None
        changes = {key: value.id for key, value in (
            ("music_channel_id", music_channel), ("uploads_channel_id", uploads_channel),
            ("voice_channel_id", voice_channel), ("moderator_role_id", moderator_role))
            if value is not None}
        configs = self.bot.services.configs
        cfg = await configs.update(guild.id, **changes) if changes else await configs.get(
            guild.id)
        lines = ["Saved." if changes else "Current setup:",
                 f"Music channel: {channel_mention(cfg.music_channel_id)}",
                 f"Uploads channel: {channel_mention(cfg.uploads_channel_id)}",
                 f"Voice channel: {channel_mention(cfg.voice_channel_id)}",
                 "Moderator role: " + (f"<@&{cfg.moderator_role_id}>" if cfg.moderator_role_id
                                       else "not set (Manage Server only)")]
        lines += self._permission_warnings(guild, cfg)
        lines += await self.bot.pin_uploads_howto(guild, cfg)
        if cfg.music_channel_id is None:
            lines.append("Set a music channel so tracks and round reports get posted.")
        await self._reply(interaction, "\n".join(lines))

    def _permission_warnings(self, guild: discord.Guild, cfg: GuildConfig) -> list[str]:
        me = guild.me
        needs = {cfg.music_channel_id: ("send_messages", "attach_files", "embed_links",
                                        "add_reactions", "read_message_history"),
                 cfg.uploads_channel_id: ("view_channel", "send_messages",
                                          "read_message_history"),
                 cfg.voice_channel_id: ("connect", "speak")}
        out = []
        for channel_id, perms in needs.items():
            channel = guild.get_channel(channel_id) if channel_id else None
            if channel is None or me is None:
                continue
            have = channel.permissions_for(me)
            missing = [p for p in perms if not getattr(have, p)]
            if missing:
                out.append(f"Warning: in {channel.mention} I lack "
                           f"{', '.join(p.replace('_', ' ') for p in missing)}.")
        return out

    # --- /round ---------------------------------------------------------------------------

    round_group = checks.ModeratorGroup(name="round",
                                        description="The weekly fine-tuning round")

    @round_group.command(name="now", description="Run this week's round now")
    async def round_now(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        self.bot.start_round(interaction.guild.id)
        channel = await self.bot.music_channel(interaction.guild.id)
        where = channel.mention if channel else "nowhere yet (set a music channel with /setup)"
        await self._reply(interaction, f"Round started; its report will be posted in {where}. "
                          "Follow it with /round status.")

    @round_group.command(name="status", description="The running or the last round")
    async def round_status(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        gid = str(interaction.guild.id)
        state = await self.bot.services.rounds.state(gid)
        running, last = state.running, state.last
        lines = []
        if state.ahead is not None:
            lines.append(f"A round is queued: {state.ahead} ahead of it "
                         f"({self.bot.settings.round_concurrency} run at a time).")
        elif self.bot.round_task(gid) is not None or running is not None:
            since = f" since {when(running.started_at)}" if running else ""
            on = f" on {state.where.backend} ({state.where.node})" if state.where else ""
            lines.append(f"A round is running{since}{on}.")
        lines.append(f"Last round: {round_line(last)}" if last else "No round has run yet.")
        nxt = self.bot.scheduler.next_run(f"round:{gid}")
        cfg = await self.bot.services.configs.get(gid)
        lines.append(f"Next round: {when(nxt.timestamp()) if nxt else 'not scheduled'} "
                     f"({cfg.round_when()}).")
        await self._reply(interaction, "\n".join(lines))

    @round_group.command(name="history", description="The last rounds and what they did")
    async def round_history(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        rows = await self.bot.services.rounds.history(str(interaction.guild.id), limit=8)
        text = "\n".join(round_line(r) for r in rows) if rows else "No round has run yet."
        await self._reply(interaction, text[:1900])

    # --- /model ---------------------------------------------------------------------------

    model_group = checks.ModeratorGroup(name="model",
                                        description="This server's model versions")

    @model_group.command(name="info", description="The active model and its versions")
    async def model_info(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        overview = await self.bot.services.models.overview(interaction.guild.id)
        versions, active = overview.versions, overview.active
        if not versions:
            await self._reply(interaction, "No model yet: the first track creates v0001 from "
                              "the base model.")
            return
        lines = [f"Active model: **{active}** ({len(versions)} version(s))"]
        for v in versions[-8:]:
            mark = " ← active" if v.version == active else ""
            parent = f" from {v.parent}" if v.parent else ""
            note = f" - {v.note}" if v.note else ""
            why = ", ".join(overview.kept.get(v.version, [])) or "pruned after the next round"
            lines.append(f"`{v.version}` {v.source}{parent}, {when(v.created_at)}{note}{mark} "
                         f"(kept: {why})")
        await self._reply(interaction, "\n".join(lines)[:1900])

    @model_group.command(name="pin", description="Always keep a model version (or unpin it)")
    @app_commands.describe(version="e.g. v0003", unpin="Stop keeping it for being pinned")
    async def model_pin(self, interaction: discord.Interaction, version: str,
                        unpin: bool = False) -> None:
        assert interaction.guild is not None
        await self.bot.services.models.pin(interaction.guild.id, version, pinned=not unpin)
        await self._reply(interaction, f"**{version}** is no longer pinned." if unpin else
                          f"**{version}** is pinned: it is kept whatever rounds prune.")

    @model_group.command(name="rollback", description="Go back to the previous (or a named) "
                         "model version")
    @app_commands.describe(version="e.g. v0002; default: the active version's parent")
    async def model_rollback(self, interaction: discord.Interaction,
                             version: str | None = None) -> None:
        assert interaction.guild is not None
        info = await self.bot.services.models.rollback(interaction.guild.id, version)
        log.warning("guild %s: %s rolled the model back to %s", interaction.guild.id,
                    interaction.user.id, info.version)
        await self._reply(interaction, f"**{info.version}** is active again; the next tracks "
                          "come from it.")

    # --- /stats ---------------------------------------------------------------------------

    @app_commands.command(name="stats", description="Votes, listeners, uploads and the top "
                          "tracks")
    @app_commands.describe(days="How far back (default: the last 7 days)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @checks.moderator_only()
    async def stats(self, interaction: discord.Interaction,
                    days: app_commands.Range[int, 1, 365] = 7) -> None:
        guild = interaction.guild
        assert guild is not None
        await interaction.response.defer(ephemeral=True, thinking=True)  # the chart takes a bit
        s = await self.bot.services.stats.last_days(guild.id, days)
        hours = s.listened_s / 3600
        lines = [f"**Last {days} day{'s' if days != 1 else ''}**",
                 f"Tracks: {s.tracks} · votes: {s.votes} from {s.voters} member(s)",
                 f"Listeners: {s.listeners} · listening: {hours:.1f} h",
                 f"Uploads: {s.uploads}"]
        if s.top:
            lines.append("Top tracks:")
            for i, t in enumerate(s.top, 1):
                link = (f"https://discord.com/channels/{guild.id}/{t.channel_id}/{t.message_id}"
                        if t.message_id else "")
                lines.append(f"{i}. Track #{t.track_id} ({t.model_version}): "
                             f"{t.mean_stars:.2f} stars from {t.votes} vote(s) {link}".rstrip())
        else:
            lines.append("No rated tracks yet.")
        lines += taste_lines(await self.bot.services.tracks.tag_policy(str(guild.id)))
        # How the guild's model fares against the baseline, round by round, since the start.
        periods, chart = await self.bot.services.rounds.ratings_chart(
            str(guild.id), f"stats-{interaction.user.id}")  # per moderator: no write races
        files = [discord.File(chart, filename="ratings.png")] if periods else []
        await interaction.followup.send("\n".join(lines)[:1900], files=files, ephemeral=True)

    # --- /schedule ------------------------------------------------------------------------

    schedule_group = checks.ModeratorGroup(name="schedule",
                                           description="When rounds and posts happen")

    async def _schedule_text(self, guild_id: int) -> str:
        cfg = await self.bot.services.configs.get(guild_id)
        nxt = self.bot.scheduler.next_run(f"round:{guild_id}")
        post = self.bot.scheduler.next_run(f"post:{guild_id}")
        return "\n".join([
            f"Weekly round: {cfg.round_when()}; next {when(nxt.timestamp()) if nxt else 'n/a'}",
            f"Scheduled posts: {cfg.posts_when()}"
            + (f"; next {when(post.timestamp())}" if post else ""),
            f"/generate: {cfg.generate_per_hour} per member per hour"])

    @schedule_group.command(name="show", description="The round and posting schedule")
    async def schedule_show(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        await self._reply(interaction, await self._schedule_text(interaction.guild.id))

    @schedule_group.command(name="set", description="Change the round or posting schedule")
    @app_commands.describe(
        day="Day of the weekly round", hour="Hour of the round (0-23, server time zone)",
        minute="Minute of the round", timezone="IANA time zone, e.g. Europe/Berlin",
        posts_per_day=f"Tracks posted a day (0-{MAX_POSTS_PER_DAY})",
        generate_per_hour="/generate uses per member per hour (0 turns it off)")
    async def schedule_set(
        self, interaction: discord.Interaction, day: Day | None = None,
        hour: app_commands.Range[int, 0, 23] | None = None,
        minute: app_commands.Range[int, 0, 59] | None = None, timezone: str | None = None,
        posts_per_day: app_commands.Range[int, 0, MAX_POSTS_PER_DAY] | None = None,
        generate_per_hour: app_commands.Range[int, 0, MAX_GENERATE_PER_HOUR] | None = None,
    ) -> None:
        guild = interaction.guild
        assert guild is not None
        changes = {k: v for k, v in {
            "round_day": day, "round_hour": hour, "round_minute": minute, "timezone": timezone,
            "posts_per_day": posts_per_day, "generate_per_hour": generate_per_hour,
        }.items() if v is not None}
        if not changes:
            raise UserFacingError("Nothing to change: give a day, hour, minute, timezone, "
                                  "posts_per_day or generate_per_hour.")
        await self.bot.services.configs.update(guild.id, **changes)
        moved = bool({"round_day", "round_hour", "round_minute", "timezone"} & set(changes))
        await self.bot.scheduler.add_guild(guild.id, schedule_changed=moved)
        await self._reply(interaction, "Saved.\n" + await self._schedule_text(guild.id))

    # --- /sync ----------------------------------------------------------------------------

    @app_commands.command(name="sync", description="Re-register the bot's slash commands")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @checks.moderator_only()
    async def sync(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines = await self.bot.sync_commands()
        await interaction.followup.send("Synced " + "; ".join(lines) + ".", ephemeral=True)


async def setup(bot: CrowdtuneBot) -> None:
    await bot.add_cog(Moderation(bot))
