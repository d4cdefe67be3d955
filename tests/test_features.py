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


def test_key_finding_hears_major_and_minor_in_any_key():
    from model.features import key_mode

    sr = 16000
    t = np.arange(sr * 2) / sr

    def key(tonic: int, third: int, sixth: int) -> np.ndarray:
        # A key's notes, its tonic triad louder (as a melody over its chords would sound).
        notes = [(tonic, 3), (tonic + third, 2), (tonic + 7, 2), (tonic + 2, 1),
                 (tonic + 5, 1), (tonic + sixth, 1), (tonic + 11, 1)]
        x = sum(w * np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m, w in notes)
        return (0.5 * x / np.abs(x).max()).astype(np.float32)

    for tonic in (57, 60, 62, 67):
        assert key_mode(extract(key(tonic, 4, 9), sr).chroma) == "major"
        assert key_mode(extract(key(tonic, 3, 8), sr).chroma) == "minor"
