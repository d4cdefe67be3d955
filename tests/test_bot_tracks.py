"""Tracks end to end: /generate and scheduled posts through the emulator and discord.py."""

from __future__ import annotations

import re

import pytest

from bot.adapter.client import ShardedCrowdtuneBot, UserFacingError, make_intents, run_bot
from bot.cli import main
from bot.core.prompt import describe
from model.tags import VOCAB
from model.train import make_builtin_pipeline
from tests.bot_support import (
    STARS,
    bot_env,
    content,
    ephemeral,
    generated,
    react,
    tiny_settings,
)
from tests.fakediscord import FakeDiscord
from tests.fakediscord.patching import redirect_discord
from tests.fakediscord.payloads import option
from tests.helpers import TINY_MEL


async def test_bot_logs_in_with_its_intents_and_syncs_commands(fake_discord: FakeDiscord,
                                                               tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path) as env:
        identify = next(f for f in emu.gateway.received if f["op"] == 2)
        assert identify["d"]["intents"] == make_intents(env.bot.settings).value
        put = emu.calls("PUT", rf"/applications/{emu.ids.app}/guilds/{emu.ids.guild}/commands")
        assert len(put) == 1  # synced once, on request (sync_commands=True), to the guild
        names = {c["name"] for c in put[0].json}
        assert names == {"generate", "upload", "setup", "round", "model", "stats", "schedule",
                         "sync", "radio", "forget-me", "my-data", "uploads"}
        mod_only = {c["name"] for c in put[0].json if c.get("default_member_permissions")}
        assert mod_only == {"setup", "round", "model", "stats", "schedule", "sync", "uploads"}
        assert not emu.calls("PUT", rf"/applications/{emu.ids.app}/commands")  # not global


async def test_generate_posts_a_track_with_embed_attachment_and_vote_reactions(
        fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path) as env:
        payload = await env.command("generate", user_id=emu.ids.bob)
        defer = await env.reply(payload)
        assert defer.json["type"] == 5  # deferred at once, publicly ("thinking")
        follow = await env.reply(payload, count=2, timeout=30)
        [embed] = follow.body["embeds"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        track_id = int(re.fullmatch(r"Track #(\d+)", embed["title"]).group(1))
        assert fields == {"Model": "v0001", "Origin": "current model",
                          "Duration": fields["Duration"], "Tags": fields["Tags"]}
        assert re.fullmatch(r"1\.0 s", fields["Duration"])
        assert "content" not in follow.body or not follow.body["content"]  # nothing asked
        [audio] = follow.files
        assert audio.filename == f"crowdtune-{track_id}.ogg" and audio.data[:4] == b"OggS"

        # The follow-up became the interaction's message in the channel; the bot reacted.
        state = emu.interaction(payload["token"])
        message_id = state.original_id
        for emoji in STARS:
            await emu.wait_for_call(
                "PUT", rf"/channels/\d+/messages/{message_id}/reactions/{emoji}/@me")
        assert [r["emoji"]["name"] for r in emu.message(message_id)["reactions"]] == list(STARS)
        track = await env.services.store.get_track(track_id)
        assert track is not None and track.message_id == str(message_id)
        assert track.channel_id == str(emu.ids.text_channel)
        assert track.model_version == "v0001" and track.origin == "generated"
        # Nothing asked: the default policy, a value for every field, shown on the embed.
        assert track.tags is not None and set(track.tags) == set(VOCAB)
        assert fields["Tags"] == describe(track.tags)


async def test_generate_options_and_prompt_ask_for_tags(fake_discord: FakeDiscord,
                                                        tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path) as env:
        [command] = [c for c in emu.calls("PUT", r"/applications/\d+/guilds/\d+/commands")[0]
                     .json if c["name"] == "generate"]
        options = {o["name"]: o for o in command["options"]}
        assert list(options) == ["mood", "instrument", "tempo", "style", "drums", "prompt"]
        assert not any(o.get("required") for o in options.values())
        assert [c["value"] for c in options["instrument"]["choices"]] == list(
            VOCAB["instrument"])
        assert [(c["name"], c["value"]) for c in options["mood"]["choices"]] == [
            ("happy (major key)", "happy"), ("sad (minor key)", "sad")]

        payload = await env.command("generate", [
            option("prompt", "sad slow piano on a spaceship"), option("instrument", "organ")],
            user_id=emu.ids.bob)
        follow = await env.reply(payload, count=2, timeout=30)
        # The option wins over the prompt's word; the rest is echoed, and what was not used.
        assert content(follow) == ("Understood: minor, slow, organ; ignored: 'spaceship', "
                                   "'piano'")
        [embed] = follow.body["embeds"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Tags"] == "minor, slow, organ"
        track_id = int(re.fullmatch(r"Track #(\d+)", embed["title"]).group(1))
        track = await env.services.store.get_track(track_id)
        assert track.tags == {"instrument": "organ", "mode": "minor", "tempo": "slow"}

        payload = await env.command("generate", [option("mood", "happy"),
                                                 option("drums", "no")], user_id=emu.ids.bob)
        message_id = await generated(env, payload)
        assert content(await env.reply(payload, count=2)) == "Understood: major, no drums"
        track = await env.services.store.track_by_message(str(message_id))
        assert track.tags == {"mode": "major", "drums": "no"}


async def test_generate_with_a_model_that_takes_no_tags_says_so(fake_discord: FakeDiscord,
                                                                tmp_path) -> None:
    emu = fake_discord
    settings = tiny_settings(tmp_path, emu)
    make_builtin_pipeline(TINY_MEL, 0, tags=False, channels=(16, 32),
                          layers_per_block=1).save_pretrained(settings.models_dir / "base")
    async with bot_env(emu, tmp_path) as env:
        payload = await env.command("generate", [option("prompt", "fast")],
                                    user_id=emu.ids.bob)
        message_id = await generated(env, payload)
        follow = await env.reply(payload, count=2)
        assert content(follow) == ("Understood: fast (this server's model does not take tags, "
                                   "so they were not used)")
        [embed] = follow.body["embeds"]
        assert "Tags" not in {f["name"] for f in embed["fields"]}
        track = await env.services.store.track_by_message(str(message_id))
        assert track.tags is None


async def test_generate_is_rate_limited_per_member(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, generate_per_hour=2) as env:
        for _ in range(2):
            await generated(env, await env.command("generate", user_id=emu.ids.carol))
        refused = await env.command("generate", user_id=emu.ids.carol)
        reply = await env.reply(refused)
        assert reply.json["type"] == 4 and ephemeral(reply)
        assert content(reply) == "You can make 2 tracks an hour; try again in 60 minutes."
        # Another member is not affected; an hour later carol may again.
        other = await env.command("generate", user_id=emu.ids.bob)
        assert (await env.reply(other)).json["type"] == 5
        await generated(env, other)
        env.clock.advance(hours=1, seconds=1)
        again = await env.command("generate", user_id=emu.ids.carol)
        assert (await env.reply(again)).json["type"] == 5
        await generated(env, again)


async def test_generate_without_a_model_answers_privately(fake_discord: FakeDiscord,
                                                          tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        payload = await env.command("generate", user_id=emu.ids.bob)
        follow = await env.reply(payload, count=2)
        assert ephemeral(follow)
        assert "no base model yet: run `crowdtune pretrain` first" in content(follow)
        # The public "thinking" placeholder is gone: nothing is left in the channel.
        await emu.wait_for_call("DELETE", r"/webhooks/\d+/.+/messages/@original")
        assert emu.channel_messages() == []
        # A failure on our side does not use up the member's quota.
        assert not env.bot.generate_limiter._uses[(str(emu.ids.guild), emu.ids.bob)]


async def test_scheduled_post_goes_to_the_music_channel_in_the_mix(fake_discord: FakeDiscord,
                                                                   tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path) as env:
        job = env.bot.scheduler.aps.get_job(f"post:{emu.ids.guild}")
        assert job is not None and str(job.trigger.fields[5]) == "9,14,18"  # 3 a day
        origins = []
        for _ in range(4):
            message = await env.bot.post_scheduled(str(emu.ids.guild))
            assert message is not None and message.channel.id == emu.ids.text_channel
            track = await env.services.store.track_by_message(str(message.id))
            origins.append(track.origin)
            post = emu.calls("POST", rf"/channels/{emu.ids.text_channel}/messages")[-1]
            [audio] = post.files
            assert audio.filename == f"crowdtune-{track.id}.ogg"
            # Made with the default policy, whose tags the embed shows.
            [embed] = post.body["embeds"]
            assert track.tags is not None and set(track.tags) == set(VOCAB)
            assert {f["name"]: f["value"] for f in embed["fields"]}["Tags"] == describe(
                track.tags)
        # A quarter of the posts come from the baseline model (measured against).
        assert sorted(origins) == ["baseline", "generated", "generated", "generated"]
        await emu.wait_for_call("PUT", r"/channels/\d+/messages/\d+/reactions/5️⃣/@me", count=4)


async def test_auto_sharded_bot_when_configured(fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False, auto_shard=True) as env:
        assert isinstance(env.bot, ShardedCrowdtuneBot) and env.bot.shard_count == 1
        assert emu.calls("GET", "/gateway/bot")
        assert env.bot.get_cog("Ratings") is not None


async def test_two_shards_share_the_guilds_as_discord_routes_them(fake_discord: FakeDiscord,
                                                                   tmp_path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, auto_shard=True, shard_count=2) as env:
        assert env.bot.shard_count == 2
        shards = sorted(f["d"]["shard"] for f in emu.gateway.received if f.get("op") == 2)
        assert shards == [[0, 2], [1, 2]]
        guild = env.bot.get_guild(emu.ids.guild)
        assert guild is not None and guild.shard_id == (emu.ids.guild >> 22) % 2
        # A vote arrives on the guild's shard and is recorded.
        post = await env.bot.post_scheduled(str(emu.ids.guild))
        assert post is not None
        await react(env, post.id, STARS[3], emu.ids.alice)
        [vote] = await env.services.store.votes(await env.services.ratings.track_for(post.id))
        assert vote.stars == 4


def test_run_without_a_token_says_what_to_do(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(tmp_path), "run"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("crowdtune: error: DISCORD_TOKEN is not set (see "
                                       "docs/discord-setup.md)\n")
    assert not (tmp_path / "crowdtune.sqlite3").exists()  # nothing opened


async def test_run_with_a_wrong_token_says_so_in_one_line(fake_discord: FakeDiscord,
                                                          tmp_path) -> None:
    settings = tiny_settings(tmp_path, fake_discord, discord_token="not.the.token")
    with pytest.raises(UserFacingError) as failed:
        await run_bot(settings)
    assert str(failed.value) == ("Discord rejected DISCORD_TOKEN: copy the token again from the "
                                 "Bot page of the Developer Portal (docs/discord-setup.md)")


def test_run_when_discord_is_unreachable_says_so_in_one_line(tmp_path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "some.token")
    with redirect_discord("http://127.0.0.1:9/api/v10", "ws://127.0.0.1:9/"), \
            pytest.raises(SystemExit) as exited:  # nothing listens on port 9
        main(["--data-dir", str(tmp_path), "run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("crowdtune: error: cannot reach Discord (") and err.count("\n") == 1
    assert err.endswith("): check the network\n")
