"""A full weekly cycle on a tiny model, with a controllable clock: tracks posted, members
vote and listen through the gateway, the bot is down when the round is due and runs it
once on its return, the report is posted, the next track comes from the new champion."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.core.compute import LocalCompute
from tests.bot_support import STARS, FakeClock, bot_env, react, voice, votes
from tests.fakediscord import FakeDiscord

pytestmark = pytest.mark.slow
# Sunday 12:00 UTC: the default weekly round is Sunday 18:00 UTC.
START = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
SETTINGS = {"track_seconds": 2.0, "finetune_steps": 8, "finetune_lr": 3e-3}


async def fire(env, job_id: str) -> None:
    """Make APScheduler run a job now (what its cron trigger does at the scheduled time)."""
    env.bot.scheduler.aps.get_job(job_id).modify(next_run_time=datetime.now(UTC))


async def test_weekly_cycle(fake_discord: FakeDiscord, tmp_path, monkeypatch) -> None:
    # Training and evaluation run for real (child processes); whether a random-weight tiny
    # model's candidate wins is the learning code's call, so its verdict is forced to
    # "promote" here: what is tested is what the bot does with a new champion.
    real_run_model = LocalCompute.run_model

    async def promoting(self, module: str, *args, **kwargs):
        result = await real_run_model(self, module, *args, **kwargs)
        if module == "model.evaluate":
            result = replace(result, promote=True, reason=f"(test) {result.reason}")
        return result

    monkeypatch.setattr(LocalCompute, "run_model", promoting)
    emu = fake_discord
    ids = emu.ids
    gid = str(ids.guild)
    clock = FakeClock(START)
    members = (ids.alice, ids.bob, ids.carol)
    posts = rf"/channels/{ids.text_channel}/messages"
    async with bot_env(emu, tmp_path, clock=clock, **SETTINGS) as env:
        # Tracks: the first by the cron job itself, three more as the day goes on.
        await fire(env, f"post:{gid}")
        await emu.wait_for_call("POST", posts, timeout=20)
        for _ in range(3):
            await env.bot.post_scheduled(gid)
        messages = [int(c.response["id"]) for c in emu.calls("POST", posts)]
        tracks = [(await env.services.store.track_by_message(str(m))).id for m in messages]
        assert len(tracks) == 4
        for i, message in enumerate(messages):
            await emu.wait_for_call("PUT", rf"/channels/\d+/messages/{message}/reactions/5️⃣/@me")
            for j, member in enumerate(members):
                await react(env, message, STARS[(i * 2 + j) % 5], member)
        cast = {t: await votes(env, t) for t in tracks}
        assert sum(map(len, cast.values())) == 12

        # Listening through the radio: alice hears the newest track for 1.5 s.
        await voice(env, ids.alice, ids.voice_channel)
        payload = await env.command("radio", [{"name": "start", "type": 1, "options": []}],
                                    user_id=ids.alice)
        await env.reply(payload, count=2)
        player = env.players.by_guild[ids.guild]
        await asyncio.wait_for(player.played.get(), 10)
        clock.advance(seconds=1.5)
        await env.bot.radio.stop(ids.guild)
        [heard] = await env.services.store.listen_totals([tracks[-1]])
        assert (int(heard.member_id), heard.listened_s) == (ids.alice, 1.5)
        assert await env.services.store.rounds(gid) == []  # not due yet

    clock.advance(days=1)  # the bot is down across Sunday 18:00
    async with bot_env(emu, tmp_path, clock=clock, **SETTINGS) as env:
        # A restart keeps every vote; the missed round runs once, on the bot's return.
        assert {t: await votes(env, t) for t in tracks} == cast
        report = await emu.wait_for_call(
            "POST", posts, where=lambda c: bool(c.files) and c.files[0].filename.endswith(
                ".png"), timeout=60)
        [chart] = report.files
        assert chart.filename == "round-1.png" and chart.data[:8] == b"\x89PNG\r\n\x1a\n"
        rated = sum(1 for v in cast.values() if v)
        assert report.body["content"].startswith(f"**Round 1** - 12 ratings on {rated} tracks\n")
        task = env.bot.round_task(gid)
        if task is not None:
            await task
        [row] = await env.services.store.rounds(gid)
        assert row.status == "succeeded" and row.candidate_version == "v0002", row.reason
        assert await env.bot.scheduler.run_due_round(gid) is False  # never twice
        assert row.promoted and env.services.registry.active_name(gid) == "v0002"
        assert "Model promoted (v0002 active): (test) distance to liked music" in \
            report.body["content"]

        # The next track comes from the champion and says so.
        message = await env.bot.post_scheduled(gid)
        call = emu.calls("POST", posts)[-1]
        fields = {f["name"]: f["value"] for f in call.body["embeds"][0]["fields"]}
        track = await env.services.store.track_by_message(str(message.id))
        assert track.origin == "generated"  # 3 of the first 4 were: the mix asks for one
        assert fields["Model"] == track.model_version == "v0002"

        # A week later the cron job fires (no new feedback: the round is skipped).
        clock.advance(days=7)
        mark = emu.mark()
        await fire(env, f"round:{gid}")
        second = await emu.wait_for_call("POST", posts, since=mark, timeout=30)
        assert "not enough feedback yet: 0 votes on 0 tracks" in second.body["content"]
        assert len(await env.services.store.rounds(gid)) == 2
