"""The simulated community's own ear: what it hears, what members like, factions."""

from __future__ import annotations

import numpy as np
import pytest

from bot.experiment.ear import (
    FIELDS,
    OUTSIDE_SEED,
    VALUES,
    Ear,
    EarCommunity,
    Hearing,
    StyleNearness,
    hear,
    load_ear,
    load_style_nearness,
    outside_clips,
    quality,
)
from model import tags as tagvocab
from model.scores import score_corpus
from model.synth import random_params, render

SR = 16000


def tune() -> np.ndarray:
    return render(random_params(3, seconds=5.0)).astype(np.float32)


def test_tunes_are_clear_and_noise_silence_and_clipping_are_not_music():
    rng = np.random.default_rng(0)
    music = hear(tune())
    assert music.clarity > 0.3 and quality(music) > 0.9
    for bad in (rng.standard_normal(5 * SR) * 0.1, np.zeros(5 * SR),
                np.clip(tune() * 40, -1, 1) + rng.standard_normal(5 * SR) * 0.3):
        assert quality(hear(bad)) < 0.1
    community = EarCommunity(load_ear(), seed=0)
    assert community.score(hear(np.zeros(5 * SR))) == pytest.approx(1.0, abs=0.01)


def beliefs_for(tags: dict[str, str]) -> np.ndarray:
    """Ear beliefs certain of `tags` (uniform over a field left out)."""
    row = []
    for f, v in VALUES:
        n = len(tagvocab.VOCAB[f])
        row.append((1.0 if tags[f] == v else 0.0) if f in tags else 1.0 / n)
    return np.array([row])


def test_members_rate_by_what_the_ear_hears(monkeypatch):
    community = EarCommunity(load_ear(), seed=3, n_members=12)
    h = hear(tune())
    # Under uniform beliefs a clip is neither liked nor disliked: ~3 stars plus biases.
    monkeypatch.setattr(community.ear, "beliefs", lambda hs: np.repeat(beliefs_for({}), len(hs), 0))
    neutral = community.expected_matrix([h])[0]
    assert np.allclose(neutral, np.clip(3 + np.array([m.bias for m in community.members]), 1, 5))
    # The community's favourite instrument is rated above its least favourite, by most members.
    shared = np.mean([m.weights for m in community.members], axis=0)
    block = [j for j, (f, _) in enumerate(VALUES) if f == "instrument"]
    best = VALUES[block[int(np.argmax(shared[block]))]][1]
    worst = VALUES[block[int(np.argmin(shared[block]))]][1]
    rows = {}
    for name in (best, worst):
        certain = beliefs_for({"instrument": name})
        monkeypatch.setattr(community.ear, "beliefs",
                            lambda hs, c=certain: np.repeat(c, len(hs), 0))
        rows[name] = community.expected_matrix([h])[0]
    assert rows[best].mean() > rows[worst].mean() + 0.5
    assert np.mean(rows[best] > rows[worst]) >= 0.75
    # Noisy ratings around that, always whole stars in range.
    stars = community.rate_tracks([h] * 50, np.random.default_rng(0))
    assert stars.shape == (50, 12) and stars.min() >= 1 and stars.max() <= 5


def test_factions_want_opposite_tempi(monkeypatch):
    community = EarCommunity(load_ear(), seed=1, n_members=12, factions=True)
    h = hear(tune())
    scores = {}
    for tempo in ("fast", "slow"):
        monkeypatch.setattr(community.ear, "beliefs", lambda hs, t=tempo: np.repeat(
            beliefs_for({"tempo": t, "drums": "yes" if t == "fast" else "no"}), len(hs), 0))
        scores[tempo] = community.faction_scores([h])
    assert scores["fast"][0] > scores["slow"][0] + 0.5  # faction 0: fast, with drums
    assert scores["slow"][1] > scores["fast"][1] + 0.5  # faction 1: slow, without


def test_the_ear_learns_what_it_is_shown():
    rng = np.random.default_rng(0)
    hearings, tags = [], []
    for _ in range(300):
        t = tagvocab.uniform(rng)
        x = rng.normal(0, 1, 10)
        for i, f in enumerate(FIELDS):  # one informative dimension per field
            x[i] += 3 * tagvocab.VOCAB[f].index(t[f])
        hearings.append(Hearing(x, 0.5, -20.0))
        tags.append(t)
    ear = Ear.train(hearings, tags)
    assert ear.accuracy["drums"] > 0.85 and ear.accuracy["mode"] > 0.85
    p = ear.beliefs(hearings[:5])
    assert p.shape == (5, len(VALUES))
    for f in FIELDS:  # each field's block is a distribution
        block = [j for j, (g, _) in enumerate(VALUES) if g == f]
        assert np.allclose(p[:, block].sum(1), 1.0)


def test_the_shipped_ear_hears_tags_better_than_chance():
    ear = load_ear()
    for f in FIELDS:  # held out: mode 0.65 of 2, style 0.57 of 6, instrument 0.86 of 8
        assert ear.accuracy[f] > 1.25 / len(tagvocab.VOCAB[f]), f
    assert ear.accuracy["instrument"] > 0.75


def test_a_singing_community_likes_what_sounds_near_its_songs(tmp_path):
    ear = load_ear()
    small = StyleNearness.train(ear, tmp_path, n=24)  # 71 features from 18 songs: rough
    assert small.auc > 0.6 and (tmp_path / f"style-nearness-{OUTSIDE_SEED}-24.npz").is_file()
    nearness = load_style_nearness(ear)  # the simulation's, from 96 songs
    assert nearness.auc > 0.9  # held out: songs for voices sound nearer than corpus clips
    voices = [hear(a) for a in outside_clips(6, 5, cache_dir=tmp_path)]
    corpus = [hear(a) for a in score_corpus(6, 5, 5.0, SR, tmp_path)[0]]
    assert nearness.nearness(voices).mean() > 0.3 > nearness.nearness(corpus).mean()
    # Nearness, not a direction: a clip pushed past the songs, away from the corpus, is far.
    centre = (nearness.mean * ear.scale) + ear.mean
    past = centre + 6.0 * (centre - np.stack([h.summary for h in corpus]).mean(0))
    assert nearness.nearness([Hearing(past, 0.5, -20.0)])[0] < 0.1
    assert nearness.nearness([Hearing(centre, 0.5, -20.0)])[0] > 0.9
    singing = EarCommunity(ear, seed=3, outside=nearness)
    plain = EarCommunity(ear, seed=3)
    # Same members (same taste over tags); only the singing community prefers the voices.
    gap = singing.expected_matrix(voices).mean() - singing.expected_matrix(corpus).mean()
    plain_gap = plain.expected_matrix(voices).mean() - plain.expected_matrix(corpus).mean()
    assert gap > plain_gap + 0.3
    song = singing.make_upload(singing.members[0], np.random.default_rng(0), 6.0,
                               n_candidates=2, cache_dir=tmp_path)
    assert len(song) == 6 * SR and nearness.nearness([hear(song[: 5 * SR])])[0] > 0.2
