"""The command tree's one error handler, end to end: commands Discord still lists but the bot
no longer has, and option values the bot cannot use."""

from __future__ import annotations

from tests.bot_support import BotEnv, bot_env, content, ephemeral
from tests.fakediscord import FakeDiscord, channel_option, subcommand
from tests.fakediscord import payloads as p


async def answer(env: BotEnv, name: str, options: list | None = None, *,
                 user_id: int | None = None) -> str:
    payload = await env.command(name, options, user_id=user_id)
    reply = await env.reply(payload)
    assert ephemeral(reply), content(reply)
    return content(reply)


async def test_a_command_the_bot_no_longer_has(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, base=False) as env:
        # Discord still lists a command from an older version of the bot (not re-synced).
        stale = {"name": "vote", "description": "gone", "type": 1, "options": [
            {"type": 1, "name": "now", "description": "gone"}]}
        emu.world.guild_commands[ids.guild].append(p.app_command(
            stale, command_id=emu.world.new_id(), app_id=ids.app, guild_id=ids.guild))
        assert await answer(env, "vote", [subcommand("now")]) == (
            "/vote is gone or not synced yet; try again in a minute (a moderator can run /sync "
            "to refresh the commands).")
        # A subcommand that is gone from a group the bot still has.
        assert await answer(env, "round", [subcommand("undo")], user_id=ids.alice) == (
            "/round undo is gone or not synced yet; try again in a minute (a moderator can "
            "run /sync to refresh the commands).")


async def test_an_option_value_the_bot_cannot_use(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, base=False) as env:
        before = await env.services.configs.get(ids.guild)
        # A voice channel where a text channel belongs (Discord's client filters channel
        # types, but an outdated command registration or another client may not).
        text = await answer(env, "setup", [
            channel_option("music_channel", ids.voice_channel)], user_id=ids.alice)
        assert text == (f"That value for music_channel (<#{ids.voice_channel}>) is not a text "
                        "channel; pick another one.")
        text = await answer(env, "setup", [
            channel_option("voice_channel", ids.text_channel)], user_id=ids.alice)
        assert text == (f"That value for voice_channel (<#{ids.text_channel}>) is not a voice "
                        "channel; pick another one.")
        assert await env.services.configs.get(ids.guild) == before

