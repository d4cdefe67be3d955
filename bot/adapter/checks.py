"""Who may run a command: reusable app-command checks, used as decorators (RoboDanny's
`utils/checks.py` pattern), so every command states its rule where it is declared.

    @app_commands.command()
    @checks.moderator_only()
    async def stats(self, interaction): ...

A failed check raises an `app_commands.CheckFailure` subclass; the tree's one error handler
(`CrowdtuneTree.on_error`) turns it into the member's one-line answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from bot.core.errors import UserFacingError
from bot.core.guild_config import GuildConfig

if TYPE_CHECKING:
    from bot.adapter.client import CrowdtuneBot

T = TypeVar("T")


class NotModerator(app_commands.CheckFailure):
    """The member lacks Manage Server and the guild's moderator role."""


class NotInRadioChannel(app_commands.CheckFailure, UserFacingError):
    """Only a moderator or a member listening in the radio's channel may change what it plays."""

    def __init__(self) -> None:
        super().__init__("Join the radio's voice channel to do that (or ask a moderator).")


def is_moderator(member: discord.Member | discord.User, permissions: discord.Permissions,
                 cfg: GuildConfig) -> bool:
    """Manage Server (from Discord's own resolution of the member's permissions in this
    interaction), or the moderator role the guild configured."""
    if permissions.manage_guild or permissions.administrator:
        return True
    roles = getattr(member, "roles", [])
    return cfg.moderator_role_id is not None and any(
        r.id == cfg.moderator_role_id for r in roles)


def _bot(interaction: discord.Interaction) -> CrowdtuneBot:
    return interaction.client  # type: ignore[return-value]


async def member_is_moderator(interaction: discord.Interaction) -> bool:
    """Whether the member running this interaction is one of the guild's moderators."""
    if interaction.guild is None:
        return False
    cfg = await _bot(interaction).services.configs.get(interaction.guild.id)
    return is_moderator(interaction.user, interaction.permissions, cfg)


def moderator_only() -> Callable[[T], T]:
    """Moderators only: Manage Server (or administrator), or the role set with /setup.

    The commands are also hidden from members by default (`default_permissions`), but a
    server can show them to anyone, so the rule is checked on every call.
    """

    return app_commands.check(require_moderator)


async def require_moderator(interaction: discord.Interaction) -> bool:
    if interaction.guild is None:
        raise app_commands.NoPrivateMessage()
    if not await member_is_moderator(interaction):
        raise NotModerator()
    return True


class ModeratorGroup(app_commands.Group):
    """A slash-command group for moderators: hidden from members by default, guild only, and
    every subcommand checked like `moderator_only` (the group's check runs first)."""

    def __init__(self, *, name: str, description: str) -> None:
        super().__init__(name=name, description=description, guild_only=True,
                         default_permissions=discord.Permissions(manage_guild=True))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await require_moderator(interaction)


def radio_listener_or_moderator() -> Callable[[T], T]:
    """Changing what the radio plays (stop, skip) is for the members listening in its voice
    channel, and for moderators. While the radio is off there is nothing to guard: the
    command answers that itself."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage()
        channel_id = _bot(interaction).radio.channel_of(interaction.guild.id)
        if channel_id is None:
            return True
        voice: Any = getattr(interaction.user, "voice", None)
        here = voice is not None and voice.channel is not None and \
            voice.channel.id == channel_id
        if not here and not await member_is_moderator(interaction):
            raise NotInRadioChannel()
        return True

    return app_commands.check(predicate)
