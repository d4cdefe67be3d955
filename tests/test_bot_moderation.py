"""Moderator commands end to end, and members without the permission refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot_support import BotEnv, bot_env, content, ephemeral
from tests.fakediscord import (
    FakeDiscord,
    channel_option,
    option,
    role_option,
    subcommand,
)
from tests.fakediscord import payloads as p
from tests.fakediscord.payloads import error

REFUSAL = ("Only moderators can use this: it needs the Manage Server permission or the "
           "moderator role set with /setup.")


async def ask(env: BotEnv, name: str, options: list | None = None, *, user_id: int,
              deferred: bool = False) -> str:
    """Run a command and return the member's (ephemeral) answer."""
    payload = await env.command(name, options, user_id=user_id)
    reply = await env.reply(payload, count=2 if deferred else 1)
    assert ephemeral(reply), content(reply)
    return content(reply)


COMMANDS = [
    ("setup", None), ("round", [subcommand("now")]), ("round", [subcommand("status")]),
    ("round", [subcommand("history")]), ("model", [subcommand("info")]),
    ("model", [subcommand("rollback")]), ("stats", None), ("schedule", [subcommand("show")]),
    ("schedule", [subcommand("set", [option("hour", 3)])]), ("sync", None),
]


@pytest.fixture
def dj_role(fake_discord: FakeDiscord) -> int:
    """A role without Manage Server, given to bob (before the bot connects)."""
    emu = fake_discord
    role = emu.world.add_role(emu.ids.guild, "DJ", permissions=p.EVERYONE_PERMISSIONS)
    emu.world.guilds[emu.ids.guild].members[emu.ids.bob]["roles"].append(str(role))
    return role


async def test_members_without_permission_are_refused(fake_discord: FakeDiscord, tmp_path,
                                                      dj_role: int) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path) as env:
        before = await env.services.configs.get(emu.ids.guild)
        for name, options in COMMANDS:
            assert await ask(env, name, options, user_id=emu.ids.carol) == REFUSAL, name
        # The DJ role is not the moderator role yet: bob is refused too.
        assert await ask(env, "stats", user_id=emu.ids.bob) == REFUSAL
        assert await env.services.configs.get(emu.ids.guild) == before
        assert env.bot.round_task(str(emu.ids.guild)) is None
        assert await env.services.store.rounds(str(emu.ids.guild)) == []
        assert len(emu.calls("PUT", r"/applications/\d+/guilds/\d+/commands")) == 1


async def test_every_moderator_command(fake_discord: FakeDiscord, tmp_path,
                                       dj_role: int) -> None:
    emu = fake_discord
    ids = emu.ids
    gid = str(ids.guild)
    async with bot_env(emu, tmp_path) as env:
        mod = ids.alice  # the Moderator role has Manage Server
        text = await ask(env, "setup", [
            channel_option("music_channel", ids.text_channel),
            channel_option("uploads_channel", ids.text_channel),
            channel_option("voice_channel", ids.voice_channel),
            role_option("moderator_role", dj_role)], user_id=mod)
        assert text.splitlines()[:5] == [
            "Saved.", f"Music channel: <#{ids.text_channel}>",
            f"Uploads channel: <#{ids.text_channel}>", f"Voice channel: <#{ids.voice_channel}>",
            f"Moderator role: <@&{dj_role}>"]
        cfg = await env.services.configs.get(gid)
        assert (cfg.voice_channel_id, cfg.moderator_role_id) == (ids.voice_channel, dj_role)
        # Now bob's DJ role makes him a moderator.
        assert (await ask(env, "stats", user_id=ids.bob, deferred=True)).startswith(
            "**Last 7 days**\nTracks: 0")

        text = await ask(env, "schedule", [subcommand("set", [
            option("day", "mon"), option("hour", 9), option("minute", 30),
            option("timezone", "Europe/Berlin"), option("posts_per_day", 2),
            option("generate_per_hour", 5)])], user_id=mod)
        assert text.splitlines()[0] == "Saved."
        assert "Weekly round: every Mon at 09:30 (Europe/Berlin); next <t:" in text
        assert "Scheduled posts: 2 a day at 09:00, 16:00 (Europe/Berlin)" in text
        assert text.endswith("/generate: 5 per member per hour")
        job = env.bot.scheduler.aps.get_job(f"round:{gid}")
        nxt = job.next_run_time
        assert (nxt.weekday(), nxt.hour, nxt.minute, str(nxt.tzinfo)) == (0, 9, 30,
                                                                          "Europe/Berlin")
        bad = await ask(env, "schedule", [subcommand("set", [option("timezone", "Mars/Base")])],
                        user_id=mod)
        assert bad == ("Unknown time zone 'Mars/Base': use a name like Europe/Berlin, "
                       "America/New_York or UTC.")
        assert (await ask(env, "schedule", [subcommand("set")], user_id=mod)).startswith(
            "Nothing to change")
        assert (await ask(env, "schedule", [subcommand("show")], user_id=mod)).startswith(
            "Weekly round: every Mon at 09:30 (Europe/Berlin)")

        status = await ask(env, "round", [subcommand("status")], user_id=mod)
        assert status.startswith("No round has run yet.\nNext round: <t:")

        # A round held open, to show a second one is refused while it runs.
        gate = asyncio.Event()
        real = env.services.rounds.run_round

        async def held(guild: str, progress=None):
            await gate.wait()
            return await real(guild, progress)

        env.services.rounds.run_round = held  # type: ignore[method-assign]
        started = await ask(env, "round", [subcommand("now")], user_id=mod)
        assert started == (f"Round started; its report will be posted in <#{ids.text_channel}>. "
                           "Follow it with /round status.")
        assert (await ask(env, "round", [subcommand("now")], user_id=mod)) == (
            "A round is already running; see /round status for its progress.")
        assert (await ask(env, "round", [subcommand("status")], user_id=mod)).startswith(
            "A round is running.")
        mark = emu.mark()
        gate.set()
        report = await emu.wait_for_call("POST", rf"/channels/{ids.text_channel}/messages",
                                         since=mark, timeout=20)
        assert report.json["content"].startswith("Round 1: skipped. not enough feedback yet")
        history = await ask(env, "round", [subcommand("history")], user_id=mod)
        assert history.startswith("**#1** <t:") and ": skipped - not enough feedback" in history

        info = await ask(env, "model", [subcommand("info")], user_id=mod)
        assert info.splitlines()[0] == "Active model: **v0001** (1 version(s))"
        refused = await ask(env, "model", [subcommand("rollback")], user_id=mod)
        assert refused == ("Cannot roll back: v0001 is the first version of guild "
                           f"{gid}; there is nothing to roll back to.")
        registry = env.services.registry
        v2 = registry.add_version(gid, registry.version_dir(gid, "v0001"), "v0001", "finetune")
        registry.promote(gid, v2.version)
        assert (await ask(env, "model", [subcommand("info")], user_id=mod)).splitlines()[0] == (
            "Active model: **v0002** (2 version(s))")
        rolled = await ask(env, "model", [subcommand("rollback")], user_id=mod)
        assert rolled == "**v0001** is active again; the next tracks come from it."
        assert registry.active_name(gid) == "v0001"
        pinned = await ask(env, "model", [subcommand("pin", [option("version", "v0002")])],
                           user_id=mod)
        assert pinned == "**v0002** is pinned: it is kept whatever rounds prune."
        info = await ask(env, "model", [subcommand("info")], user_id=mod)
        assert info.splitlines()[2].endswith("(kept: recent, pinned)")

        message = await env.bot.post_scheduled(gid)
        track = await env.services.store.track_by_message(str(message.id))
        await env.services.feedback.record_vote(track.id, ids.bob, 4)
        await env.services.feedback.record_vote(track.id, ids.carol, 5)
        payload = await env.command("stats", [option("days", 1)], user_id=mod)
        reply = await env.reply(payload, count=2)
        assert ephemeral(reply)
        [chart] = reply.files  # mean stars per round, the guild's model against the baseline
        assert chart.filename == "ratings.png" and chart.data.startswith(b"\x89PNG")
        stats = content(reply)
        assert stats.splitlines()[:5] == [
            "**Last 1 day**", "Tracks: 1 · votes: 2 from 2 member(s)",
            "Listeners: 0 · listening: 0.0 h", "Uploads: 0", "Top tracks:"]
        assert stats.splitlines()[5] == (
            f"1. Track #{track.id} (v0001): 4.50 stars from 2 vote(s) "
            f"https://discord.com/channels/{gid}/{ids.text_channel}/{message.id}")
        # What the server likes: the tag policy learnt from that rated track's tags.
        taste = stats.splitlines()[6:]
        assert taste[0] == ("What this server likes (from 1 rated tracks; share of new "
                            "tracks, 20% of each field picked at random to keep exploring):")
        assert [line.split(":")[0] for line in taste[1:6]] == [
            "instrument", "mode", "tempo", "drums", "style"]

        synced = await ask(env, "sync", user_id=mod, deferred=True)
        assert synced == f"Synced 12 commands to guild {gid}."


HOWTO = ("📥 Share a song for this server's model to learn from: mention <@{bot}> in a post "
         "with the audio file attached, or use /upload.")


async def test_setup_pins_how_to_share_songs_once_per_uploads_channel(
        fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    songs = emu.world.add_text_channel(ids.guild, "songs")
    locked = emu.world.add_text_channel(ids.guild, "locked")
    howto = HOWTO.format(bot=ids.bot)

    def posts(channel: int, since: int = 0) -> list[str]:
        return [c.json["content"] for c in emu.calls("POST", rf"/channels/{channel}/messages",
                                                      since=since)]

    async with bot_env(emu, tmp_path, base=False) as env:
        text = await ask(env, "setup", [channel_option("uploads_channel", songs)],
                         user_id=ids.alice)
        assert text.splitlines()[0] == "Saved." and "Warning" not in text
        [post] = emu.calls("POST", rf"/channels/{songs}/messages")
        assert post.json["content"] == howto
        assert post.json["allowed_mentions"]["parse"] == []  # the line pings nobody
        message_id = int(post.response["id"])
        await emu.wait_for_call("PUT", rf"/channels/{songs}/messages/pins/{message_id}")
        assert emu.message(message_id)["pinned"] is True
        cfg = await env.services.configs.get(ids.guild)
        assert (cfg.uploads_howto_channel_id, cfg.uploads_howto_message_id) == (songs,
                                                                                message_id)

        # Running /setup again (or setting the same channel) posts nothing more.
        mark = emu.mark()
        assert (await ask(env, "setup", user_id=ids.alice)).startswith("Current setup:")
        await ask(env, "setup", [channel_option("uploads_channel", songs)], user_id=ids.alice)
        assert posts(songs, mark) == [] and emu.calls("PUT", r".*/pins/.*", since=mark) == []

        # Best effort: no permission to pin -> posted, a warning, and not posted again.
        emu.respond("PUT", rf"/channels/{ids.text_channel}/messages/pins/\d+", status=403,
                    body=error(50013, "Missing Permissions"))
        text = await ask(env, "setup", [channel_option("uploads_channel", ids.text_channel)],
                         user_id=ids.alice)
        assert text.splitlines()[0] == "Saved."
        assert text.splitlines()[-1] == (
            f"Warning: I posted how to share songs in <#{ids.text_channel}> but could not pin "
            "it (I need the Pin Messages permission); pin it yourself.")
        assert posts(ids.text_channel, mark) == [howto]
        await ask(env, "setup", user_id=ids.alice)
        assert posts(ids.text_channel, mark) == [howto]

        # No permission to post: a warning, nothing remembered, the next /setup tries again.
        mark = emu.mark()
        emu.respond("POST", rf"/channels/{locked}/messages", status=403,
                    body=error(50013, "Missing Permissions"))
        text = await ask(env, "setup", [channel_option("uploads_channel", locked)],
                         user_id=ids.alice)
        assert text.splitlines()[-1] == (
            f"Warning: I could not post how to share songs in <#{locked}> (I may not send "
            "messages there); I will try again at the next /setup.")
        assert (await env.services.configs.get(ids.guild)).uploads_howto_channel_id == \
            ids.text_channel
        assert "Warning" not in await ask(env, "setup", user_id=ids.alice)
        assert posts(locked, mark) == [howto, howto]  # refused, then posted
        await emu.wait_for_call("PUT", rf"/channels/{locked}/messages/pins/\d+", since=mark)


async def test_owner_syncs_commands_by_mention(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        mark = emu.mark()
        await emu.user_message(f"<@{emu.ids.bot}> sync", author_id=emu.ids.alice)
        reply = await emu.wait_for_call("POST", r"/channels/\d+/messages", since=mark)
        assert reply.json["content"] == "Only the bot's owner can do that."
        await emu.user_message(f"<@{emu.ids.bot}> sync", author_id=emu.ids.owner)
        reply = await emu.wait_for_call("POST", r"/channels/\d+/messages", since=mark, count=2)
        assert reply.json["content"] == f"Synced 12 commands to guild {emu.ids.guild}."
        assert len(emu.calls("PUT", r"/applications/\d+/guilds/\d+/commands")) == 2
        assert env.bot.get_cog("Admin") is not None
