"""The radio end to end: voice state updates through the gateway into listening seconds.

The emulator has no voice server, so audio goes to a fake player; the bot's own joining and
leaving still travel through the gateway as voice state updates, as on Discord.
"""

from __future__ import annotations

import asyncio

from tests.bot_support import bot_env, configure, content, ephemeral, totals, voice
from tests.fakediscord import FakeDiscord, expect_event


async def _radio_playing(env, listeners: list[int], *, starter: int) -> tuple[int, object]:
    """A posted track, `listeners` in the voice channel, the radio started by `starter`: the
    track's id and the player, once it plays."""
    ids = env.emu.ids
    message = await env.bot.post_scheduled(str(ids.guild))
    track = (await env.services.store.track_by_message(str(message.id))).id
    for member in listeners:
        await voice(env, member, ids.voice_channel)
    payload = await env.command("radio", [{"name": "start", "type": 1, "options": []}],
                                user_id=starter)
    await env.reply(payload, count=2)
    player = env.players.by_guild[ids.guild]
    await asyncio.wait_for(player.played.get(), 10)
    return track, player


async def test_listening_session_gives_the_right_seconds(fake_discord: FakeDiscord,
                                                         tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        await configure(env, voice_channel_id=ids.voice_channel)
        older = await env.bot.post_scheduled(str(ids.guild))
        newer = await env.bot.post_scheduled(str(ids.guild))
        track_a = (await env.services.store.track_by_message(str(older.id))).id
        track_b = (await env.services.store.track_by_message(str(newer.id))).id
        await voice(env, ids.alice, ids.voice_channel)
        await voice(env, ids.bob, ids.voice_channel, self_deaf=True)

        bot_joined = await expect_event(env.bot, "voice_state_update",
                                        check=lambda m, b, a: m.id == ids.bot)
        payload = await env.command("radio", [{"name": "start", "type": 1, "options": []}],
                                    user_id=ids.alice)
        answer = await env.reply(payload, count=2)
        assert content(answer) == (f"📻 Radio on in <#{ids.voice_channel}>: listening time "
                                   "counts as feedback (deafened does not).")
        _, _, after = await bot_joined
        assert after.channel.id == ids.voice_channel
        player = env.players.by_guild[ids.guild]
        path = await asyncio.wait_for(player.played.get(), 10)  # the newest track first
        assert path.endswith(f"track-{track_b:06d}.ogg")

        now = await env.command("radio", [{"name": "now", "type": 1, "options": []}])
        reply = await env.reply(now)
        assert ephemeral(reply) and content(reply).startswith(
            f"Now playing track #{track_b} (v0001), 0 s of 20 s, in <#{ids.voice_channel}> "
            "with 1 listener(s)")

        clock = env.clock
        clock.advance(seconds=5)
        await voice(env, ids.bob, ids.voice_channel)  # undeafens: listening from 5 s
        clock.advance(seconds=3)
        await voice(env, ids.alice, ids.voice_channel, self_deaf=True)  # 0-8 s
        clock.advance(seconds=2)
        await voice(env, ids.carol, ids.voice_channel)  # joins at 10 s
        clock.advance(seconds=2)
        await voice(env, ids.bob, ids.other_voice_channel)  # moves away: 5-12 s
        clock.advance(seconds=1)
        await voice(env, ids.alice, ids.voice_channel)  # undeafens at 13 s
        clock.advance(seconds=2)
        await voice(env, ids.carol, None)  # leaves: 10-15 s
        await voice(env, ids.bob, ids.other_voice_channel, self_mute=True)  # elsewhere: no-op
        assert await totals(env, track_b) == {ids.alice: (8.0, True), ids.bob: (7.0, False),
                                              ids.carol: (5.0, False)}

        clock.advance(seconds=3)
        player.finish()  # the track ends at 18 s: alice's open interval closes
        path = await asyncio.wait_for(player.played.get(), 10)
        assert path.endswith(f"track-{track_a:06d}.ogg")
        await env.bot.radio.flush()
        assert await totals(env, track_b) == {ids.alice: (13.0, True), ids.bob: (7.0, False),
                                              ids.carol: (5.0, False)}

        # The next track: only alice is there. Stopping the radio closes her interval.
        clock.advance(seconds=4)
        bot_left = await expect_event(env.bot, "voice_state_update",
                                      check=lambda m, b, a: m.id == ids.bot)
        stop = await env.command("radio", [{"name": "stop", "type": 1, "options": []}],
                                 user_id=ids.alice)
        assert content(await env.reply(stop)) == "Radio off."
        _, _, after = await bot_left
        assert after.channel is None
        assert await totals(env, track_a) == {ids.alice: (4.0, True)}


async def test_bot_leaving_and_restart_close_open_listening(fake_discord: FakeDiscord,
                                                            tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        await configure(env, voice_channel_id=ids.voice_channel)
        track, player = await _radio_playing(env, [ids.alice, ids.bob], starter=ids.bob)

        # Someone skips: the track ends for everyone at 3 s, the next one starts.
        env.clock.advance(seconds=3)
        skip = await env.command("radio", [{"name": "skip", "type": 1, "options": []}],
                                 user_id=ids.bob)
        assert content(await env.reply(skip)) == "Skipped."
        await asyncio.wait_for(player.played.get(), 10)
        await env.bot.radio.flush()
        assert await totals(env, track) == {ids.alice: (3.0, True), ids.bob: (3.0, True)}
        # Carol is not in the channel: she may not stop the radio.
        stop = await env.command("radio", [{"name": "stop", "type": 1, "options": []}],
                                 user_id=ids.carol)
        reply = await env.reply(stop)
        assert ephemeral(reply)
        assert content(reply) == ("Join the radio's voice channel to do that (or ask a "
                                  "moderator).")
        env.clock.advance(seconds=6)
    # The bot shut down mid-track (a restart): the open intervals closed at 6 s of the
    # replay (the same track again: the union is counted, so 6 s, not 3 + 6).
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        assert await totals(env, track) == {ids.alice: (6.0, True), ids.bob: (6.0, True)}


async def test_who_may_stop_or_skip_the_radio(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids

    async def radio(command: str, user_id: int) -> str:
        payload = await env.command("radio", [{"name": command, "type": 1, "options": []}],
                                    user_id=user_id)
        return content(await env.reply(payload))

    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        await configure(env, voice_channel_id=ids.voice_channel)
        # Off: nothing to guard, whoever asks hears so.
        assert await radio("stop", ids.carol) == "The radio is not on."
        assert await radio("skip", ids.carol) == "Nothing is playing."
        _, player = await _radio_playing(env, [ids.bob], starter=ids.bob)
        refused = "Join the radio's voice channel to do that (or ask a moderator)."
        assert await radio("skip", ids.carol) == refused  # not listening, not a moderator
        assert await radio("stop", ids.carol) == refused
        assert env.bot.radio.channel_of(ids.guild) == ids.voice_channel
        assert await radio("skip", ids.alice) == "Skipped."  # a moderator, from anywhere
        await asyncio.wait_for(player.played.get(), 10)
        assert await radio("stop", ids.bob) == "Radio off."  # a listener


async def test_bot_moved_or_disconnected_by_a_moderator(fake_discord: FakeDiscord,
                                                        tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        message = await env.bot.post_scheduled(str(ids.guild))
        track = (await env.services.store.track_by_message(str(message.id))).id
        await voice(env, ids.alice, ids.voice_channel)
        await voice(env, ids.bob, ids.other_voice_channel)
        # No voice channel set: the radio joins the caller's.
        payload = await env.command("radio", [{"name": "start", "type": 1, "options": []}],
                                    user_id=ids.alice)
        await env.reply(payload, count=2)
        player = env.players.by_guild[ids.guild]
        await asyncio.wait_for(player.played.get(), 10)

        env.clock.advance(seconds=2)  # a moderator drags the bot to bob's channel
        await voice(env, ids.bot, ids.other_voice_channel, self_deaf=True)
        assert env.bot.radio.channel_of(ids.guild) == ids.other_voice_channel
        env.clock.advance(seconds=3)  # and then disconnects it
        await voice(env, ids.bot, None)
        await env.bot.radio.flush()
        assert env.bot.radio.channel_of(ids.guild) is None
        assert await totals(env, track) == {ids.alice: (2.0, True), ids.bob: (3.0, False)}


async def _until(check, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_open_listening_is_saved_while_playing_and_survives_a_crash(
        fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        env.bot.radio.checkpoint_s = 0.05  # real seconds; 15 by default
        track, _ = await _radio_playing(env, [ids.alice, ids.bob], starter=ids.alice)

        env.clock.advance(seconds=7)  # both still listening: saved as they stand
        expected = {ids.alice: (7.0, True), ids.bob: (7.0, True)}
        await _until(lambda: _totals_are(env, track, expected))
        env.clock.advance(seconds=2)
        await voice(env, ids.bob, None)  # closes at 9 s: the saved interval is extended
        env.clock.advance(seconds=3)
        expected = {ids.alice: (12.0, True), ids.bob: (9.0, True)}
        await _until(lambda: _totals_are(env, track, expected))

        async def crash() -> None:  # no clean shutdown: open intervals are never closed
            for session in env.bot.radio.sessions.values():
                session.task.cancel()

        env.bot.radio.shutdown = crash
        env.bot.radio.checkpoint_s = 3600.0
        await asyncio.sleep(0.2)  # the save in flight ends; the next is an hour away
        env.clock.advance(seconds=5)  # listening after the last save is what a crash loses
    async with bot_env(emu, tmp_path, track_seconds=20.0) as env:
        assert await totals(env, track) == {ids.alice: (12.0, True), ids.bob: (9.0, True)}


async def _totals_are(env, track: int, expected: dict) -> bool:
    return await totals(env, track) == expected
