"""The reward model, the corpus pool and guided replay (how fine-tuning uses the ratings)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bot.core.audio import encode
from model.codec import MelCodec, MelConfig
from model.contracts import ItemKind, RatedFile, TrainItem
from model.corpus_pool import load_pool
from model.features import extract
from model.finetune import (
    FinetuneSpec,
    draw_probs,
    fit_guide,
    heard_tags,
    heard_uploads,
    library_weights,
    load_listener,
    replay_probs,
)
from model.key_prior import KEY_FIELD, MODES, TONICS
from model.reward_model import TAG_COLUMNS, Heard, RewardModel, reward_vector
from model.tags import VOCAB
from model.train import make_builtin_pipeline
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


def _heard(spectral: np.ndarray, embedding: np.ndarray | None = None) -> Heard:
    n = len(spectral)
    emb = np.zeros((n, 3)) if embedding is None else embedding
    return Heard(emb, np.zeros((n, len(TAG_COLUMNS))), spectral)


def test_listener_reads_one_row_per_5s_window_and_known_tags_one_hot():
    listener = load_listener(None)
    audio = np.random.default_rng(0).standard_normal(SR * 12).astype(np.float32) * 0.1
    heard = listener.audio(audio)
    assert len(heard) == 2 and heard.embedding.shape == (2, 128)
    assert heard.tags.shape == (2, len(TAG_COLUMNS))
    assert heard.tags[0].sum() == pytest.approx(len(VOCAB))  # each field's probabilities
    assert len(listener.audio(audio[: SR * 2])) == 1  # a short clip is one window


def test_reward_model_learns_a_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 10))
    signal = 2 * x[:, 0] - x[:, 3] + 0.3 * rng.standard_normal(120)
    model = RewardModel.fit(_heard(x), signal, inputs="spectral")
    assert model.corr > 0.8
    assert np.corrcoef(model.predict(_heard(x)), signal)[0, 1] > 0.9
    assert RewardModel.fit(_heard(x), rng.standard_normal(120), inputs="spectral").corr < 0.4


def test_inputs_choose_the_blocks():
    rng = np.random.default_rng(3)
    spectral, embedding = rng.standard_normal((150, 6)), rng.standard_normal((150, 8))
    heard = _heard(spectral, embedding)
    in_embedding = embedding[:, 2] + 0.2 * rng.standard_normal(150)
    assert RewardModel.fit(heard, in_embedding, inputs="embedding").corr > 0.8
    assert RewardModel.fit(heard, in_embedding, inputs="spectral").corr < 0.4
    assert RewardModel.fit(heard, in_embedding, inputs="both").corr > 0.8
    with pytest.raises(ValueError, match="unknown reward inputs"):
        RewardModel.fit(heard, in_embedding, inputs="loudness")


def test_both_finds_a_signal_in_the_spectral_block_beside_a_wide_noisy_embedding():
    # As in a guild's first rounds: 128 embedding columns of noise, the taste in two spectral
    # columns. A fixed small spectral weight under the embedding's strong penalty lost it.
    rng = np.random.default_rng(5)
    spectral, embedding = rng.standard_normal((100, 20)), rng.standard_normal((100, 128))
    heard = _heard(spectral, embedding)
    y = spectral[:, 0] - spectral[:, 1] + 0.7 * rng.standard_normal(100)
    alone = RewardModel.fit(heard, y, inputs="spectral").corr
    both = RewardModel.fit(heard, y, inputs="both")
    assert both.corr > alone - 0.05 and both.corr > 0.6
    assert np.corrcoef(both.predict(heard), y)[0, 1] > 0.7


def test_held_out_folds_keep_a_tracks_windows_together():
    # Each track's 4 windows are identical: split across folds they would leak its reward.
    rng = np.random.default_rng(1)
    tracks = rng.standard_normal((30, 6))
    rewards = rng.standard_normal(30)
    x, y = _heard(np.repeat(tracks, 4, axis=0)), np.repeat(rewards, 4)
    groups = np.repeat(np.arange(30), 4)
    leaky = RewardModel.fit(x, y, "spectral", alphas=(0.01,)).corr
    honest = RewardModel.fit(x, y, "spectral", alphas=(0.01,), groups=groups).corr
    assert leaky > honest + 0.3


def test_uncertainty_grows_away_from_the_data_and_bounds_the_gain():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 4))
    y = x[:, 0] + 0.5 * rng.standard_normal(80)
    model = RewardModel.fit(_heard(x), y, inputs="spectral")
    near, far = np.zeros((1, 4)), np.full((1, 4), 8.0)
    assert model.predict_sd(_heard(far))[0] > 3 * model.predict_sd(_heard(near))[0]
    champion = rng.standard_normal((24, 4))
    better = champion.copy()
    better[:, 0] += 1.0  # every clip moves up the liked axis
    gain, se = model.gain_bound(_heard(champion), _heard(better), 1.28)
    assert gain > 0.5 and gain - 1.28 * se > 0
    noisy = champion + rng.standard_normal((24, 4))  # different, not better
    gain, se = model.gain_bound(_heard(champion), _heard(noisy), 1.28)
    assert gain - 1.28 * se < 0 < se


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
    (cached,) = tmp_path.glob("pool3-scores-8-3-*.npz")
    again = load_pool(8, 3, TINY_MEL, tmp_path)
    assert torch.allclose(again.images, pool.images, atol=1e-2)  # stored as float16
    assert np.allclose(again.vectors, pool.vectors)
    assert torch.allclose(again.round_trip, pool.round_trip, atol=1e-2)
    assert again.tags == pool.tags
    # Each clip is rehearsed in its own key, as a keyed model's prior learnt it.
    assert any(t.get(KEY_FIELD) in TONICS and t["mode"] in MODES for t in pool.tags)
    cached.write_bytes(b"torn")
    rebuilt = load_pool(8, 3, TINY_MEL, tmp_path)
    assert np.allclose(rebuilt.vectors, pool.vectors)
    assert cached.stat().st_size > 1000


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return load_pool(48, 7, TINY_MEL, tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def listener():
    return load_listener(None)


def _guided_replay(pool, rated, spec, listener):
    model, info = fit_guide(rated, spec, listener)
    return replay_probs(pool, model if info.guided else None, spec, listener), info


def _rated(folder, reward_of, n: int = 32, mel: MelConfig = TINY_MEL) -> list[RatedFile]:
    """Corpus clips of another seed, rated by `reward_of(reward_vector, tags)`."""
    other = load_pool(n, 99, mel)
    audio = MelCodec(mel).decode(other.images).numpy()
    rows = enumerate(zip(audio, other.vectors, other.tags, strict=True))
    return [RatedFile(path=str(encode(a, SR, folder / f"t{i}.wav", "wav")),
                      reward=float(reward_of(v, t))) for i, (a, v, t) in rows]


def test_replay_follows_the_reward_model(tmp_path, pool, listener):
    # A community that rewards brightness: replay should favour the pool's bright clips.
    rated = _rated(tmp_path, lambda v, _t: 3 * v[0])  # the spectral block starts with
    spec = FinetuneSpec(parent_dir="", out_dir="", items=[], guide_top=0.25)  # centroid/1000
    probs, info = _guided_replay(pool, rated, spec, listener)
    assert info.guided and info.reward_model_corr > 0.5
    chosen = (probs > 0).numpy()
    assert chosen.sum() == 12  # the best quarter of 48
    assert abs(float(probs.sum()) - 1.0) < 1e-9
    centroid = pool.vectors[:, 0]
    assert centroid[chosen].mean() > centroid[~chosen].mean() + 0.1


@pytest.fixture(scope="module")
def strings_taste(tmp_path_factory, listener):
    """Full-size 5-s windows (what the tagger was trained to hear): a pool, and a reward
    model fitted to a community that likes songs played on strings."""
    folder = tmp_path_factory.mktemp("strings")
    pool = load_pool(48, 7, MelConfig(), folder)
    rated = _rated(folder, lambda _v, t: float(t.get("instrument") == "strings"), n=48,
                   mel=MelConfig())
    spec = FinetuneSpec(parent_dir="", out_dir="", items=[], guide_top=0.25,
                        reward_inputs="embedding")
    model, info = fit_guide(rated, spec, listener)
    strings = np.array([t.get("instrument") == "strings" for t in pool.tags])
    return pool, model, info, spec, strings


def test_replay_follows_a_taste_for_an_instrument(strings_taste, listener):
    pool, model, info, spec, strings = strings_taste
    assert info.guided and info.reward_model_corr > 0.5
    chosen = (replay_probs(pool, model, spec, listener) > 0).numpy()
    assert strings[chosen].mean() > 2 * strings.mean()


def test_replay_stays_uniform_when_the_reward_model_predicts_nothing(tmp_path, pool, listener):
    rng = np.random.default_rng(1)
    rated = _rated(tmp_path, lambda _v, _t: rng.standard_normal())
    spec = FinetuneSpec(parent_dir="", out_dir="", items=[], guide_min_corr=0.9)
    probs, info = _guided_replay(pool, rated, spec, listener)
    assert not info.guided
    assert torch.allclose(probs, torch.full((48,), 1 / 48, dtype=torch.float64))


def test_reward_model_saves_and_loads_and_clips_to_the_rewards_seen(tmp_path):
    rng = np.random.default_rng(2)
    x = _heard(rng.standard_normal((60, 5)), rng.standard_normal((60, 3)))
    y = x.spectral[:, 0] + 0.1 * rng.standard_normal(60)
    model = RewardModel.fit(x, y)
    model.save(tmp_path / "rm.json")
    loaded = RewardModel.load(tmp_path / "rm.json")
    assert np.allclose(loaded.predict(x), model.predict(x)) and loaded.corr == model.corr
    assert np.allclose(loaded.predict_sd(x), model.predict_sd(x)) and loaded.inputs == "both"
    far = _heard(np.zeros((1, 5)), np.zeros((1, 3)))
    far.spectral[0, 0] = 1000.0  # far outside the data: the prediction stops at the best seen
    assert loaded.predict(far)[0] == pytest.approx(y.max())


def test_library_songs_are_drawn_by_the_reward_model(tmp_path, strings_taste, listener):
    # The pool's first 16 clips as library songs: the strings songs should get the draws.
    pool, model, _, spec, strings = strings_taste
    audio = MelCodec(MelConfig()).decode(pool.images[:16]).numpy()
    items = [TrainItem(key=f"library:{i}", path=str(encode(a, SR, tmp_path / f"l{i}.wav",
                                                            "wav")),
                       weight=1.0, kind=ItemKind.LIBRARY) for i, a in enumerate(audio)]
    kinds = [ItemKind.UPLOAD] + [ItemKind.LIBRARY] * len(items)  # one upload window first
    index = {it.key: [1 + i] for i, it in enumerate(items)}
    w = library_weights(items, kinds, index, model, spec, listener).numpy()
    assert w[0] == 0 and abs(w.sum() - 1) < 1e-9 and (w[1:] > 0).sum() == 4  # the best 25%
    assert strings[:16].any() and w[1:][strings[:16]].sum() > 2 * strings[:16].mean()
    even = library_weights(items, kinds, index, None, spec, listener).numpy()
    assert even[0] == 0 and np.allclose(even[1:], even[1])  # no trusted model: all alike


def test_uploads_are_trained_under_the_tags_the_tagger_hears(strings_taste, listener):
    pool = strings_taste[0]
    pipe = make_builtin_pipeline(MelConfig(), channels=(8, 16), layers_per_block=1)
    kinds = [ItemKind.TRACK, ItemKind.UPLOAD, ItemKind.LIBRARY, ItemKind.UPLOAD]
    tags = [{"mode": "minor"}, {}, {}, {}]
    out = heard_tags(pipe, pool.images[:4], kinds, tags, listener)
    assert out[0] == {"mode": "minor"}  # a track keeps what it was made with
    assert all(set(t) == set(VOCAB) and all(t[f] in VOCAB[f] for f in t) for t in out[1:])
    # The corpus clips' instruments are heard right (the tagger: 99% held out).
    assert sum(t["instrument"] == p["instrument"]
               for t, p in zip(out[1:], pool.tags[1:4], strict=True)) >= 2
    # A model without tags, or a codec the tagger does not read: left as they were.
    other = make_builtin_pipeline(MelConfig(), tags=False, channels=(8, 16), layers_per_block=1)
    assert heard_tags(other, pool.images[:4], kinds, tags, listener) == tags
    tiny = make_builtin_pipeline(TINY_MEL, channels=(8, 16), layers_per_block=1)
    assert heard_tags(tiny, pool.images[:4], kinds, tags, listener) == tags


def test_what_was_heard_in_each_upload_is_its_windows_majority():
    items = [TrainItem(key="track:1", path="t", weight=1.0, kind=ItemKind.TRACK),
             TrainItem(key="upload:7", path="u", weight=1.0, kind=ItemKind.UPLOAD),
             TrainItem(key="upload:8", path="v", weight=1.0, kind=ItemKind.UPLOAD),
             TrainItem(key="upload:9", path="gone", weight=1.0, kind=ItemKind.UPLOAD)]
    index = {"track:1": [0], "upload:7": [1, 2, 3], "upload:8": [4]}
    tags = [{"mode": "minor"}, {"instrument": "piano", "mode": "minor"},
            {"instrument": "organ", "mode": "major"}, {"instrument": "piano", "mode": "major"},
            {}]  # upload 8 was not heard (a model without tags)
    assert heard_uploads(items, index, tags) == {
        "upload:7": {"instrument": "piano", "mode": "major"}}
