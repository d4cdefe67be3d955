import numpy as np

from model.features import diversity, extract, feature_matrix, frechet_distance
from model.synth import SAMPLE_RATE, PieceParams, corpus, render

SR = SAMPLE_RATE


def _piece(**kw) -> np.ndarray:
    base = dict(seed=1, seconds=5.0, tempo_bpm=120.0, key=0, scale="major", register=60,
                brightness=0.5, harmonics=6, attack_s=0.01, decay_s=0.3, density=2.0,
                drums=False, bass=False)
    return render(PieceParams(**{**base, **kw}))


def test_noise_is_flat_and_tones_are_not():
    noise = np.random.default_rng(0).standard_normal(5 * SR).astype(np.float32) * 0.1
    assert extract(noise, SR).flatness > 0.5
    assert extract(_piece(), SR).flatness < 0.1


def test_brightness_register_and_density_move_their_features():
    dark, bright = extract(_piece(brightness=0.0), SR), extract(_piece(brightness=1.0), SR)
    assert bright.centroid_hz > dark.centroid_hz * 1.3
    low, high = extract(_piece(register=48), SR), extract(_piece(register=72), SR)
    assert high.register_midi > low.register_midi + 6
    sparse, busy = extract(_piece(density=0.5), SR), extract(_piece(density=4.0), SR)
    assert busy.onset_rate > sparse.onset_rate * 2


def test_silence_and_loudness():
    quiet = _piece() * 0.01
    assert extract(quiet, SR).loudness_db < extract(_piece(), SR).loudness_db - 30
    gappy = _piece().copy()
    gappy[SR:4 * SR] = 0
    assert extract(gappy, SR).silence_frac > 0.5


def test_frechet_distance_separates_sets():
    a, _ = corpus(24, seed=0)
    b, _ = corpus(24, seed=100)
    noise = np.random.default_rng(0).standard_normal(a.shape).astype(np.float32) * 0.1
    fa, fb, fn = (feature_matrix(x, SR) for x in (a, b, noise))
    assert frechet_distance(fa, fa) < 1e-6
    assert frechet_distance(fa, fn) > 5 * frechet_distance(fa, fb)
    assert diversity(fa) > diversity(np.repeat(fa[:1], 24, axis=0))
