"""Tags through generation: the worker, the track service's policy, the store and the
fine-tuning rows (the model itself is faked here; tests/test_cli.py runs the real one)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest

from bot.core.compute import LocalCompute
from bot.core.config import Settings
from bot.core.domain import Origin
from bot.core.rewards import RewardSettings
from bot.core.rounds import build_training_set
from bot.core.store import Store, Track, TrackFeedback, UploadRow, VoteRow
from bot.core.tracks import TrackService
from bot.core.worker import GenerationJob, GenerationResult, run_job
from model.registry import ModelRegistry
from model.tags import GUIDANCE, format_tags, parse, uniform
from tests.helpers import make_base, tiny_pipeline

SR = 1000


def job(model_dir: str = "unused", tags: tuple[str, ...] = ()) -> GenerationJob:
    return GenerationJob(model_dir=model_dir, seeds=(1, 2), seconds=0.5, steps=2, tags=tags)


def test_run_job_uses_tags_only_where_the_model_takes_them(tmp_path):
    asked = ("mode=minor,instrument=piano", "")
    tagged, plain = tmp_path / "tagged", tmp_path / "plain"
    tiny_pipeline().save_pretrained(tagged)
    tiny_pipeline(tags=False).save_pretrained(plain)  # like an imported checkpoint
    result = run_job(job(str(tagged), asked))
    assert result.tags == [{"instrument": "piano", "mode": "minor"}, {}]
    assert len(result.audios) == len(result.mels) == 2
    # The same seed under other tags is another track: the tags reached the model.
    other = run_job(job(str(tagged), ("mode=major,instrument=organ", "")))
    assert not np.array_equal(result.mels[0], other.mels[0])
    assert np.array_equal(result.mels[1], other.mels[1])
    assert run_job(job(str(plain), asked)).tags == [{}, {}]  # ignored, so not claimed
    # Per-track guidance reaches the model: the tagged track changes, the bare one cannot.
    closer = run_job(GenerationJob(model_dir=str(tagged), seeds=(1, 2), seconds=0.5, steps=2,
                                   tags=asked, guidance=(9.0, 9.0)))
    assert not np.array_equal(result.mels[0], closer.mels[0])
    assert np.array_equal(result.mels[1], closer.mels[1])


def test_a_job_has_one_tag_set_per_seed():
    with pytest.raises(ValueError, match="1 tag sets for 2 seeds"):
        job(tags=("mode=minor",))
    with pytest.raises(ValueError, match="3 guidance scales for 2 seeds"):
        GenerationJob(model_dir="x", seeds=(1, 2), seconds=1, steps=2, guidance=(3, 4, 5))


@dataclass
class RecordingWorker(LocalCompute):
    """Records jobs and answers as a tag-conditioned model would, without a model."""

    takes_tags: bool = True

    def __post_init__(self) -> None:
        super().__init__(threads=1)
        self.jobs: list[GenerationJob] = []

    async def generate(self, job: GenerationJob) -> GenerationResult:
        self.jobs.append(job)
        n = len(job.seeds)
        made_with = [parse(t) if self.takes_tags else {} for t in job.tags]
        return GenerationResult([np.zeros(8000, np.float32)] * n, 16000,
                                [np.zeros((1, 4, 4), np.float16)] * n, made_with)


@pytest.fixture()
async def service(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", track_seconds=0.5)
    make_base(settings.models_dir)
    worker = RecordingWorker()
    async with await Store.open(settings.db_path) as store:
        yield TrackService(settings, store, ModelRegistry(settings.models_dir), worker), worker


async def test_default_policy_is_uniform_per_seed_and_explicit_tags_go_to_every_track(service):
    tracks, worker = service
    made = await tracks.generate("g", 3, seed=10)
    expected = [uniform(random.Random(s)) for s in (10, 11, 12)]
    assert worker.jobs[-1].tags == tuple(format_tags(t) for t in expected)
    assert [t.tags for t in made] == expected
    stored = {t.id: t.tags for t in await tracks.store.tracks("g")}
    assert [stored[t.track_id] for t in made] == expected
    again = await tracks.generate("g", 1, seed=11)  # a seed reproduces its tags
    assert again[0].tags == expected[1]

    asked = {"mode": "minor", "instrument": "piano"}
    made = await tracks.generate("g", 2, seed=10, tags=asked)
    assert worker.jobs[-1].tags == ("instrument=piano,mode=minor",) * 2
    assert [t.tags for t in made] == [asked, asked]
    assert made[0].to_dict()["tags"] == {"instrument": "piano", "mode": "minor"}

    # Before any rating, at the default guidance.
    assert worker.jobs[-1].guidance == (GUIDANCE,) * 2 and made[0].guidance == GUIDANCE
    made = await tracks.generate("g", 1, tags={})  # explicitly nothing: unconditioned
    assert worker.jobs[-1].tags == ("",) and made[0].tags == {} and made[0].guidance is None
    assert (await tracks.store.get_track(made[0].track_id)).tags is None


async def test_baseline_tracks_use_the_uniform_policy_too(service):
    tracks, worker = service
    (track,) = await tracks.generate("g", 1, seed=5, origin=Origin.BASELINE)
    assert track.tags == uniform(random.Random(5)) and track.origin == Origin.BASELINE
    mix = await tracks.generate_mix("g", 4, seed=0, tags={"tempo": "slow"})
    assert [t.tags for t in mix] == [{"tempo": "slow"}] * 4
    assert {t.origin for t in mix} == {Origin.BASELINE, Origin.GENERATED}


async def test_a_model_without_tags_records_none(service):
    tracks, worker = service
    worker.takes_tags = False
    (track,) = await tracks.generate("g", 1, tags={"mode": "major"})
    assert worker.jobs[-1].tags == ("mode=major",)  # asked for...
    assert track.tags == {}  # ...but not made with
    assert (await tracks.store.get_track(track.track_id)).tags is None


def test_training_rows_carry_the_tags_a_track_was_made_with(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, round_top_fraction=1.0)
    made_with = {1: {"mode": "minor"}, 2: None}
    feedback = [
        TrackFeedback(track=Track(id=i, guild_id="g", model_version="v0001",
                                  origin="generated", file=f"/t/{i}.ogg", duration_s=20.0,
                                  seed=i, created_at=0.0, tags=made_with[i]),
                      votes=tuple(VoteRow(i, m, 5 - i, 0.0) for m in ("a", "b")),
                      listens=())
        for i in (1, 2)]
    upload = UploadRow(id=7, guild_id="g", member_id="m", sha256="x", file="/u/7.wav",
                       original_name="song.wav", format="wav", duration_s=20.0, created_at=0.0)
    items = build_training_set(feedback, [upload], settings, RewardSettings()).items
    assert {it.key: it.tags for it in items} == {"track:1": {"mode": "minor"},
                                                 "track:2": None, "upload:7": None}

