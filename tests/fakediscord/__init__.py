r"""A local Discord API + gateway emulator that the real discord.py client connects to.

    async with FakeDiscord() as emu:
        with emu.redirect():  # discord.py now talks to 127.0.0.1
            bot = MyBot(intents=..., guild_ready_timeout=FAST_GUILD_READY_TIMEOUT)
            async with running(bot, emu):
                await emu.reaction_add(message_id, "1️⃣", user_id=emu.ids.alice)
                call = await emu.wait_for_call("PUT", r"/channels/\d+/messages/\d+/reactions/.+")

Tests usually take the ``fake_discord`` fixture from tests/conftest.py instead.
"""

from . import payloads
from .emulator import DEFAULT_TOKEN, FakeDiscord
from .harness import FAST_GUILD_READY_TIMEOUT, expect_event, running
from .patching import redirect_discord
from .payloads import (
    attachment_option,
    channel_option,
    option,
    role_option,
    subcommand,
    subcommand_group,
    user_option,
)
from .recorder import RecordedCall, RecordedFile
from .state import DefaultIds, InteractionState, World

__all__ = [
    "DEFAULT_TOKEN",
    "FAST_GUILD_READY_TIMEOUT",
    "DefaultIds",
    "FakeDiscord",
    "InteractionState",
    "RecordedCall",
    "RecordedFile",
    "World",
    "attachment_option",
    "channel_option",
    "expect_event",
    "option",
    "payloads",
    "redirect_discord",
    "role_option",
    "running",
    "subcommand",
    "subcommand_group",
    "user_option",
]
