"""The reward model, the corpus pool and guided replay (how fine-tuning uses the ratings)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bot.core.audio import encode
from model.codec import MelCodec
from model.contracts import RatedFile
from model.corpus_pool import load_pool
from model.features import extract
from model.finetune import FinetuneSpec, draw_probs, replay_probs
from model.reward_model import RewardModel, reward_vector, window_vectors
from tests.helpers import TINY_MEL

SR = 16000


def test_reward_vector_leaves_out_chroma():
    f = extract(np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32) * 0.3, SR)
    assert len(reward_vector(f)) == len(f.vector()) - len(f.chroma)
    # Chroma, selected by name, changes nothing; every other field still counts.
    assert np.array_equal(reward_vector(replace(f, chroma=(1.0,) + (0.0,) * 11)),
                          reward_vector(f))
    assert not np.array_equal(reward_vector(replace(f, silence_frac=0.9)), reward_vector(f))
    assert not np.array_equal(reward_vector(replace(f, band_std_db=(9.0,) * 8)),
                              reward_vector(f))


def test_window_vectors_one_row_per_5s_window():
    audio = np.random.default_rng(0).standard_normal(SR * 12).astype(np.float32) * 0.1
    assert window_vectors(audio, SR).shape[0] == 2
    assert window_vectors(audio[: SR * 2], SR).shape[0] == 1  # a short clip is one window


def test_reward_model_learns_a_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 10))
    signal = 2 * x[:, 0] - x[:, 3] + 0.3 * rng.standard_normal(120)
    model = RewardModel.fit(x, signal)
    assert model.corr > 0.8
    assert np.corrcoef(model.predict(x), signal)[0, 1] > 0.9
    assert RewardModel.fit(x, rng.standard_normal(120)).corr < 0.4


def test_held_out_folds_keep_a_tracks_windows_together():
    # Each track's 4 windows are identical: split across folds they would leak its reward.
    rng = np.random.default_rng(1)
    tracks = rng.standard_normal((30, 6))
    rewards = rng.standard_normal(30)
    x, y = np.repeat(tracks, 4, axis=0), np.repeat(rewards, 4)
    groups = np.repeat(np.arange(30), 4)
    leaky = RewardModel.fit(x, y, alpha=0.01).corr
    honest = RewardModel.fit(x, y, alpha=0.01, groups=groups).corr
    assert leaky > honest + 0.3


def test_draw_probs_gives_each_group_its_share():
    a = torch.tensor([1.0, 3.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    c = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    p = draw_probs([(0.2, a), (0.1, b), (0.7, c)])
    assert torch.allclose(p, torch.tensor([0.05, 0.15, 0.1, 0.35, 0.35], dtype=torch.float64))
    empty = torch.zeros(5, dtype=torch.float64)
    p = draw_probs([(0.2, a), (0.1, empty), (0.7, c)])  # the empty share goes to the others
    assert torch.allclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert abs(float(p[:2].sum()) - 0.2 / 0.9) < 1e-9
    p = draw_probs([(0.0, a), (0.0, empty)])  # only zero-share groups: split evenly
    assert torch.allclose(p, a / a.sum())


def test_pool_is_cached_and_a_torn_cache_is_rebuilt(tmp_path):
    pool = load_pool(8, 3, TINY_MEL, tmp_path)
    (cached,) = tmp_path.glob("pool-scores-8-3-*.npz")
    again = load_pool(8, 3, TINY_MEL, tmp_path)
    assert torch.allclose(again.images, pool.images, atol=1e-2)  # stored as float16
    assert np.allclose(again.vectors, pool.vectors)
    cached.write_bytes(b"torn")
    rebuilt = load_pool(8, 3, TINY_MEL, tmp_path)
    assert np.allclose(rebuilt.vectors, pool.vectors)
    assert cached.stat().st_size > 1000


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return load_pool(48, 7, TINY_MEL, tmp_path_factory.mktemp("pool"))


def _rated(folder, reward_of, n: int = 32) -> list[RatedFile]:
    """Corpus clips of another seed, rated by `reward_of(reward_vector)`."""
    other = load_pool(n, 99, TINY_MEL)
    audio = MelCodec(TINY_MEL).decode(other.images).numpy()
    pairs = enumerate(zip(audio, other.vectors, strict=True))
    return [RatedFile(path=str(encode(a, SR, folder / f"t{i}.wav", "wav")),
                      reward=float(reward_of(v))) for i, (a, v) in pairs]


def test_replay_follows_the_reward_model(tmp_path, pool):
    # A community that rewards brightness: replay should favour the pool's bright clips.
    rated = _rated(tmp_path, lambda v: 3 * v[0])  # reward_vector starts with centroid / 1000
    spec = FinetuneSpec(parent_dir="", out_dir="", items=[], guide_top=0.25)
    probs, info = replay_probs(pool, rated, spec, SR)
    assert info.guided and info.reward_model_corr > 0.5
    chosen = (probs > 0).numpy()
    assert chosen.sum() == 12  # the best quarter of 48
    assert abs(float(probs.sum()) - 1.0) < 1e-9
    centroid = pool.vectors[:, 0]
    assert centroid[chosen].mean() > centroid[~chosen].mean() + 0.1


def test_replay_stays_uniform_when_the_reward_model_predicts_nothing(tmp_path, pool):
    rng = np.random.default_rng(1)
    rated = _rated(tmp_path, lambda _v: rng.standard_normal())
    spec = FinetuneSpec(parent_dir="", out_dir="", items=[], guide_min_corr=0.9)
    probs, info = replay_probs(pool, rated, spec, SR)
    assert not info.guided
    assert torch.allclose(probs, torch.full((48,), 1 / 48, dtype=torch.float64))


def test_reward_model_saves_and_loads_and_clips_to_the_rewards_seen(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 5))
    y = x[:, 0] + 0.1 * rng.standard_normal(60)
    model = RewardModel.fit(x, y)
    model.save(tmp_path / "rm.json")
    loaded = RewardModel.load(tmp_path / "rm.json")
    assert np.allclose(loaded.predict(x), model.predict(x)) and loaded.corr == model.corr
    far = np.zeros((1, 5))
    far[0, 0] = 100.0  # far outside the data: the prediction stops at the best reward seen
    assert loaded.predict(far)[0] == pytest.approx(y.max())
