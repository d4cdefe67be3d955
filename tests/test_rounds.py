"""The weekly round end to end on a tiny model: real child processes, real SQLite."""

import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from bot.core.audio import encode
from bot.core.compute import LocalCompute
from bot.core.config import Settings
from bot.core.feedback import FeedbackService
from bot.core.rounds import GuildLock, RoundBusy, RoundService
from bot.core.store import Store
from bot.core.tracks import TrackService
from model.contracts import DataEvent, StartedEvent, StepEvent, TrainResult, Verdict
from model.lora import is_adapter
from model.registry import ModelRegistry
from tests.helpers import make_base

pytestmark = pytest.mark.slow
GUILD = "g"


@pytest.fixture()
async def env(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", track_seconds=1.0, sampler_steps=3,
                        finetune_steps=4, finetune_batch_size=4, eval_clips=4,
                        torch_threads=1, round_min_votes=20, round_min_rated_tracks=8)
    make_base(settings.models_dir)
    registry = ModelRegistry(settings.models_dir)
    worker = LocalCompute(threads=1)
    async with await Store.open(settings.db_path) as store:
        tracks = TrackService(settings, store, registry, worker)
        yield settings, store, registry, tracks, RoundService(settings, store, registry)
    worker.close()


async def rate(store, tracks, n_tracks: int, members: int, seed: int = 0):
    made = await tracks.generate(GUILD, n_tracks, seed=seed)
    fb = FeedbackService(store)
    for i, t in enumerate(made):
        for m in range(members):
            await fb.record_vote(t.track_id, f"m{m}", 1 + (i + m) % 5)
            await fb.record_listen(t.track_id, f"m{m}", 1000.0 + i, 0.0, t.duration_s * 0.8,
                                   True)
    return made


async def test_too_little_feedback_skips_and_changes_nothing(env):
    settings, store, registry, tracks, rounds = env
    await rate(store, tracks, 3, 2)
    summary = await rounds.run_round(GUILD)
    assert summary.status == "skipped"
    assert "not enough feedback yet: 6 votes on 3 tracks" in summary.reason
    assert [v.version for v in registry.versions(GUILD)] == ["v0001"]
    assert (await store.rounds(GUILD))[0].status == "skipped"


async def test_round_trains_evaluates_and_records(env):
    settings, store, registry, tracks, rounds = env
    await rate(store, tracks, 10, 3)
    events = []
    summary = await rounds.run_round(GUILD, events.append)
    assert summary.status == "succeeded", summary.reason
    assert summary.candidate_version == "v0002"
    assert summary.counts["votes"] == 30 and summary.counts["rated_tracks"] == 10
    assert summary.counts["pairs"] > 0
    assert registry.active_name(GUILD) == ("v0002" if summary.promoted else "v0001")
    assert registry.info(GUILD, "v0002").parent == "v0001"
    # Typed in the summary, JSON in the database and in `round run --json`.
    assert summary.metrics is not None and summary.metrics.eval.promote == summary.promoted
    assert summary.metrics.eval.metrics.clips == 4 and summary.metrics.train.windows > 0
    stored = (await store.get_round(summary.round_id)).metrics
    assert set(stored) == {"train", "eval", "seconds"}
    assert stored["eval"]["metrics"]["clips"] == 4
    assert summary.to_dict()["metrics"]["train"]["windows"] == summary.metrics.train.windows
    json.dumps(summary.to_dict())  # `crowdtune round run --json` prints it
    assert isinstance(events[0], StartedEvent) and events[0].module == "model.finetune"
    assert [e.step for e in events if isinstance(e, StepEvent)] == [4]
    assert isinstance(next(e for e in events if isinstance(e, DataEvent)), DataEvent)
    assert sum(isinstance(e, TrainResult) for e in events) == 1
    assert isinstance(events[-1], Verdict)
    row = (await store.rounds(GUILD))[0]
    assert row.status == "succeeded" and row.candidate_version == "v0002"
    assert summary.chart and os.path.getsize(summary.chart) > 1000
    assert "Round" in summary.text
    assert not (settings.work_dir / f"round-{row.id}").exists()  # scratch space cleaned


async def test_killed_child_fails_the_round_and_the_next_one_works(env):
    settings, store, registry, tracks, rounds = env
    await rate(store, tracks, 10, 3)

    def kill_on_data(event):
        if isinstance(event, DataEvent):  # the child is about to train
            os.kill(kill_on_data.pid, signal.SIGKILL)
        if isinstance(event, StartedEvent):
            kill_on_data.pid = event.pid

    summary = await rounds.run_round(GUILD, kill_on_data)
    assert summary.status == "failed"
    assert "killed by signal 9" in summary.reason
    assert registry.active_name(GUILD) == "v0001"
    assert [v.version for v in registry.versions(GUILD)] == ["v0001"]
    assert registry.verify(GUILD, "v0001") is None
    assert (await store.rounds(GUILD))[0].status == "failed"
    again = await rounds.run_round(GUILD)
    assert again.status == "succeeded" and again.candidate_version == "v0002"


async def test_two_rounds_never_run_at_once_and_stale_rows_are_closed(env):
    settings, store, registry, tracks, rounds = env
    lock = GuildLock(settings.data_dir / "locks" / f"round-{GUILD}.lock")
    assert lock.acquire()
    with pytest.raises(RoundBusy):
        await rounds.run_round(GUILD)
    lock.release()
    # A process that died mid-round left its row 'running'; the next round closes it.
    await store.ensure_guild(GUILD)
    stale = await store.start_round(GUILD, parent_version="v0001")
    await rounds.run_round(GUILD)
    assert (await store.get_round(stale.id)).status == "failed"


async def champion_beside_baseline(registry, tracks, n: int):
    """v0002 (a copy of v0001) promoted; n tracks from it and n baseline tracks."""
    registry.ensure_guild(GUILD)
    v2 = registry.add_version(GUILD, registry.version_dir(GUILD, "v0001"), "v0001", "finetune")
    registry.promote(GUILD, v2.version)
    return (await tracks.generate(GUILD, n, seed=1),
            await tracks.generate(GUILD, n, seed=2, origin="baseline"))


async def test_champion_rated_significantly_worse_is_rolled_back(env):
    settings, store, registry, tracks, rounds = env
    new, base = await champion_beside_baseline(registry, tracks, 6)
    assert {t.model_version for t in new} == {"v0002"}
    assert {t.model_version for t in base} == {"v0001"}
    fb = FeedbackService(store)
    for m in range(3):
        for t in new:
            await fb.record_vote(t.track_id, f"m{m}", 1 + (t.track_id + m) % 2)  # 1-2 stars
        for t in base:
            await fb.record_vote(t.track_id, f"m{m}", 4 + (t.track_id + m) % 2)  # 4-5 stars
    summary = await rounds.run_round(GUILD)
    assert summary.rolled_back and "v0002 -> v0001" in summary.rolled_back
    assert registry.active_name(GUILD) == "v0001" or summary.promoted


async def test_a_few_unlucky_tracks_with_many_votes_do_not_roll_back(env):
    settings, store, registry, tracks, rounds = env
    new, base = await champion_beside_baseline(registry, tracks, 3)
    fb = FeedbackService(store)
    # 40 votes a side, so a test over votes would call it (p ~ 1e-15); two rated tracks a
    # side cannot tell a worse model from two unlucky draws.
    for m in range(20):
        for t in new[:2]:
            await fb.record_vote(t.track_id, f"m{m}", 1)
        for t in base[:2]:
            await fb.record_vote(t.track_id, f"m{m}", 5)
    summary = await rounds.run_round(GUILD)
    assert not summary.rolled_back
    assert registry.active_name(GUILD) == "v0002" or summary.promoted


async def test_the_reward_model_learns_from_past_rounds_ratings_too(env):
    settings, store, registry, tracks, rounds = env
    await rate(store, tracks, 10, 3)
    first = await rounds.run_round(GUILD)
    assert first.status == "succeeded", first.reason
    assert first.counts["rated_tracks"] == first.counts["reward_model_tracks"] == 10
    await rate(store, tracks, 8, 3, seed=100)
    second = await rounds.run_round(GUILD)
    assert second.status == "succeeded", second.reason
    # trained on the week's tracks; the reward model saw both weeks' ratings
    assert second.counts["rated_tracks"] == 8 and second.counts["reward_model_tracks"] == 18

    window_only = RoundService(settings.model_copy(update={"reward_history_days": 0}), store,
                               registry)
    since = (await store.rounds(GUILD))[0].started_at
    window = await store.track_feedback(GUILD, since=since)
    assert await window_only._history(GUILD, since, window) is window
    assert len(await rounds._history(GUILD, since, window)) == 18


async def test_adapter_rounds_promote_generate_and_train_on(env):
    """With LoRA on, a promoted adapter version serves tracks and parents the next round."""
    settings, store, registry, tracks, _ = env
    rounds = RoundService(settings.model_copy(update={"finetune_lora_rank": 2}), store,
                          registry)
    await rate(store, tracks, 10, 3)
    first = await rounds.run_round(GUILD)
    assert first.status == "succeeded", first.reason
    if not first.promoted:
        registry.promote(GUILD, first.candidate_version)
    made = await rate(store, tracks, 8, 3, seed=100)  # generated by the adapter version
    assert {t.model_version for t in made} == {first.candidate_version}
    second = await rounds.run_round(GUILD)
    assert second.status == "succeeded", second.reason
    assert registry.info(GUILD, second.candidate_version).parent == first.candidate_version
    assert is_adapter(registry.version_dir(GUILD, second.candidate_version))


async def test_library_songs_join_the_replay_and_corpus_replay_can_be_off(env, tmp_path):
    settings, store, registry, tracks, _ = env
    lib = tmp_path / "library"
    lib.mkdir()
    for i in range(2):
        t = np.arange(12 * 16000) / 16000
        encode((0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), 16000,
               lib / f"song{i}.ogg", "ogg")
    (lib / "broken.mp3").write_text("no audio")
    rounds = RoundService(settings.model_copy(update={"library_dir": lib,
                                                      "corpus_replay": "never"}),
                          store, registry)
    await rate(store, tracks, 10, 3)
    events = []
    summary = await rounds.run_round(GUILD, events.append)
    assert summary.status == "succeeded", summary.reason
    assert summary.counts["library"] == 2
    data = next(e for e in events if isinstance(e, DataEvent))
    assert data.replay == 0  # no starter corpus
    # The kept rated tracks' windows, and 4 windows (the most per item) of each song.
    assert data.windows >= summary.counts["train_tracks"] + 2 * 4


async def test_what_a_round_heard_in_the_uploads_is_kept_with_them(env, tmp_path):
    """The fine-tune reports the tags it heard in each upload (model/finetune.py; the tiny
    base's codec is not the tagger's, so the report is filled in here); the round keeps
    them on the uploads, for the guild's tag policy, and out of its own record."""
    settings, store, registry, tracks, rounds = env
    song = tmp_path / "song.ogg"
    t = np.arange(8 * 16000) / 16000
    encode((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, song, "ogg")
    upload, _ = await store.add_upload(GUILD, "m0", "abc", str(song), "song.ogg", "ogg", 8.0)
    await rate(store, tracks, 10, 3)
    heard = {"instrument": "strings", "mode": "minor", "tempo": "slow", "drums": "no",
             "style": "folk"}
    run_model = rounds.compute.run_model

    async def hearing(module, *args, **kwargs):
        result = await run_model(module, *args, **kwargs)
        if isinstance(result, TrainResult):
            assert f"upload:{upload.id}" not in result.heard  # the tiny codec: not heard
            result = dataclasses.replace(result, heard={f"upload:{upload.id}": heard})
        return result

    rounds.compute.run_model = hearing
    summary = await rounds.run_round(GUILD)
    assert summary.status == "succeeded", summary.reason
    assert [u.tags for u in await store.uploads(GUILD)] == [heard]
    assert summary.metrics.train.heard == {}
    policy = await tracks.tag_policy(GUILD)
    assert policy.uploads == 1 and policy.rated == 10


async def test_rounds_due_together_wait_their_turn(tmp_path):
    import asyncio

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", round_concurrency=1)  # type: ignore[call-arg]
    make_base(settings.models_dir)
    async with await Store.open(settings.db_path) as store:
        rounds = RoundService(settings, store, ModelRegistry(settings.models_dir))
        gate, order = asyncio.Event(), []
        real = rounds._run_locked

        async def held(guild, progress):
            order.append(guild)
            if guild == "a":
                await gate.wait()
            return await real(guild, progress)

        rounds._run_locked = held  # type: ignore[method-assign]
        first = asyncio.create_task(rounds.run_round("a"))
        while not order:
            await asyncio.sleep(0.01)
        later = [asyncio.create_task(rounds.run_round(g)) for g in ("b", "c")]
        await asyncio.sleep(0.2)
        assert order == ["a"]  # one slot: b and c wait, in order
        assert [(await rounds.state(g)).ahead for g in "abc"] == [None, 0, 1]
        where = (await rounds.state("a")).where
        assert where is not None and where.backend == "local"
        gate.set()
        done = await asyncio.gather(first, *later)
        assert order == ["a", "b", "c"]
        assert [s.status for s in done] == ["skipped"] * 3
        assert done[0].compute["backend"] == "local"
        assert (await rounds.state("b")).ahead is None
