"""The simulated community: calibrated on real synthesised audio, a peak not a slope, and
bad audio (noise, silence, clipping) rated down whatever the taste says."""

from dataclasses import replace

import numpy as np
import pytest

from bot.experiment.community import (
    Community,
    Member,
    community_score,
    expected_stars,
    in_taste_region,
    listen_seconds,
    make_upload,
    preferred_params,
    quality,
    rate,
    will_upload,
)
from model.features import AudioFeatures, extract
from model.synth import SAMPLE_RATE as SR
from model.synth import corpus, render

N_CORPUS = 160


@pytest.fixture(scope="module")
def community() -> Community:
    return Community(seed=0)


@pytest.fixture(scope="module")
def starter() -> tuple[np.ndarray, list[AudioFeatures]]:
    """Random starter-corpus pieces, as the base model learns from them, and their features."""
    audio, _ = corpus(N_CORPUS, seed=5000)
    return audio, [extract(a, SR) for a in audio]


def _mean_rating(community: Community, feats: list[AudioFeatures], seed: int = 0) -> float:
    return float(community.rate_tracks(feats, np.random.default_rng(seed)).mean())


def _best_piece(community: Community, starter) -> np.ndarray:
    audio, feats = starter
    return audio[int(np.argmax(community.expected_matrix(feats).mean(1)))]


def test_reproducible_by_seed():
    a, b, c = Community(3), Community(3), Community(4)
    assert a.members == b.members
    assert a.members != c.members
    feats = [extract(render(preferred_params(np.random.default_rng(i))), SR) for i in range(3)]
    ra = a.rate_tracks(feats, np.random.default_rng(9))
    assert np.array_equal(ra, b.rate_tracks(feats, np.random.default_rng(9)))
    m = a.members[0]
    up1 = make_upload(m, np.random.default_rng(5), seconds=3, n_candidates=2)
    up2 = make_upload(m, np.random.default_rng(5), seconds=3, n_candidates=2)
    assert np.array_equal(up1, up2) and len(up1) == 3 * SR


def test_calibration_on_real_audio(community, starter):
    """Noise and silence ~1 star, random corpus 2.5-3.2 with a wide spread, in-region 4+."""
    rng = np.random.default_rng(0)
    n = 5 * SR
    junk = [rng.standard_normal(n) * 0.1, rng.standard_normal(n) * 0.3, np.zeros(n)]
    junk_feats = [extract(np.asarray(x, np.float32), SR) for x in junk] * 10
    assert _mean_rating(community, junk_feats) <= 1.05

    _, feats = starter
    stars = community.rate_tracks(feats, np.random.default_rng(1))
    assert 2.5 <= stars.mean() <= 3.2
    per_track = stars.mean(1)
    assert per_track.std() > 0.9  # wide spread: the corpus holds liked and disliked pieces
    assert per_track.min() < 1.5 and per_track.max() > 4.3

    inside = [f for f in feats if in_taste_region(f)]
    assert len(inside) >= 10
    assert _mean_rating(community, inside) >= 3.9


def test_peak_not_slope(community):
    """Turning every knob past the genre ("brighter, higher, busier") is rated down."""
    rng = np.random.default_rng(2)
    params = [preferred_params(rng) for _ in range(6)]
    more = [replace(p, brightness=1.0, harmonics=12, register=76, density=4.0, tempo_bpm=160.0)
            for p in params]
    genre = [extract(render(p), SR) for p in params]
    beyond = [extract(render(p), SR) for p in more]
    assert _mean_rating(community, genre) > _mean_rating(community, beyond) + 1.0

    # Along a ray in feature space the community score rises to the centre, then falls.
    f0 = genre[0]
    ray = [replace(f0, centroid_hz=f0.centroid_hz * 2.0 ** (k / 2), onset_rate=f0.onset_rate + k,
                   register_midi=f0.register_midi + 3 * k) for k in (-4, 0, 4, 8)]
    scores = [community_score(f, community) for f in ray]
    assert scores[1] > scores[0] and scores[1] > scores[2] > scores[3]
    assert scores[3] < 1.5


def test_noise_silence_and_clipping_rated_down(community, starter):
    best = _best_piece(community, starter)
    good = extract(best, SR)
    assert quality(good) > 0.9 and community_score(good, community) > 4.0
    rng = np.random.default_rng(3)
    gappy = best * (np.arange(len(best)) % SR < 0.25 * SR)
    broken = {
        "clipped": np.clip(best * 10, -1, 1),
        "noisy": best + rng.standard_normal(len(best)) * 0.05,
        "near silent": best * 1e-3,
        "mostly silence": gappy,
        "white noise": rng.standard_normal(len(best)) * 0.2,
    }
    # Even the most generous, most enthusiastic member gives bad audio one star.
    fan = replace(community.members[0], bias=0.8, scale=1.4, noise=0.75)
    for name, audio in broken.items():
        f = extract(np.asarray(audio, np.float32), SR)
        assert community_score(f, community) < 1.3, name
        assert max(rate(fan, f, rng) for _ in range(50)) == 1, name


def test_members_differ_in_bias(community, starter):
    biases = [m.bias for m in community.members]
    assert min(biases) < -0.3 and max(biases) > 0.3
    _, feats = starter
    stars = community.rate_tracks(feats, np.random.default_rng(4))
    harsh, generous = int(np.argmin(biases)), int(np.argmax(biases))
    assert stars[:, generous].mean() > stars[:, harsh].mean() + 0.5


def test_rate_matches_expected_stars(community, starter):
    _, feats = starter
    member, f = community.members[0], feats[0]
    rng = np.random.default_rng(5)
    draws = [rate(member, f, rng) for _ in range(400)]
    assert set(draws) <= {1, 2, 3, 4, 5}
    assert abs(np.mean(draws) - expected_stars(member, f)) < 0.25


def test_liked_tracks_are_listened_to_longer(community, starter):
    liked = extract(_best_piece(community, starter), SR)
    disliked = extract(np.random.default_rng(6).standard_normal(5 * SR).astype(np.float32) * 0.1,
                       SR)
    rng = np.random.default_rng(7)
    for member in community.members[:4]:
        on_liked = [listen_seconds(member, liked, 60.0, rng) for _ in range(200)]
        on_disliked = [listen_seconds(member, disliked, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= 60.0 for s in on_liked + on_disliked)
        assert np.mean(on_liked) > np.mean(on_disliked) + 20.0


def test_uploads_sound_like_the_uploaders_taste(community):
    own, everyone = [], []
    for i, member in enumerate(community.members[:4]):
        audio = make_upload(member, np.random.default_rng(10 + i), seconds=5, n_candidates=6)
        assert audio.dtype == np.float32 and audio.shape == (5 * SR,)
        f = extract(audio, SR)
        own.append(expected_stars(member, f))
        everyone.append(community_score(f, community))
    assert np.mean(own) >= 4.0
    assert np.mean(everyone) >= 3.5


def test_will_upload_follows_the_members_rate():
    member = Member(id=1, centre=(0.0, 4.0, 58.0, 20.0), width=(1.0, 2.0, 8.0, 12.0), bias=0.0,
                    scale=1.0, noise=0.5, patience=10.0, upload_rate=0.25)
    rng = np.random.default_rng(8)
    share = np.mean([will_upload(member, rng) for _ in range(2000)])
    assert 0.2 < share < 0.3


def test_rate_tracks_gives_one_star_per_track_and_member(community, starter):
    _, feats = starter
    many = (feats * 2)[:200]
    stars = community.rate_tracks(many, np.random.default_rng(0))
    assert stars.shape == (200, len(community))
    assert stars.min() >= 1 and stars.max() <= 5
