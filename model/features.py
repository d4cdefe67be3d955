"""Hand-made audio features: what a clip sounds like, in numbers.

Used for the sample-quality benchmark (a Fréchet distance between feature distributions),
for diversity, and by the simulated community, whose taste is defined over these features.
All features come from one fixed STFT analysis (1024-point Hann, hop 256), independent of
the model's codec, so different models are measured by the same ruler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import torch

N_FFT, HOP, N_BANDS = 1024, 256, 8


@dataclass(frozen=True)
class AudioFeatures:
    centroid_hz: float  # brightness
    flatness: float  # 0 = tonal, 1 = white noise
    loudness_db: float  # RMS in dBFS
    onset_rate: float  # onsets per second (rhythmic density)
    tempo_bpm: float  # from the onset envelope's autocorrelation
    register_midi: float  # power-weighted mean pitch of the 80-2000 Hz range
    silence_frac: float  # share of frames 40 dB below the clip's loudest
    chroma: tuple[float, ...]  # 12 pitch-class shares
    band_mean_db: tuple[float, ...]  # log-spaced bands, relative to the clip's loudest band
    band_std_db: tuple[float, ...]

    def vector(self) -> np.ndarray:
        scalars = [self.centroid_hz / 1000, self.flatness * 10, self.loudness_db / 10,
                   self.onset_rate, self.tempo_bpm / 60, self.register_midi / 12,
                   self.silence_frac * 10]
        return np.array(scalars + [c * 12 for c in self.chroma] + [b / 10 for b in
                        self.band_mean_db] + [b / 10 for b in self.band_std_db])

    def to_dict(self) -> dict:
        return asdict(self)


def _band_edges(sr: int) -> np.ndarray:
    return np.geomspace(60.0, sr / 2, N_BANDS + 1)


def extract(audio: np.ndarray, sr: int) -> AudioFeatures:
    """Features of one mono clip."""
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec.abs().pow(2).numpy().astype(np.float64)  # (bins, frames)
    freqs = np.linspace(0, sr / 2, power.shape[0])
    frame_power = power.sum(0) + 1e-12
    centroid = float((freqs @ power / frame_power).mean())
    geo = np.exp(np.log(power + 1e-12).mean(0))
    flatness = float((geo / (power.mean(0) + 1e-12)).mean())
    loudness = float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-12))
    frame_db = 10 * np.log10(frame_power)
    silence = float((frame_db < frame_db.max() - 40).mean())

    edges = _band_edges(sr)
    bands = np.stack([power[(freqs >= lo) & (freqs < hi)].sum(0)
                      for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    band_db = 10 * np.log10(bands + 1e-12)
    band_db -= band_db.max()
    band_db = np.maximum(band_db, -80)

    # Onsets: peaks of the positive spectral flux over log bands, above a moving median.
    flux = np.maximum(np.diff(band_db, axis=1), 0).sum(0)
    fps = sr / HOP
    k = max(3, int(fps * 0.25))
    med = np.array([np.median(flux[max(0, i - k): i + k + 1]) for i in range(len(flux))])
    thresh = med + 0.5 * flux.std()
    peaks = (flux[1:-1] > thresh[1:-1]) & (flux[1:-1] >= flux[:-2]) & (flux[1:-1] > flux[2:])
    onset_rate = float(peaks.sum() / (len(audio) / sr))
    env = flux - flux.mean()
    ac = np.correlate(env, env, mode="full")[len(env) - 1:]
    lags = np.arange(len(ac))
    valid = (lags >= fps * 60 / 180) & (lags <= fps * 60 / 60)
    tempo = float(60 * fps / lags[valid][np.argmax(ac[valid])]) if valid.any() else 0.0

    pitched = (freqs >= 80) & (freqs <= 2000)
    midi = 69 + 12 * np.log2(freqs[pitched] / 440.0)
    spectrum = power[pitched].sum(1)
    register = float(midi @ spectrum / (spectrum.sum() + 1e-12))
    pcs = np.round(midi).astype(int) % 12
    chroma = np.bincount(pcs, weights=spectrum, minlength=12)
    chroma = chroma / (chroma.sum() + 1e-12)
    return AudioFeatures(
        centroid_hz=centroid, flatness=flatness, loudness_db=loudness, onset_rate=onset_rate,
        tempo_bpm=tempo, register_midi=register, silence_frac=silence,
        chroma=tuple(float(c) for c in chroma),
        band_mean_db=tuple(float(b) for b in band_db.mean(1)),
        band_std_db=tuple(float(b) for b in band_db.std(1)),
    )


# Krumhansl-Kessler key profiles (probe-tone ratings), tonic first.
KEY_PROFILES = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}


def find_key(chroma: tuple[float, ...] | np.ndarray) -> tuple[int, str]:
    """(tonic pitch class, "major" or "minor"): the key profile, over all 24 keys, that
    correlates best with a clip's chroma (Krumhansl-Schmuckler key finding)."""
    c = np.asarray(chroma, dtype=float)
    if c.std() == 0:
        return 0, "major"
    _, mode, tonic = max((np.corrcoef(c, np.roll(profile, k))[0, 1], mode, k)
                         for mode, profile in KEY_PROFILES.items() for k in range(12))
    return tonic, mode


def key_mode(chroma: tuple[float, ...] | np.ndarray) -> str:
    """The mode of `find_key`: a judge of mode that shares nothing with the tagger or the
    model's codec."""
    return find_key(chroma)[1]


def feature_matrix(audios: list[np.ndarray] | np.ndarray, sr: int) -> np.ndarray:
    return np.stack([extract(a, sr).vector() for a in audios])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are clips)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    # A tiny ridge keeps sqrtm stable when a feature is constant in a set (e.g. silence).
    ridge = 1e-6 * np.eye(a.shape[1])
    s1, s2 = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def diversity(features: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between clips' feature vectors."""
    diff = features[:, None, :] - features[None, :, :]
    d = np.sqrt((diff**2).sum(-1))
    n = len(features)
    return float(d.sum() / (n * (n - 1)))
