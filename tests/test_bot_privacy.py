"""Members' data through Discord: /forget-me with its confirm button, /my-data, and the
moderators' /uploads list and /uploads remove."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from bot.core.store import ModelVersionRow
from tests.bot_support import BotEnv, bot_env, content, ephemeral
from tests.fakediscord import FakeDiscord, expect_event
from tests.fakediscord.payloads import option, subcommand


async def seed_data(env: BotEnv, tmp_path: Path) -> int:
    """A track Alice and Carol voted on, and an upload of each; the track id."""
    emu, store = env.emu, env.services.store
    gid = str(emu.ids.guild)
    await store.record_model_version(ModelVersionRow(gid, "v0001", None, "x", "base", 0.0))
    track = await store.add_track(gid, "v0001", "generated", 20.0, seed=1)
    for member, stars, freq in ((emu.ids.alice, 5, 440), (emu.ids.carol, 3, 330)):
        await env.services.feedback.record_vote(track, member, stars)
        song = tmp_path / f"{member}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:duration=11", str(song)], check=True)
        await env.services.uploads.ingest(gid, member, song)
    return track


async def test_forget_me_asks_then_deletes(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        track = await seed_data(env, tmp_path)
        store = env.services.store

        async def forget_me() -> tuple[dict, int]:
            payload = await env.command("forget-me", user_id=emu.ids.carol)
            reply = await env.reply(payload)
            assert ephemeral(reply) and "cannot be undone" in content(reply)
            buttons = [c["custom_id"] for row in reply.body["data"]["components"]
                       for c in row["components"]]
            assert buttons == ["forget:confirm", "forget:cancel"]
            message_id = emu.interaction(payload["token"]).original_id
            assert message_id is not None
            return payload, message_id

        _, message_id = await forget_me()
        click = await emu.click(message_id, "forget:cancel", user_id=emu.ids.carol)
        assert content(await env.reply(click)) == "Nothing was deleted."
        assert len(await store.votes(track)) == 2

        _, message_id = await forget_me()
        (carols,) = [u for u in await store.uploads(str(emu.ids.guild))
                     if u.member_id == str(emu.ids.carol)]
        click = await emu.click(message_id, "forget:confirm", user_id=emu.ids.carol)
        answer = await env.reply(click)
        assert answer.body["type"] == 7  # the confirmation is replaced, buttons gone
        assert answer.body["data"]["components"] == []
        assert content(answer).startswith(
            "Done. Deleted 1 vote(s), 0 listening record(s) and 1 upload(s). None of it will "
            "be used again. Models already trained are not retrained.")
        assert [v.member_id for v in await store.votes(track)] == [str(emu.ids.alice)]
        assert [u.member_id for u in await store.uploads(str(emu.ids.guild))] == [
            str(emu.ids.alice)]
        assert not Path(carols.file).exists()


async def test_my_data_sends_a_private_file(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        await seed_data(env, tmp_path)
        payload = await env.command("my-data", user_id=emu.ids.carol)
        reply = await env.reply(payload, count=2)
        assert ephemeral(reply) and "3 rows" in content(reply)
        (file,) = reply.files
        rows = [json.loads(line) for line in file.data.decode().splitlines()]
        assert [r["kind"] for r in rows] == ["track", "vote", "upload"]
        assert {r["member_id"] for r in rows[1:]} == {str(emu.ids.carol)}

        payload = await env.command("my-data", user_id=emu.ids.bob)  # nothing stored
        reply = await env.reply(payload, count=2)
        assert content(reply).startswith("I hold no votes, listening or uploads of yours.")
        assert not reply.files


async def test_moderators_list_and_remove_uploads(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        await seed_data(env, tmp_path)
        first, second = await env.services.store.uploads(str(emu.ids.guild))
        await env.services.store.set_upload_tags(first.id, {"instrument": "strings",
                                                            "mode": "minor", "drums": "no"})

        async def ask(options: list, user_id: int) -> str:
            payload = await env.command("uploads", options, user_id=user_id)
            reply = await env.reply(payload)
            assert ephemeral(reply)
            return content(reply)

        listing = await ask([subcommand("list")], emu.ids.alice)  # alice moderates
        assert listing.splitlines()[:2] == [
            f"**#{second.id}** {second.original_name} (0:11) from <@{emu.ids.carol}>",
            f"**#{first.id}** {first.original_name} (0:11) from <@{emu.ids.alice}>, "
            "sounds like minor, strings, no drums"]  # what a round heard in it
        text = await ask([subcommand("remove", [option("upload", second.id)])],
                         emu.ids.carol)  # a member may not
        assert text.startswith("Only moderators can use this")
        text = await ask([subcommand("remove", [option("upload", second.id)])], emu.ids.alice)
        assert text.startswith(f"Removed upload #{second.id}")
        assert not Path(second.file).exists()
        text = await ask([subcommand("remove", [option("upload", second.id)])], emu.ids.alice)
        assert text == f"There is no upload #{second.id} in this server."


async def test_removal_from_a_guild_starts_its_retention(fake_discord: FakeDiscord,
                                                         tmp_path) -> None:
    emu = fake_discord
    gid = str(emu.ids.guild)
    async with bot_env(emu, tmp_path, base=False) as env:
        store = env.services.store
        assert (await store.discord_guilds())[gid] is None
        removed = await expect_event(env.bot, "guild_remove")
        await emu.dispatch("GUILD_DELETE", {"id": gid})
        await removed
        assert (await store.discord_guilds())[gid] is not None
        joined = await expect_event(env.bot, "guild_join")
        invite = emu.world.guild_create(emu.ids.guild, intents=env.bot.intents.value)
        invite.pop("unavailable", None)  # a join, not an outage ending
        await emu.dispatch("GUILD_CREATE", invite)
        await joined
        await asyncio.sleep(0.1)  # on_guild_join's setup runs after the event
        assert (await store.discord_guilds())[gid] is None
