"""A simulated community with its own ear: members who like tunes, instruments and moods.

The bot's reward model reads spectral statistics (model/features.py) and, later, the
tagger's embedding (a CNN over the codec's mel windows). If the simulated community judged
through the same inputs, the simulation would only check the reward model against its own
ruler. So this community hears through something else:

- **The ear** (`Ear`): softmax regressions, one per tag field, over a listener's summary of
  the audio that the bot never computes: MFCC means and spreads (a 2048-point STFT and its
  own 40-band mel filterbank), a key-aligned chroma profile, the rhythm's autocorrelation
  at tempo lags and the top band's flicker (hi-hats). Trained on the starter corpus with
  another seed than anything the bot trains on, and cached. It says, per field, how likely
  each tag value is for what it heard.
- **Tonal clarity**: how much of each frame's pitched energy sits in its strongest pitch
  class; tunes are clear, noise is not. With loudness it gates a rating: noise-like, silent
  or clipped audio ends at one star whatever anyone's taste.

Members' taste is a weight per tag value (instrument matters most), drawn around a shared
community taste with personal scatter, so there is a common taste to learn and individual
disagreement; with `factions`, half the members want fast tracks with drums and the other
half slow ones without. A member's liking of a clip is their weights averaged under the
ear's beliefs, through a logistic; stars follow as in bot/experiment/community.py (personal
bias, scale and noise; the quality gate scales what is above one star). Uploads: a member
shares the starter-corpus song they like best among a few.

**A style outside the corpus** (`outside=`): the community sings. Its members upload
arrangements for voices (General MIDI choir and voice programs, which no corpus family
uses) and like tracks that sound like them: a `StyleNearness` (a Gaussian over the ear's
summary of songs for voices; held-out, a song sounds nearer than a corpus clip 97% of the
time) says how near a clip sounds to the songs, and that adds to every member's liking.
The bot can only learn this from the uploads: the starter corpus has nothing like it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.fft import dct
from scipy.signal import stft

from bot.core.domain import MAX_STARS, MIN_STARS
from model import tags as tagvocab

log = logging.getLogger(__name__)

SR = 16000
N_FFT, HOP = 2048, 512
N_MELS, N_MFCC = 40, 20
TEMPO_LAGS = np.geomspace(0.3, 1.5, 16)  # seconds between beats: 200 down to 40 bpm
EAR_SEED = 71_000_003  # far from every seed the bot trains or evaluates on
FIELDS = tuple(tagvocab.VOCAB)
VALUES = [(f, v) for f in FIELDS for v in tagvocab.VOCAB[f]]  # the ear's output columns


# --- what the ear computes ----------------------------------------------------------------

def _mel_bank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR) -> np.ndarray:
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    edges = 700.0 * (10 ** (np.linspace(hz_to_mel(np.array(30.0)), hz_to_mel(np.array(sr / 2)),
                                         n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    bank = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        bank[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return bank


_BANK = _mel_bank()
_FREQS = np.fft.rfftfreq(N_FFT, 1 / SR)
_PITCHED = (_FREQS > 60) & (_FREQS < 4000)
_PITCH_CLASS = np.round(12 * np.log2(np.maximum(_FREQS, 1.0) / 440.0)).astype(int) % 12


@dataclass(frozen=True)
class Hearing:
    """What the ear makes of one clip."""

    summary: np.ndarray  # the listener's summary vector (the regressions' input)
    clarity: float  # mean share of pitched energy in the strongest pitch class (noise ~0.1)
    loudness_db: float  # RMS, dBFS


def hear(audio: np.ndarray, sr: int = SR) -> Hearing:
    """The listener's summary of a mono clip at 16 kHz."""
    x = np.asarray(audio, dtype=np.float64)
    if sr != SR:
        raise ValueError(f"the ear listens at {SR} Hz")
    rms = math.sqrt(float(np.mean(x * x))) if len(x) else 0.0
    loudness = 20 * math.log10(max(rms, 1e-9))
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    _, _, z = stft(x, fs=SR, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary=None, padded=False)
    power = np.abs(z) ** 2  # (freqs, frames)
    logmel = np.log(_BANK @ power + 1e-10)
    mfcc = dct(logmel, type=2, axis=0, norm="ortho")[:N_MFCC]
    pitched = power[_PITCHED]
    chroma = np.stack([pitched[_PITCH_CLASS[_PITCHED] == c].sum(0) for c in range(12)])
    chroma_total = chroma.sum(0) + 1e-12
    loud = chroma_total > 1e-6 * chroma_total.max() if chroma_total.max() > 0 else \
        np.zeros_like(chroma_total, dtype=bool)
    shares = chroma[:, loud] / chroma_total[loud] if loud.any() else np.full((12, 1), 1 / 12)
    clarity = float(shares.max(0).mean())
    profile = shares.mean(1)
    profile = np.roll(profile, -int(profile.argmax()))  # key-aligned: mode, not key
    flux = np.maximum(np.diff(logmel, axis=1), 0).sum(0)
    flux = flux - flux.mean()
    ac = np.correlate(flux, flux, "full")[len(flux) - 1:] if len(flux) > 1 else np.zeros(1)
    ac = ac / (ac[0] + 1e-9)
    lags = np.minimum(np.round(TEMPO_LAGS * SR / HOP).astype(int), len(ac) - 1)
    top = logmel[-8:].mean(0)  # the top bands: hi-hats flicker there
    summary = np.concatenate([mfcc.mean(1), mfcc.std(1), profile, ac[lags],
                              [top.std(), np.diff(top).std() if len(top) > 1 else 0.0,
                               clarity]])
    return Hearing(np.nan_to_num(summary), clarity, loudness)


# --- the listener model -------------------------------------------------------------------

@dataclass
class Ear:
    """Per field, a softmax regression from the hearing summary to the field's values."""

    mean: np.ndarray
    scale: np.ndarray
    weights: dict[str, np.ndarray]  # field -> (features + 1, values)
    accuracy: dict[str, float]  # held-out, per field

    def standardise(self, hearings: list[Hearing]) -> np.ndarray:
        """(clips, features): the summaries in the units the ear was trained in."""
        return (np.stack([h.summary for h in hearings]) - self.mean) / self.scale

    def beliefs(self, hearings: list[Hearing]) -> np.ndarray:
        """(clips, len(VALUES)): per field, the probability of each value."""
        x = self.standardise(hearings)
        x = np.hstack([x, np.ones((len(x), 1))])
        return np.hstack([_softmax(x @ self.weights[f]) for f in FIELDS])

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale,
                 accuracy=np.array([self.accuracy[f] for f in FIELDS]),
                 **{f"w_{f}": w for f, w in self.weights.items()})

    @classmethod
    def load(cls, path: Path) -> Ear:
        d = np.load(path)
        return cls(d["mean"], d["scale"], {f: d[f"w_{f}"] for f in FIELDS},
                   dict(zip(FIELDS, map(float, d["accuracy"]), strict=True)))

    @classmethod
    def train(cls, hearings: list[Hearing], tags: list[dict[str, str]], seed: int = EAR_SEED,
              held_out: float = 0.2) -> Ear:
        """Fit on most clips, report accuracy on the rest, then refit on all."""
        x = np.stack([h.summary for h in hearings])
        mean, scale = x.mean(0), x.std(0) + 1e-6
        x = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
        order = np.random.default_rng(seed).permutation(len(x))
        test, fit = order[: int(held_out * len(x))], order[int(held_out * len(x)):]
        weights, accuracy = {}, {}
        for f in FIELDS:
            values = tagvocab.VOCAB[f]
            y = np.array([values.index(t[f]) for t in tags])
            w = _fit_softmax(x[fit], y[fit], len(values))
            accuracy[f] = float(np.mean((x[test] @ w).argmax(1) == y[test])) if len(test) else 0
            weights[f] = _fit_softmax(x, y, len(values))
        return cls(mean, scale, weights, accuracy)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-2,
                 steps: int = 400, lr: float = 0.5) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent (L2, no bias penalty)."""
    w = np.zeros((x.shape[1], k))
    onehot = np.eye(k)[y]
    for _ in range(steps):
        grad = x.T @ (_softmax(x @ w) - onehot) / len(x)
        grad[:-1] += l2 * w[:-1]
        w -= lr * grad
    return w


def train_ear(n_clips: int = 1024, cache_dir: Path | None = None, seed: int = EAR_SEED) -> Ear:
    """The ear, trained on `n_clips` starter-corpus clips of seed `seed` (cached)."""
    path = cache_dir / f"ear-{seed}-{n_clips}.npz" if cache_dir else None
    if path is not None and path.is_file():
        return Ear.load(path)
    from model.scores import score_corpus

    audio, infos = score_corpus(n_clips, seed, 5.0, SR, cache_dir)
    ear = Ear.train([hear(a) for a in audio], [i.tags for i in infos], seed)
    log.info("the ear: held-out accuracy %s", {f: round(a, 2) for f, a in ear.accuracy.items()})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ear.save(path)
    return ear


# --- the community ------------------------------------------------------------------------

# How much each field matters to members (the spread of their weights per value): what an
# instrument sounds like matters most, then the style; mode, tempo and drums less.
FIELD_STRENGTH = {"instrument": 1.2, "mode": 0.6, "tempo": 0.6, "drums": 0.5, "style": 0.8}
MEMBER_SCATTER = 0.5  # members' own weights around the community's, per value
FACTION_AXIS = {"tempo": {"fast": 1.5, "slow": -1.5}, "drums": {"yes": 0.8, "no": -0.8}}
LIKING_GAIN = 5.0  # weights -> liking: logistic of gain x expected weight
CLARITY_GATE = (0.25, 0.04)  # tonal clarity below this is noise (corpus 5%: 0.40)
QUIET_GATE = (-50.0, 2.5)  # loudness below this is near silence
LOUD_GATE = (-3.0, 0.8)  # loudness above this is clipped


@dataclass(frozen=True)
class EarMember:
    id: int
    weights: np.ndarray  # one per VALUES entry
    faction: int  # 0 or 1 (factions), else -1
    bias: float
    scale: float
    noise: float
    patience: float
    upload_rate: float


def _logistic(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def quality(h: Hearing) -> float:
    """0..1: whether the clip is music at all (tonal, audible, not clipped)."""
    gates = (_logistic((h.clarity - CLARITY_GATE[0]) / CLARITY_GATE[1])
             * _logistic((h.loudness_db - QUIET_GATE[0]) / QUIET_GATE[1])
             * _logistic(-(h.loudness_db - LOUD_GATE[0]) / LOUD_GATE[1]))
    return float(gates) if np.isfinite(gates) else 0.0


class EarCommunity:
    """`n_members` members drawn from `seed`, hearing through `ear`; same interface as
    bot.experiment.community.Community, with `Hearing`s where that takes features."""

    def __init__(self, ear: Ear, seed: int = 0, n_members: int = 12, factions: bool = False,
                 first_id: int = 1001, outside: StyleNearness | None = None) -> None:
        if n_members < 1:
            raise ValueError("n_members must be >= 1")
        self.ear = ear
        rng = np.random.default_rng([seed, 0xEA])
        strength = np.array([FIELD_STRENGTH[f] for f, _ in VALUES])
        shared = rng.normal(0.0, 1.0, len(VALUES)) * strength
        members = []
        for i in range(n_members):
            w = shared + rng.normal(0.0, MEMBER_SCATTER, len(VALUES)) * strength
            faction = i % 2 if factions else -1
            if factions:
                sign = 1.0 if faction == 0 else -1.0
                for j, (f, v) in enumerate(VALUES):
                    w[j] += sign * FACTION_AXIS.get(f, {}).get(v, 0.0)
            for f in FIELDS:  # a clip the ear cannot place is neither liked nor disliked
                block = [j for j, (g, _) in enumerate(VALUES) if g == f]
                w[block] -= w[block].mean()
            members.append(EarMember(
                id=first_id + i, weights=w, faction=faction,
                bias=float(np.clip(rng.normal(0.0, 0.4), -0.8, 0.8)),
                scale=float(np.exp(rng.normal(0.0, 0.15))), noise=float(rng.uniform(0.35, 0.75)),
                patience=float(rng.uniform(6.0, 25.0)), upload_rate=float(rng.uniform(0.05, 0.35))))
        self.members: tuple[EarMember, ...] = tuple(members)
        self._w = np.stack([m.weights for m in members])  # (members, values)
        self._scale = np.array([m.scale for m in members])
        self._bias = np.array([m.bias for m in members])
        self._noise = np.array([m.noise for m in members])
        self.outside = outside
        self._outside_taste = OUTSIDE_TASTE * np.exp(rng.normal(0.0, 0.3, n_members))

    def __len__(self) -> int:
        return len(self.members)

    def hear(self, audio: np.ndarray) -> Hearing:
        return hear(audio)

    def _liking_quality(self, hearings: list[Hearing]) -> tuple[np.ndarray, np.ndarray]:
        p = self.ear.beliefs(hearings)  # (tracks, values); each field's block sums to 1
        expected = p @ self._w.T / len(FIELDS)  # (tracks, members)
        if self.outside is not None:  # how near the songs: -1/2 (far) .. +1/2 (their centre)
            expected = expected + (self.outside.nearness(hearings)[:, None] - 0.5) * \
                self._outside_taste[None]
        q = np.array([quality(h) for h in hearings])[:, None]
        return _logistic(LIKING_GAIN * expected), q

    def _stars(self, hearings: list[Hearing], eps: np.ndarray | float = 0.0) -> np.ndarray:
        u, q = self._liking_quality(hearings)
        raw = 3.0 + self._scale[None] * (4.0 * u - 2.0) + self._bias[None] + eps
        return np.clip(1.0 + q * np.maximum(raw - 1.0, 0.0), MIN_STARS, MAX_STARS)

    def expected_matrix(self, hearings: list[Hearing]) -> np.ndarray:
        """(tracks, members) noise-free continuous stars."""
        return self._stars(hearings) if hearings else np.zeros((0, len(self)))

    def rate_tracks(self, hearings: list[Hearing], rng: np.random.Generator) -> np.ndarray:
        """(tracks, members) int stars 1..5."""
        if not hearings:
            return np.zeros((0, len(self)), dtype=int)
        eps = rng.normal(0.0, 1.0, (len(hearings), len(self))) * self._noise[None]
        return np.clip(np.rint(self._stars(hearings, eps)), MIN_STARS, MAX_STARS).astype(int)

    def score(self, hearing: Hearing) -> float:
        """Expected mean star of the whole community, noise-free."""
        return float(self.expected_matrix([hearing]).mean())

    def faction_scores(self, hearings: list[Hearing]) -> dict[int, float]:
        """Expected mean star per faction (factions only)."""
        m = self.expected_matrix(hearings)
        factions = np.array([mem.faction for mem in self.members])
        return {int(f): float(m[:, factions == f].mean()) for f in sorted(set(factions))
                if f >= 0}

    def listen_seconds(self, member: EarMember, hearing: Hearing, duration_s: float,
                       rng: np.random.Generator) -> float:
        """Seconds `member` listens before leaving (the whole track if they stay)."""
        i = self.members.index(member)
        like = (float(self.expected_matrix([hearing])[0, i]) - 1.0) / 4.0
        if rng.random() < 0.04 or rng.random() < 0.05 + 0.9 * like**2:
            return float(duration_s)
        stay = rng.exponential(member.patience * (0.3 + 2.0 * like))
        return float(min(duration_s, max(0.5, stay)))

    def will_upload(self, member: EarMember, rng: np.random.Generator) -> bool:
        return bool(rng.random() < member.upload_rate)

    def make_upload(self, member: EarMember, rng: np.random.Generator, seconds: float = 20.0,
                    n_candidates: int = 6, cache_dir: Path | None = None) -> np.ndarray:
        """The song (of `seconds`) `member` likes best among a few: starter-corpus songs, or
        songs for voices when the community has the outside style."""
        from model.scores import score_corpus

        seed = int(rng.integers(10**8, 2 * 10**8))
        if self.outside is not None:
            audio = outside_clips(n_candidates, seed, seconds, cache_dir)
        else:
            audio, _ = score_corpus(n_candidates, seed, seconds, SR, cache_dir)
        hearings = [hear(a) for a in audio]
        i = self.members.index(member)
        return audio[int(self.expected_matrix(hearings)[:, i].argmax())]


# --- a style the corpus lacks ------------------------------------------------------------

OUTSIDE_PROGRAMS = (52, 53)  # GM choir aahs, voice oohs: no instrument family of the corpus
OUTSIDE_SOURCES = ("chorale", "folk", "classical")  # the tunes they sing
OUTSIDE_TASTE = 1.0  # how much liking a clip at the songs' centre adds, against a far one
NEARNESS_SHRINK = 0.1  # covariance shrinkage toward its mean variance (71 features, 96 songs)
NEARNESS_SLOPE = 2.0  # nearness = 1 / (1 + (d2 / ref) ** slope): a corpus clip ~0.1
OUTSIDE_SEED = 72_000_011


def outside_clips(n: int, seed: int, seconds: float = 5.0, cache_dir: Path | None = None
                  ) -> np.ndarray:
    """n clips of corpus tunes arranged for voices: (n, seconds * SR)."""
    from model.scores import catalogue, render_sources

    tunes = [t for style in OUTSIDE_SOURCES for _, ids in catalogue()[style] for t in ids]
    rng = np.random.default_rng([seed, 0x0575])
    audio = np.zeros((0, int(seconds * SR)), np.float32)
    while len(audio) < n:  # a tune that fails to render is skipped: draw more
        pick = [tunes[i] for i in rng.choice(len(tunes), n - len(audio), replace=False)]
        more, _, _ = render_sources(pick, int(rng.integers(2**31)), seconds, SR, 1,
                                    cache_dir, OUTSIDE_PROGRAMS)
        audio = np.concatenate([audio, more])
    return audio[:n]


def _d2(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of x."""
    d = x - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


@dataclass
class StyleNearness:
    """How near a clip sounds to the outside style's songs: a Gaussian over the ear's
    standardised summary of songs for voices (a shrunk covariance), read as a Mahalanobis
    distance. Not a discriminator against the corpus: a clip is liked for sounding like the
    songs, not for sounding unlike the corpus along one direction (which a voices-against-
    corpus regression rewarded, and which moved tracks away from the songs)."""

    ear: Ear
    mean: np.ndarray  # (features,)
    precision: np.ndarray  # (features, features)
    ref: float  # the median held-out song's squared distance: nearness 1/2
    auc: float  # held-out: P(a song sounds nearer than a corpus clip)

    def nearness(self, hearings: list[Hearing]) -> np.ndarray:
        """0..1 per clip: 1 at the songs' centre, 1/2 as far as a typical new song."""
        d2 = _d2(self.ear.standardise(hearings), self.mean, self.precision)
        return 1.0 / (1.0 + (d2 / self.ref) ** NEARNESS_SLOPE)

    @staticmethod
    def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cov = np.cov(x, rowvar=False)
        shrunk = (1 - NEARNESS_SHRINK) * cov + NEARNESS_SHRINK * np.trace(cov) / len(cov) * \
            np.eye(len(cov))
        return x.mean(0), np.linalg.inv(shrunk)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, precision=self.precision, ref=self.ref, auc=self.auc)

    @classmethod
    def load(cls, ear: Ear, path: Path) -> StyleNearness:
        d = np.load(path)
        return cls(ear, d["mean"], d["precision"], float(d["ref"]), float(d["auc"]))

    @classmethod
    def train(cls, ear: Ear, cache_dir: Path | None = None, n: int = 96,
              seed: int = OUTSIDE_SEED) -> StyleNearness:
        """Fit on n songs for voices; calibrate and check on held-out songs and corpus clips,
        then refit the Gaussian on all songs (the calibration stays held-out)."""
        path = cache_dir / f"style-nearness-{seed}-{n}.npz" if cache_dir else None
        if path is not None and path.is_file():
            return cls.load(ear, path)
        from model.scores import score_corpus

        def summary(audio: np.ndarray) -> np.ndarray:
            return ear.standardise([hear(a) for a in audio])

        songs = summary(outside_clips(n, seed, 5.0, cache_dir))
        corpus = summary(score_corpus(n, seed, 5.0, SR, cache_dir)[0])
        order = np.random.default_rng(seed).permutation(n)
        test, fit = order[: n // 4], order[n // 4:]
        fitted = cls._fit(songs[fit])
        held, far = _d2(songs[test], *fitted), _d2(corpus, *fitted)
        auc = float(np.mean(held[:, None] < far[None]))
        nearness = cls(ear, *cls._fit(songs), float(np.median(held)), auc)
        log.info("style nearness: held-out AUC %.2f, corpus clips %.1fx as far as songs",
                 auc, float(np.median(far) / np.median(held)))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            nearness.save(path)
        return nearness


# The style nearness the simulation uses: trained by `python -m bot.experiment.ear --style`
# (96 songs for voices, checked against 96 corpus clips) and shipped.
SHIPPED_STYLE = Path(__file__).parent / "voices.npz"


def load_style_nearness(ear: Ear, cache_dir: Path | None = None) -> StyleNearness:
    if SHIPPED_STYLE.is_file():
        return StyleNearness.load(ear, SHIPPED_STYLE)
    return StyleNearness.train(ear, cache_dir)


# The ear the simulation uses: trained by `python -m bot.experiment.ear` (1,024 clips, about
# two minutes) and shipped, so a first simulation does not render a corpus for it.
SHIPPED_EAR = Path(__file__).parent / "ear.npz"


def load_ear(cache_dir: Path | None = None) -> Ear:
    """The shipped ear, or one trained (and cached) when it is missing."""
    if SHIPPED_EAR.is_file():
        return Ear.load(SHIPPED_EAR)
    return train_ear(1024, cache_dir)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Train the simulated community's ear.")
    ap.add_argument("--clips", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=SHIPPED_EAR)
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    ap.add_argument("--style", action="store_true",
                    help="train the shipped style nearness (songs for voices) instead")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    if a.style:
        nearness = StyleNearness.train(load_ear(), None)
        nearness.save(SHIPPED_STYLE)
        print({"held-out AUC": round(nearness.auc, 3)})  # noqa: T201
        raise SystemExit(0)
    trained = train_ear(a.clips, a.cache_dir)
    trained.save(a.out)
    print({f: round(v, 3) for f, v in trained.accuracy.items()})  # noqa: T201
