"""The Discord bot: one `commands.Bot` (or AutoShardedBot) wiring the services to Discord.

`setup_hook` starts the scheduler and loads one cog per feature; the cogs stay thin (parse,
check permission, call the services, reply). Every app command error goes through one
handler (`CrowdtuneTree.on_error`) that answers the member privately in one line saying
what to do. Slash commands are synced only on demand (`crowdtune run --sync`, the owner's
`@bot sync`, or a moderator's `/sync`), never on every start: Discord rate-limits syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.adapter.checks import NotModerator
from bot.adapter.posting import (
    add_vote_reactions,
    report_content,
    report_files,
    track_embed,
    track_file,
    uploads_howto,
)
from bot.adapter.radio import PlayerFactory, Radio, VoicePlayer
from bot.core.backup import scheduled_backup
from bot.core.clock import Clock
from bot.core.config import BotSettings
from bot.core.errors import UserFacingError
from bot.core.guild_config import GuildConfig
from bot.core.ratelimit import RateLimited, SlidingWindowLimiter
from bot.core.rounds import RoundBusy, RoundSummary
from bot.core.scheduler import GuildScheduler
from bot.core.services import Services
from bot.core.tracks import GeneratedTrack
from model.registry import RegistryError

log = logging.getLogger(__name__)

# The daily upkeep (UTC hour): guilds left `guild_retention_days` ago are purged, old
# listening is compacted.
UPKEEP_HOUR = 3

EXTENSIONS = ("cogs.tracks", "cogs.ratings", "cogs.uploads", "cogs.privacy", "cogs.moderation",
              "cogs.radio", "cogs.admin")
GENERIC_ERROR = ("Something went wrong on my side; try again in a minute. If it keeps "
                 "happening, ask a moderator to check the bot's log.")


def make_intents(settings: BotSettings) -> discord.Intents:
    """Only what the features need: no members or presences (privileged), and message
    content only when the uploads channel should take posts without a mention."""
    intents = discord.Intents.none()
    intents.guilds = True  # channels, roles, the guild list
    intents.guild_reactions = True  # votes
    intents.voice_states = True  # listening
    intents.guild_messages = True  # posts in the uploads channel, `@bot sync`
    intents.message_content = settings.message_content
    return intents


def user_message(error: BaseException, interaction: discord.Interaction | None = None
                 ) -> str | None:
    """What to tell the member about an error, or None for a bug (logged, generic reply)."""
    if isinstance(error, app_commands.CommandNotFound):
        name = " ".join([*error.parents, error.name])
        return (f"/{name} is gone or not synced yet; try again in a minute (a moderator can "
                "run /sync to refresh the commands).")
    if isinstance(error, app_commands.TransformerError):
        return bad_option_message(error, interaction)
    if isinstance(error, NotModerator):
        return ("Only moderators can use this: it needs the Manage Server permission or the "
                "moderator role set with /setup.")
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.BotMissingPermissions):
        missing = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"I am missing permissions here ({missing}); ask a moderator to grant them."
    if isinstance(error, RateLimited):
        if error.limit == 0:
            return "Making tracks on request is turned off in this server."
        minutes = max(1, round(error.retry_after / 60))
        return (f"You can make {error.limit} track{'s' if error.limit != 1 else ''} an hour; "
                f"try again in {minutes} minute{'s' if minutes != 1 else ''}.")
    if isinstance(error, RoundBusy):
        return "A round is already running; see /round status for its progress."
    if isinstance(error, UserFacingError):
        return error.reason
    if isinstance(error, RegistryError):
        return f"The model is not ready ({error}); ask the bot's operator."
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    return None


async def reply_privately(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral reply, whatever state the interaction is in. After a public "thinking"
    defer the placeholder is deleted first, so the error is seen by the member only."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.extras.get("public_defer"):
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the member about an error: %s", exc)


def bad_option_message(error: app_commands.TransformerError,
                       interaction: discord.Interaction | None) -> str:
    """One line naming the option whose value could not be used, and what it needs."""
    option = next((name for name, value in (interaction.namespace if interaction else [])
                   if value is error.value), None)
    value = error.value
    shown = getattr(value, "mention", None) or repr(str(value))[:60]
    wanted = getattr(error.transformer, "_error_display_name", None) or error.type.name
    wanted = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(wanted)).lower()
    where = f"for {option} " if option else ""
    return f"That value {where}({shown}) is not a {wanted}; pick another one."


class CrowdtuneTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction,
                       error: app_commands.AppCommandError) -> None:
        cause: BaseException = error
        if isinstance(error, app_commands.CommandInvokeError):
            cause = error.original
        text = user_message(cause, interaction)
        command = (interaction.command.qualified_name if interaction.command
                   else getattr(cause, "name", "?"))
        if text is None:
            log.error("/%s failed", command, exc_info=cause)
            text = GENERIC_ERROR
        elif isinstance(cause, app_commands.TransformerError) and cause.__cause__ is not None:
            log.warning("/%s: an option's converter failed", command, exc_info=cause.__cause__)
        else:
            log.info("/%s refused: %s", command, text)
        await reply_privately(interaction, text)


class CrowdtuneBotMixin:
    """Everything the bot does; mixed into commands.Bot or commands.AutoShardedBot."""

    settings: BotSettings
    services: Services

    def __init__(self, settings: BotSettings, services: Services, *,
                 clock: Clock | None = None, player_factory: PlayerFactory = VoicePlayer,
                 sync_commands: bool = False, **options: Any) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=make_intents(settings),
                         tree_cls=CrowdtuneTree, help_command=None, **options)  # type: ignore[call-arg]
        self.settings = settings
        self.services = services
        self.clock = clock or services.clock  # one clock: the services' unless a test's
        self.radio = Radio(services, player_factory, self.timestamp)
        self.generate_limiter = SlidingWindowLimiter(3600.0, self.timestamp)
        self.scheduler = GuildScheduler(services.configs, self._scheduled_round,
                                        self.post_scheduled, self.clock)
        self._sync_on_start = sync_commands
        self._rounds: dict[str, asyncio.Task[RoundSummary | None]] = {}
        self.guilds_ready = asyncio.Event()  # every guild's schedule installed (per READY)

    @property
    def bot(self) -> commands.Bot:
        return self  # type: ignore[return-value]

    def timestamp(self) -> float:
        return self.clock().timestamp()

    # --- lifecycle ------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        self.scheduler.start()
        if self.settings.backup_dir is not None:
            self.scheduler.add_daily("backup", self.settings.backup_hour, self.daily_backup)
        self.scheduler.add_daily("upkeep", UPKEEP_HOUR, self.daily_upkeep)
        for name in EXTENSIONS:
            await self.bot.load_extension(name)
        if self._sync_on_start:
            for line in await self.sync_commands():
                log.info("synced %s", line)

    async def on_ready(self) -> None:
        user = self.bot.user
        log.info("logged in as %s (%s) in %d guild(s)", user, user.id if user else "?",
                 len(self.bot.guilds))
        self.guilds_ready.clear()
        here = {str(g.id) for g in self.bot.guilds}
        for gid, left_at in (await self.services.store.discord_guilds()).items():
            if gid not in here and left_at is None:  # removed while the bot was offline
                await self.services.store.guild_left(gid)
        for guild in self.bot.guilds:
            try:
                await self.setup_guild(guild)
            except Exception:
                log.exception("guild %s: setup failed", guild.id)
        self.guilds_ready.set()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.setup_guild(guild)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        self.scheduler.remove_guild(guild.id)
        await self.services.store.guild_left(str(guild.id))
        log.info("removed from guild %s: its data is kept %g days", guild.id,
                 self.settings.guild_retention_days)

    async def setup_guild(self, guild: discord.Guild) -> None:
        """Record the guild, install its schedule and run a round missed while offline."""
        await self.services.store.guild_joined(str(guild.id), guild.name)
        await self.scheduler.add_guild(guild.id)
        await self.scheduler.run_due_round(guild.id)

    async def close(self) -> None:
        await self.radio.shutdown()  # open listening intervals close now
        self.scheduler.shutdown()
        for task in self._rounds.values():
            task.cancel()  # the training child is killed; the next round marks it failed
        await asyncio.gather(*self._rounds.values(), return_exceptions=True)
        await super().close()  # type: ignore[misc]

    async def sync_commands(self) -> list[str]:
        """Register the slash commands with Discord: to each configured guild (instant),
        else globally. Returns a line per scope."""
        tree = self.bot.tree
        ids = self.settings.sync_guild_ids
        if not ids:
            return [f"{len(await tree.sync())} commands globally"]
        out = []
        for gid in ids:
            guild = discord.Object(id=gid)
            tree.copy_global_to(guild=guild)
            out.append(f"{len(await tree.sync(guild=guild))} commands to guild {gid}")
        return out

    # --- posting --------------------------------------------------------------------------

    async def pin_uploads_howto(self, guild: discord.Guild, cfg: GuildConfig) -> list[str]:
        """Post and pin the how-to line in the guild's uploads channel, once per channel
        (remembered in the guild's config). Best effort: what failed comes back as warning
        lines for the moderator, never as an error."""
        channel = guild.get_channel(cfg.uploads_channel_id) if cfg.uploads_channel_id else None
        me = self.bot.user
        if not cfg.uploads_howto_due or not isinstance(channel, discord.TextChannel) or \
                me is None:
            return []
        text = uploads_howto(me.mention, self.settings.message_content)
        try:
            message = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            why = ("I may not send messages there" if isinstance(exc, discord.Forbidden)
                   else exc.text or f"HTTP {exc.status}")
            log.warning("guild %s: uploads how-to not posted: %s", guild.id, exc)
            return [f"Warning: I could not post how to share songs in {channel.mention} "
                    f"({why}); I will try again at the next /setup."]
        await self.services.configs.update(guild.id, uploads_howto_channel_id=channel.id,
                                           uploads_howto_message_id=message.id)
        try:
            await message.pin(reason="How to share songs with the bot")
        except discord.HTTPException as exc:
            log.warning("guild %s: uploads how-to not pinned: %s", guild.id, exc)
            return [f"Warning: I posted how to share songs in {channel.mention} but could not "
                    "pin it (I need the Pin Messages permission); pin it yourself."]
        return []

    async def music_channel(self, guild_id: int | str) -> discord.TextChannel | None:
        cfg = await self.services.configs.get(guild_id)
        if cfg.music_channel_id is None:
            return None
        channel = self.bot.get_channel(cfg.music_channel_id)
        return channel if isinstance(channel, discord.TextChannel) else None

    async def attach_track(self, message: discord.Message, track: GeneratedTrack) -> None:
        """Make reactions on `message` votes on `track`, and add the bot's 1-5."""
        await self.services.store.set_track_message(track.track_id, str(message.channel.id),
                                                    str(message.id))
        self.services.ratings.remember(message.id, track.track_id)
        await add_vote_reactions(message)

    async def post_track(self, channel: discord.abc.Messageable, track: GeneratedTrack
                         ) -> discord.Message:
        message = await channel.send(embed=track_embed(track), file=track_file(track))
        await self.attach_track(message, track)
        return message

    async def post_scheduled(self, guild_id: str) -> discord.Message | None:
        """A scheduled post: one track in the generation mix, to the music channel."""
        channel = await self.music_channel(guild_id)
        if channel is None:
            log.info("guild %s: no music channel set (/setup); scheduled post skipped",
                     guild_id)
            return None
        track = await self.services.tracks.next_post(guild_id)
        return await self.post_track(channel, track)

    # --- rounds ---------------------------------------------------------------------------

    def round_task(self, guild_id: str) -> asyncio.Task[RoundSummary | None] | None:
        task = self._rounds.get(str(guild_id))
        return task if task is not None and not task.done() else None

    async def daily_upkeep(self) -> None:
        await self.services.privacy.purge_departed()
        if self.settings.listen_compact_days:
            merged = await self.services.feedback.compact(self.settings.listen_compact_days)
            log.info("upkeep: %d old listening rows merged", merged)

    async def daily_backup(self) -> None:
        """The scheduled backup (bot/core/backup.py), in a thread: it reads every file."""
        s = self.settings
        assert s.backup_dir is not None
        report = await asyncio.to_thread(scheduled_backup, s.data_dir, s.backup_dir,
                                         s.backup_keep)
        log.info("daily backup: %d files, %.1f MB in %s", report.files, report.bytes / 1e6,
                 report.path)

    def start_round(self, guild_id: int | str) -> asyncio.Task[RoundSummary | None]:
        """Run the guild's round in the background and post its report; `RoundBusy` if one
        is running (the round service's file lock also guards other processes)."""
        gid = str(guild_id)
        if self.round_task(gid) is not None:
            raise RoundBusy(f"a round for guild {gid} is already running")
        task = asyncio.create_task(self._round(gid), name=f"round-{gid}")
        self._rounds[gid] = task
        return task

    async def _scheduled_round(self, guild_id: str) -> None:
        try:
            self.start_round(guild_id)
        except RoundBusy:
            log.info("guild %s: scheduled round not started: one is already running", guild_id)

    async def _round(self, guild_id: str) -> RoundSummary | None:
        try:
            summary = await self.services.rounds.run_round(guild_id)
        except RoundBusy as exc:
            log.info("guild %s: %s", guild_id, exc)
            return None
        except Exception:
            log.exception("guild %s: the round crashed", guild_id)
            return None
        log.info("guild %s: round %s %s: %s", guild_id, summary.round_id, summary.status,
                 summary.reason)
        await self.post_round_report(guild_id, summary)
        return summary

    async def post_round_report(self, guild_id: str, summary: RoundSummary) -> None:
        channel = await self.music_channel(guild_id)
        if channel is None:
            log.info("guild %s: no music channel set; round report not posted", guild_id)
            return
        try:
            await channel.send(report_content(summary), files=report_files(summary))
        except discord.HTTPException as exc:
            log.warning("guild %s: could not post the round report: %s", guild_id, exc)


class CrowdtuneBot(CrowdtuneBotMixin, commands.Bot):
    pass


class ShardedCrowdtuneBot(CrowdtuneBotMixin, commands.AutoShardedBot):
    pass


def create_bot(settings: BotSettings, services: Services, **kwargs: Any) -> CrowdtuneBot:
    """The bot class the settings ask for (AutoShardedBot with `auto_shard`, with
    `shard_count` shards when set)."""
    if settings.auto_shard:
        if settings.shard_count is not None:
            kwargs.setdefault("shard_count", settings.shard_count)
        return ShardedCrowdtuneBot(settings, services, **kwargs)  # type: ignore[return-value]
    return CrowdtuneBot(settings, services, **kwargs)


async def run_bot(settings: BotSettings, *, sync: bool = False) -> None:
    """`crowdtune run`: the services, the bot, until it is stopped."""
    if settings.discord_token is None or not settings.discord_token.get_secret_value():
        raise UserFacingError("DISCORD_TOKEN is not set (see docs/discord-setup.md)")
    services = await Services.open(settings)
    try:
        # A Ray cluster that cannot be used is one line now, not a failed job later.
        info = await asyncio.to_thread(services.compute.check)
        log.info("model work runs on %s (%s)", info.backend, info.node)
        bot = create_bot(settings, services, sync_commands=sync)
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure as exc:
        raise UserFacingError("Discord rejected DISCORD_TOKEN: copy the token again from the "
                              "Bot page of the Developer Portal (docs/discord-setup.md)") from exc
    except discord.PrivilegedIntentsRequired as exc:
        raise UserFacingError("CROWDTUNE_MESSAGE_CONTENT=true needs the Message Content "
                              "intent: enable it on the Bot page of the Developer Portal, or "
                              "set it to false") from exc
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as exc:
        raise UserFacingError(f"cannot reach Discord ({exc}): check the network") from exc
    finally:
        await services.close()
