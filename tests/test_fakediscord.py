"""The Discord emulator against the real discord.py client: login, REST, injected events."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import (
    FAST_GUILD_READY_TIMEOUT,
    FakeDiscord,
    attachment_option,
    expect_event,
    option,
    running,
    subcommand,
)
from tests.fakediscord.payloads import error

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(16))


def make_intents(*, message_content: bool = False) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.guild_reactions = True
    intents.voice_states = intents.members = True
    intents.message_content = message_content
    return intents


def make_client(**intent_flags: bool) -> discord.Client:
    return discord.Client(
        intents=make_intents(**intent_flags), guild_ready_timeout=FAST_GUILD_READY_TIMEOUT
    )

@asynccontextmanager
async def in_text_channel(emu: FakeDiscord) -> AsyncIterator[tuple[discord.Client,
                                                                   discord.TextChannel]]:
    """A connected client and the emulator's text channel."""
    client = make_client()
    async with running(client, emu):
        channel = client.get_channel(emu.ids.text_channel)
        assert isinstance(channel, discord.TextChannel)
        yield client, channel


async def test_client_logs_in_and_caches_the_guild(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client()
    async with running(client, emu):
        assert client.user is not None and client.user.id == emu.ids.bot
        assert client.application_id == emu.ids.app
        guild = client.get_guild(emu.ids.guild)
        assert guild is not None and not guild.unavailable
        assert isinstance(guild.get_channel(emu.ids.text_channel), discord.TextChannel)
        assert isinstance(guild.get_channel(emu.ids.voice_channel), discord.VoiceChannel)
        assert guild.me.guild_permissions.administrator
        # Without the presences intent GUILD_CREATE carries only the bot; chunking (op 8)
        # must have fetched everyone else.
        assert {m.name for m in guild.members} == {"crowdtune", "owner", "alice", "bob", "carol"}
        alice = guild.get_member(emu.ids.alice)
        assert alice is not None and [r.name for r in alice.roles] == ["@everyone", "Moderator"]
    identify = next(f for f in emu.gateway.received if f["op"] == 2)
    assert identify["d"]["token"] == emu.token
    assert identify["d"]["intents"] == make_intents().value
    assert any(f["op"] == 8 for f in emu.gateway.received)
    assert [c.path for c in emu.calls("GET")] == ["/users/@me", "/oauth2/applications/@me"]


async def test_bad_token_fails_login(fake_discord: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with running(make_client(), fake_discord, token="wrong"):
            pass
    assert fake_discord.calls("GET", "/users/@me")[0].status == 401


async def test_send_file_and_reaction_are_recorded(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    async with in_text_channel(emu) as (client, channel):
        echoed = await expect_event(client, "message")
        sent = await channel.send("Track #1", file=discord.File(io.BytesIO(WAV), "track-1.wav"))
        await sent.add_reaction("1️⃣")

        # Discord echoes the bot's own message on the gateway; bots must ignore it.
        assert (await echoed).id == sent.id
        post = await emu.wait_for_call("POST", rf"/channels/{emu.ids.text_channel}/messages")
        assert post.payload_json["content"] == "Track #1"
        assert post.payload_json["attachments"] == [{"id": 0, "filename": "track-1.wav"}]
        [upload] = post.files
        assert (upload.field, upload.filename, upload.data) == ("files[0]", "track-1.wav", WAV)
        put = await emu.wait_for_call("PUT", rf"/channels/\d+/messages/{sent.id}/reactions/1️⃣/@me")
        assert put.status == 204

        [attachment] = sent.attachments
        assert attachment.url.startswith(emu.base_url + "/cdn/attachments/")
        assert attachment.content_type == "audio/x-wav" and attachment.size == len(WAV)
        assert await attachment.read() == WAV
        assert emu.reaction_user_ids(sent.id, "1️⃣") == [emu.ids.bot]
        fetched = await channel.fetch_message(sent.id)
        assert [(str(r.emoji), r.count, r.me) for r in fetched.reactions] == [("1️⃣", 1, True)]


async def test_pin_and_unpin(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    async with in_text_channel(emu) as (client, channel):
        sent = await channel.send("How to share a song")
        pinned = await expect_event(client, "guild_channel_pins_update")
        await sent.pin(reason="how-to")
        where, last_pin = await pinned
        assert where.id == channel.id and last_pin is not None
        put = await emu.wait_for_call("PUT", rf"/channels/{channel.id}/messages/pins/{sent.id}")
        assert put.status == 204 and put.headers.get("X-Audit-Log-Reason") == "how-to"
        assert emu.message(sent.id)["pinned"] is True
        assert (await channel.fetch_message(sent.id)).pinned
        unpinned = await expect_event(client, "guild_channel_pins_update")
        await sent.unpin()
        assert (await unpinned)[1] is None  # no pins left
        assert emu.message(sent.id)["pinned"] is False
        with pytest.raises(discord.NotFound):
            await channel.get_partial_message(12345).pin()


async def test_injected_reactions_reach_raw_handlers(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    async with in_text_channel(emu) as (client, channel):
        posted = await channel.send("Rate this track")

        added = await expect_event(client, "raw_reaction_add")
        await emu.reaction_add(posted.id, "1️⃣", user_id=emu.ids.alice)
        event: discord.RawReactionActionEvent = await added
        assert str(event.emoji) == "1️⃣" and event.emoji.is_unicode_emoji()
        assert (event.user_id, event.message_id) == (emu.ids.alice, posted.id)
        assert (event.channel_id, event.guild_id) == (emu.ids.text_channel, emu.ids.guild)
        assert event.member is not None and event.member.name == "alice"
        assert event.message_author_id == emu.ids.bot

        # The emulator kept the reaction, so reconciliation through REST sees it.
        fetched = await channel.fetch_message(posted.id)
        [reaction] = fetched.reactions
        assert (reaction.count, reaction.me) == (1, False)
        assert [u.id async for u in reaction.users()] == [emu.ids.alice]

        removed = await expect_event(client, "raw_reaction_remove")
        await emu.reaction_remove(posted.id, "1️⃣", user_id=emu.ids.alice)
        gone: discord.RawReactionActionEvent = await removed
        assert (str(gone.emoji), gone.user_id) == ("1️⃣", emu.ids.alice)
        assert emu.reaction_user_ids(posted.id, "1️⃣") == []


async def test_voice_state_updates_give_before_and_after(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client()
    voice, lounge = emu.ids.voice_channel, emu.ids.other_voice_channel

    async def step(channel_id: int | None, **flags: bool) -> tuple[discord.VoiceState, ...]:
        waiter = await expect_event(client, "voice_state_update")
        await emu.voice_update(emu.ids.bob, channel_id, **flags)
        member, before, after = await waiter
        assert member.id == emu.ids.bob
        return before, after

    def channel_id(state: discord.VoiceState) -> int | None:
        return state.channel.id if state.channel else None

    async with running(client, emu):
        before, after = await step(voice)
        assert (channel_id(before), channel_id(after)) == (None, voice)
        before, after = await step(voice, self_deaf=True)
        assert (channel_id(before), channel_id(after)) == (voice, voice)
        assert (before.self_deaf, after.self_deaf) == (False, True)
        before, after = await step(lounge, self_deaf=True)
        assert (channel_id(before), channel_id(after)) == (voice, lounge)
        guild = client.get_guild(emu.ids.guild)
        assert guild is not None
        assert [m.id for m in guild.get_channel(lounge).members] == [emu.ids.bob]  # type: ignore[union-attr]
        before, after = await step(None)
        assert (channel_id(before), channel_id(after)) == (lounge, None)

        # The bot's own op 4 is reflected back as its voice state, as Discord does.
        bot_moved = await expect_event(
            client, "voice_state_update", check=lambda m, b, a: m.id == emu.ids.bot
        )
        await guild.change_voice_state(channel=guild.get_channel(voice), self_deaf=True)
        _, _, after = await bot_moved
        assert channel_id(after) == voice and after.self_deaf
    assert emu.ids.bob not in emu.world.guilds[emu.ids.guild].voice_states
    assert any(f["op"] == 4 for f in emu.gateway.received)


async def test_slash_commands_respond_defer_and_follow_up(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    bot = commands.Bot(
        command_prefix="!", intents=make_intents(), guild_ready_timeout=FAST_GUILD_READY_TIMEOUT
    )
    guild = discord.Object(emu.ids.guild)

    @bot.tree.command(name="ping", description="Replies privately", guild=guild)
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong", ephemeral=True)

    track = app_commands.Group(name="track", description="Tracks")

    @track.command(name="upload", description="Share a song")
    async def upload(
        interaction: discord.Interaction, song: discord.Attachment, title: str
    ) -> None:
        await interaction.response.defer(thinking=True)
        data = await song.read()
        await interaction.followup.send(f"{title}: {len(data)} bytes from {song.filename}")

    bot.tree.add_command(track, guild=guild)
    async with running(bot, emu):
        synced = await bot.tree.sync(guild=guild)
        assert sorted(c.name for c in synced) == ["ping", "track"]
        put = emu.calls("PUT", rf"/applications/{emu.ids.app}/guilds/{emu.ids.guild}/commands")
        [track_body] = [c for c in put[0].json if c["name"] == "track"]
        assert track_body["options"][0]["options"][0] == {
            **track_body["options"][0]["options"][0],
            "name": "song",
            "type": 11,
        }

        ping_payload = await emu.slash_command("ping", user_id=emu.ids.alice)
        token = re.escape(ping_payload["token"])
        reply = await emu.wait_for_call(
            "POST", rf"/interactions/{ping_payload['id']}/{token}/callback"
        )
        assert reply.json["type"] == 4
        assert reply.json["data"]["content"] == "pong" and reply.json["data"]["flags"] == 64
        ping_state = emu.interaction(ping_payload["token"])
        assert ping_state.original_id in ping_state.ephemeral  # never posted in the channel
        assert emu.channel_messages() == []

        song = emu.add_attachment(WAV, "demo.wav")
        options = [subcommand("upload", [attachment_option("song", song), option("title", "Demo")])]
        upload_payload = await emu.slash_command("track", options, user_id=emu.ids.bob)
        assert upload_payload["data"]["resolved"]["attachments"][song["id"]] == song
        token = re.escape(upload_payload["token"])
        followup = await emu.wait_for_call("POST", rf"/webhooks/{emu.ids.app}/{token}")
        defer = emu.calls("POST", rf"/interactions/\d+/{token}/callback")[0]
        assert defer.json["type"] == 5 and defer.index < followup.index
        assert followup.body["content"] == f"Demo: {len(WAV)} bytes from demo.wav"

        # The first follow-up after a "thinking" defer becomes the original response.
        state = emu.interaction(upload_payload["token"])
        assert state.original_id is not None and not state.original_loading
        [posted] = emu.channel_messages()
        assert int(posted["id"]) == state.original_id
        assert posted["content"] == followup.body["content"] and posted["flags"] == 0
        assert posted["interaction_metadata"]["user"]["id"] == str(emu.ids.bob)


async def test_late_interaction_response_is_rejected(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    emu.interaction_deadline = 0.0  # as if the bot took longer than Discord's 3 s
    client = make_client()
    tree = app_commands.CommandTree(client)
    guild = discord.Object(emu.ids.guild)
    failures: list[app_commands.AppCommandError] = []

    @tree.command(name="slow", description="Answers too late", guild=guild)
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("too late")

    @tree.error
    async def on_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        failures.append(error)

    async with running(client, emu):
        await tree.sync(guild=guild)
        payload = await emu.slash_command("slow")
        call = await emu.wait_for_call("POST", rf"/interactions/{payload['id']}/.+/callback")
        assert (call.status, call.response["code"]) == (404, 10062)
    assert isinstance(failures[0].__cause__, discord.NotFound)


async def test_auto_sharded_client_connects(fake_discord: FakeDiscord) -> None:
    client = discord.AutoShardedClient(
        intents=make_intents(), guild_ready_timeout=FAST_GUILD_READY_TIMEOUT
    )
    async with running(client, fake_discord):
        assert client.shard_count == 1
        assert client.get_guild(fake_discord.ids.guild) is not None
    assert fake_discord.calls("GET", "/gateway/bot")


async def test_user_message_attachment_downloads_from_cdn(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client(message_content=True)
    async with running(client, emu):
        song = emu.add_attachment(b"ID3" + bytes(64), "upload.mp3", content_type="audio/mpeg")
        received = await expect_event(client, "message")
        await emu.user_message("my song", author_id=emu.ids.carol, attachments=[song])
        message: discord.Message = await received
        assert message.author.id == emu.ids.carol and message.content == "my song"
        [attachment] = message.attachments
        assert (attachment.filename, attachment.content_type) == ("upload.mp3", "audio/mpeg")
        assert await attachment.read() == b"ID3" + bytes(64)
    async with aiohttp.ClientSession() as http, http.get(song["url"]) as response:
        assert response.headers["Content-Type"] == "audio/mpeg"


async def test_message_content_needs_its_intent(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client(message_content=False)
    async with running(client, emu):
        song = emu.add_attachment(WAV, "hidden.wav")
        received = await expect_event(client, "message")
        await emu.user_message("secret", author_id=emu.ids.carol, attachments=[song])
        message: discord.Message = await received
        assert (message.content, message.attachments) == ("", [])


async def test_missing_routes_and_canned_errors(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client()
    async with running(client, emu):
        route = discord.http.Route("GET", "/guilds/{guild_id}/emojis", guild_id=emu.ids.guild)
        with pytest.raises(discord.NotFound):
            await client.http.request(route)
        assert emu.calls("GET", r"/guilds/\d+/emojis")[0].status == 404

        channel = client.get_channel(emu.ids.text_channel)
        assert isinstance(channel, discord.TextChannel)
        posted = await channel.send("no reactions allowed")
        emu.respond("PUT", r".*/reactions/.*", status=403, body=error(50013, "Missing Permissions"))
        with pytest.raises(discord.Forbidden) as caught:
            await posted.add_reaction("2️⃣")
        assert caught.value.code == 50013
        with pytest.raises(discord.HTTPException) as empty:
            await channel.send("")
        assert empty.value.code == 50006


async def test_reconnect_resumes_and_replays(fake_discord: FakeDiscord) -> None:
    emu = fake_discord
    client = make_client()
    async with running(client, emu):
        resumed = await expect_event(client, "resumed")
        await emu.request_reconnect()
        await resumed
        assert [f["op"] for f in emu.gateway.received].count(6) == 1
        waiter = await expect_event(client, "voice_state_update")
        await emu.voice_update(emu.ids.alice, emu.ids.voice_channel)
        member, _, after = await waiter
        assert member.id == emu.ids.alice and after.channel is not None
    assert len(emu.gateway.sessions) == 1


async def test_shutdown_leaves_nothing_behind() -> None:
    original = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with FakeDiscord() as emu:
        with emu.redirect():
            assert discord.http.Route.BASE == emu.api_base
            async with running(make_client(), emu):
                assert emu.gateway.live_sessions
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == original
    assert not emu.gateway.sockets and not emu.rest.errors
    assert asyncio.all_tasks() == {asyncio.current_task()}
