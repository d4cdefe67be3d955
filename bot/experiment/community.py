"""A simulated Discord community for the offline experiment (`crowdtune simulate`).

Members have hidden tastes over what a track *sounds like*: every judgement starts from
`model.features.extract(audio)`, never from a track's metadata, so the only way to earn
better ratings is to make audio that sounds like what the community likes.

The community's taste (the "genre" it converges on): bright-ish, fairly busy, mid-register
music with a ticking hi-hat -- the upper middle of what the starter corpus covers, not its
edge. Four perceptual coordinates are read from the features (see `perceive`):

    coordinate  feature                   centre  width  starter corpus (5 / 50 / 95 %)
    brightness  log2(centroid_hz / 500)   +0.25   1.3    -1.8 / -0.1 / +1.3  (~600 Hz)
    busyness    onset_rate, per second     4.6    3.0     1.0 /  4.0 /  6.4
    register    register_midi             58     10      51   / 59   / 72
    percussion  band_std_db[-1], dB       21     15       0   / 17   / 27   (4.7-8 kHz band
                                                          flickering: hi-hats; ~1 without)

tempo_bpm is left out on purpose: its autocorrelation estimate barely tracks the rendered
tempo on this corpus (correlation ~0.1), and a member cannot like what they cannot hear.

Why it cannot be gamed (a prototype with a linear "brighter and busier is better" taste
rated an untrained, noisy model 4.9 stars):

- Taste is a peak, not a slope: liking = exp(-0.5 * d2 ** 1.5), d2 the squared distance from
  the member's own centre in widths -- a flat-topped bump with steep sides, so "more" past
  the centre is rated *down* (max-brightness, max-register, max-density renders of the
  genre get ~2.0 stars against ~4.4 for the genre itself).
- Quality gates multiply the part of a rating above one star, so whatever the taste says,
  noise-like audio (spectral flatness of the non-silent frames, hiss in the top band,
  flat band envelopes), near-silent audio (loudness, silence_frac) and too-loud audio
  (loudness near full scale: clipping, saturation) end at one star even for generous members.
  Clipping is seen through what it does to the features (near 0 dBFS loudness, harmonics
  filling the top band); the features hold no crest factor.

Members' centres scatter around the shared community centre (0.3 of a width per
coordinate), so there is a common taste to learn and still individual disagreement.
Calibration on real synthesised audio (tests/test_community.py, seed-0 community): white
noise, silence, clipped audio 1.0 star; random starter-corpus pieces 2.9 (sd 1.2 across
pieces; 2.6-2.9 for community seeds 0-4); corpus pieces within half a width of the centre
4.3; 20-s uploads 4.3 (4.65 by their own uploader). Note for the experiment: the codec's
Griffin-Lim round trip alone costs ~0.3 star on corpus pieces (phase smear adds onsets and
fills the hi-hat gaps), so even a perfect model scores a little below its training data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from bot.core.domain import MAX_STARS, MIN_STARS
from model.features import AudioFeatures, extract
from model.synth import SAMPLE_RATE, SCALES, PieceParams, render

log = logging.getLogger(__name__)

TASTE_FEATURES = ("brightness", "busyness", "register", "percussion")
COMMUNITY_CENTRE = np.array([0.25, 4.6, 58.0, 21.0])
COMMUNITY_WIDTH = np.array([1.3, 3.0, 10.0, 15.0])
# Liking = exp(-0.5 * d2**TAIL), d2 the squared width-scaled distance: > 1 gives a flatter top
# and steeper sides than a Gaussian, so "near enough" is liked and "far beyond" is not.
TAIL = 1.5
CENTRE_SCATTER = 0.3  # members' centres: community centre + N(0, scatter * width)

# Quality gates: logistic (centre, scale) on one derived feature each; see `quality`.
NOISE_GATE = (0.22, 0.035)  # flatness of the non-silent frames (white noise ~0.56)
HISS_GATE = (-16.0, 2.5)  # top band's mean level vs the loudest band, dB (noise ~-1)
STEADY_GATE = (6.5, 0.8)  # mean band_std_db: music moves, noise is flat (~3)
QUIET_GATE = (-45.0, 2.5)  # loudness_db below this is near silence
LOUD_GATE = (-6.0, 0.8)  # loudness_db above this: clipped/saturated (corpus max ~-9)
SILENT_GATE = (0.5, 0.07)  # silence_frac above this is mostly silence


@dataclass(frozen=True)
class Member:
    """One simulated member; their taste is hidden from the bot."""

    id: int
    centre: tuple[float, ...]  # preferred value per TASTE_FEATURES
    width: tuple[float, ...]  # how far from the centre they still like it
    bias: float  # stars added to every rating: < 0 harsh, > 0 generous
    scale: float  # how far from 3 stars their ratings swing (1 = uses the whole scale)
    noise: float  # sd of a rating's noise, in stars
    patience: float  # seconds they give a track they do not like before leaving, on average
    upload_rate: float  # chance of sharing a song when asked (once per round)


@dataclass(frozen=True)
class _Region:
    """The community's genre in synthesiser parameters, the inverse of the feature centre.

    Measured: renders drawn here (drums and bass on) land near COMMUNITY_CENTRE. The melody
    register is high because register_midi moves only ~0.3 per semitone of it: the bass is
    part of the power-weighted pitch.
    """

    tempo_bpm: tuple[float, float] = (100.0, 150.0)
    register: tuple[int, int] = (62, 72)
    brightness: tuple[float, float] = (0.5, 0.95)
    harmonics: tuple[int, int] = (4, 9)
    density: tuple[float, ...] = (2.0, 3.0)


REGION = _Region()


def perceive(features: AudioFeatures) -> np.ndarray:
    """The four taste coordinates (TASTE_FEATURES) of one clip."""
    return np.array([
        np.log2(max(features.centroid_hz, 1.0) / 500.0),
        features.onset_rate,
        features.register_midi,
        features.band_std_db[-1],
    ])


def in_taste_region(features: AudioFeatures, radius: float = 0.5) -> bool:
    """Whether a clip sounds like the community's genre: every taste coordinate within
    `radius` community widths of the centre (the audio, not its parameters, decides)."""
    z = (perceive(features) - COMMUNITY_CENTRE) / COMMUNITY_WIDTH
    return bool(np.all(np.abs(z) <= radius))


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _gate(value: float, gate: tuple[float, float], above_is_bad: bool = True) -> float:
    centre, scale = gate
    z = (value - centre) / scale
    return float(_sigmoid(-z if above_is_bad else z))


def quality(features: AudioFeatures) -> float:
    """0..1: how acceptable the clip is as music at all, whatever anyone's taste."""
    f = features
    sil = min(f.silence_frac, 0.99)
    # Silent frames have flatness 1 by definition; undo them so gappy music is not "noise".
    flat = max(0.0, (f.flatness - sil) / (1.0 - sil))
    steadiness = float(np.mean(f.band_std_db))
    q = (
        _gate(flat, NOISE_GATE)
        * _gate(f.band_mean_db[-1], HISS_GATE)
        * _gate(steadiness, STEADY_GATE, above_is_bad=False)
        * _gate(f.loudness_db, QUIET_GATE, above_is_bad=False)
        * _gate(f.loudness_db, LOUD_GATE)
        * _gate(f.silence_frac, SILENT_GATE)
    )
    return q if np.isfinite(q) else 0.0  # NaN features (broken audio) are not music


def _liking(z: np.ndarray) -> np.ndarray:
    """Taste bump over width-scaled offsets z (last axis: TASTE_FEATURES) -> [0, 1]."""
    return np.exp(-0.5 * np.sum(z * z, axis=-1) ** TAIL)


def _stars_from(u: np.ndarray, q: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                eps: np.ndarray | float = 0.0) -> np.ndarray:
    """Continuous stars: taste u in [0, 1] -> member's scale, then the quality gate."""
    u = np.nan_to_num(u, nan=0.0)
    raw = 3.0 + scale * (4.0 * u - 2.0) + bias + eps
    # The gate scales only what is above one star: bad audio is one star for everyone.
    return np.clip(1.0 + q * np.maximum(raw - 1.0, 0.0), MIN_STARS, MAX_STARS)


def utility(member: Member, features: AudioFeatures) -> float:
    """0..1: how much `member` likes what the clip sounds like (taste only, no quality)."""
    z = (perceive(features) - np.asarray(member.centre)) / np.asarray(member.width)
    return float(_liking(z))


def expected_stars(member: Member, features: AudioFeatures) -> float:
    """Noise-free continuous rating in [1, 5]."""
    return float(_stars_from(np.float64(utility(member, features)), quality(features),
                             member.scale, member.bias))


def rate(member: Member, features: AudioFeatures, rng: np.random.Generator) -> int:
    """One star rating 1..5 (taste, quality, personal bias and scale, noise)."""
    s = _stars_from(np.float64(utility(member, features)), quality(features), member.scale,
                    member.bias, rng.normal(0.0, member.noise))
    return int(np.clip(np.rint(s), MIN_STARS, MAX_STARS))


def listen_seconds(member: Member, features: AudioFeatures, duration_s: float,
                   rng: np.random.Generator) -> float:
    """Seconds `member` listens before leaving (duration_s if they stay to the end)."""
    like = (expected_stars(member, features) - 1.0) / 4.0
    # Some people leave the tab open whatever plays: listening is a noisier signal than stars.
    if rng.random() < 0.04:
        return float(duration_s)
    if rng.random() < 0.05 + 0.9 * like**2:
        return float(duration_s)
    stay = rng.exponential(member.patience * (0.3 + 2.0 * like))
    return float(min(duration_s, max(0.5, stay)))


def will_upload(member: Member, rng: np.random.Generator) -> bool:
    """Whether `member` shares a song this round."""
    return bool(rng.random() < member.upload_rate)


# --- synthesiser parameters near a taste -------------------------------------------------

def in_preferred_region(p: PieceParams) -> bool:
    """Whether starter-corpus parameters fall in the community's genre (see `_Region`)."""
    r = REGION
    return (p.drums and p.bass and r.tempo_bpm[0] <= p.tempo_bpm <= r.tempo_bpm[1]
            and r.register[0] <= p.register <= r.register[1]
            and r.brightness[0] <= p.brightness <= r.brightness[1]
            and p.density in r.density)


# How the taste coordinates move per unit of (register, brightness, tempo_bpm, density):
# a least-squares fit over 300 drums+bass renders (R^2 0.5-0.8). Rows: TASTE_FEATURES.
_PARAM_JACOBIAN = np.array([
    [0.041, 0.586, 0.0024, 0.078],
    [-0.027, -0.418, 0.0115, 0.651],
    [0.315, -5.06, -0.016, 1.24],
    [-0.350, -1.02, -0.023, -0.743],
])
_PARAM_SPAN = np.array([10.0, 0.45, 50.0, 1.0])  # the region's spread: ridge scale per param
_DENSITIES = (0.5, 1.0, 2.0, 3.0, 4.0)  # the corpus's note densities


def _param_shift(member: Member) -> np.ndarray:
    """Parameter shift that moves the region's sound toward `member`'s centre (ridge LSQ)."""
    target = (np.asarray(member.centre) - COMMUNITY_CENTRE) / COMMUNITY_WIDTH
    a = _PARAM_JACOBIAN * _PARAM_SPAN / COMMUNITY_WIDTH[:, None]  # in widths per span
    ridge = 0.5 * np.eye(a.shape[1])
    step = np.linalg.solve(a.T @ a + ridge, a.T @ target)
    return step * _PARAM_SPAN


def preferred_params(rng: np.random.Generator, seconds: float = 5.0,
                     member: Member | None = None) -> PieceParams:
    """Random parameters from the community's genre, shifted toward `member`'s own centre.

    The shift is linear and rough (`_param_shift`); `best_params` then picks by what the
    candidates actually sound like.
    """
    r = REGION
    d_reg, d_bright, d_tempo, d_dens = _param_shift(member) if member else np.zeros(4)
    register = int(np.clip(round(rng.uniform(*r.register) + d_reg), 48, 76))
    brightness = float(np.clip(rng.uniform(*r.brightness) + d_bright, 0.0, 1.0))
    tempo = float(np.clip(rng.uniform(*r.tempo_bpm) + d_tempo, 60.0, 160.0))
    dens = float(rng.choice(r.density)) + d_dens
    density = min(_DENSITIES, key=lambda d: abs(d - dens))
    return PieceParams(
        seed=int(rng.integers(0, 2**31 - 1)),
        seconds=float(seconds),
        tempo_bpm=tempo,
        key=int(rng.integers(0, 12)),
        scale=str(rng.choice(list(SCALES))),
        register=register,
        brightness=brightness,
        harmonics=int(rng.integers(r.harmonics[0], r.harmonics[1] + 1)),
        attack_s=float(rng.uniform(0.003, 0.04)),
        decay_s=float(rng.uniform(0.15, 0.6)),
        density=density,
        drums=True,
        bass=True,
    )


def _best_render(member: Member, candidates: Sequence[PieceParams],
                 preview_s: float | None) -> tuple[PieceParams, np.ndarray]:
    """The liked-most candidate and the audio it was judged on."""
    best: tuple[float, PieceParams, np.ndarray] | None = None
    for p in candidates:
        audio = render(p if preview_s is None else replace(p, seconds=min(p.seconds, preview_s)))
        liking = expected_stars(member, extract(audio, SAMPLE_RATE))
        if best is None or liking > best[0]:
            best = (liking, p, audio)
    if best is None:
        raise ValueError("no candidates")
    return best[1], best[2]


def best_params(member: Member, candidates: Sequence[PieceParams],
                preview_s: float | None = None) -> PieceParams:
    """The candidate `member` likes most, judged on its rendered audio (the first
    `preview_s` seconds if given: cheaper, but short clips' features are noisier)."""
    return _best_render(member, candidates, preview_s)[0]


def make_upload(member: Member, rng: np.random.Generator, seconds: float = 20.0,
                n_candidates: int = 8) -> np.ndarray:
    """A song `member` would share (16 kHz mono float32): the best of `n_candidates`
    renders near their taste. Members share what they like, so uploads are positives the
    model can learn from. About 60 ms per candidate for 20 s on one core.
    """
    candidates = [preferred_params(rng, seconds, member) for _ in range(n_candidates)]
    chosen, audio = _best_render(member, candidates, None)  # full renders: judged as heard
    log.debug("member %d uploads %s", member.id, chosen)
    return audio


# --- the community -----------------------------------------------------------------------

class Community:
    """`n_members` members drawn reproducibly from `seed` around one shared taste."""

    def __init__(self, seed: int = 0, n_members: int = 12, first_id: int = 1001) -> None:
        if n_members < 1:
            raise ValueError("n_members must be >= 1")
        rng = np.random.default_rng(seed)
        k = len(TASTE_FEATURES)
        centres = COMMUNITY_CENTRE + rng.normal(0.0, CENTRE_SCATTER, (n_members, k)) \
            * COMMUNITY_WIDTH
        widths = COMMUNITY_WIDTH * rng.uniform(0.8, 1.25, (n_members, k))
        self.seed = seed
        self.members: tuple[Member, ...] = tuple(
            Member(
                id=first_id + i,
                centre=tuple(float(c) for c in centres[i]),
                width=tuple(float(w) for w in widths[i]),
                bias=float(np.clip(rng.normal(0.0, 0.4), -0.8, 0.8)),
                scale=float(np.exp(rng.normal(0.0, 0.15))),
                noise=float(rng.uniform(0.35, 0.75)),
                patience=float(rng.uniform(6.0, 25.0)),
                upload_rate=float(rng.uniform(0.05, 0.35)),
            )
            for i in range(n_members)
        )
        # Arrays for rating many tracks at once.
        self._centre = np.array([m.centre for m in self.members])
        self._width = np.array([m.width for m in self.members])
        self._scale = np.array([m.scale for m in self.members])
        self._bias = np.array([m.bias for m in self.members])
        self._noise = np.array([m.noise for m in self.members])
        log.debug("community seed=%d with %d members", seed, n_members)

    def __len__(self) -> int:
        return len(self.members)

    def member(self, member_id: int) -> Member:
        for m in self.members:
            if m.id == member_id:
                return m
        raise KeyError(member_id)

    def _liking_quality(self, features: Sequence[AudioFeatures]) -> tuple[np.ndarray, ...]:
        """Taste (tracks, members) and quality (tracks, 1) of each track."""
        x = np.stack([perceive(f) for f in features])  # (T, K)
        q = np.array([quality(f) for f in features])[:, None]
        return _liking((x[:, None, :] - self._centre[None]) / self._width[None]), q

    def expected_matrix(self, features: Sequence[AudioFeatures]) -> np.ndarray:
        """(tracks, members) noise-free continuous stars."""
        if not features:
            return np.zeros((0, len(self)))
        u, q = self._liking_quality(features)
        return _stars_from(u, q, self._scale[None], self._bias[None])

    def rate_tracks(self, features: Sequence[AudioFeatures],
                    rng: np.random.Generator) -> np.ndarray:
        """(tracks, members) int stars 1..5, the same model as `rate` in one vectorised draw
        (extract each track's features once; ~3 ms for 200 tracks x 12 members)."""
        if not features:
            return np.zeros((0, len(self)), dtype=int)
        u, q = self._liking_quality(features)
        eps = rng.normal(0.0, 1.0, u.shape) * self._noise[None]
        s = _stars_from(u, q, self._scale[None], self._bias[None], eps)
        return np.clip(np.rint(s), MIN_STARS, MAX_STARS).astype(int)

    def score(self, features: AudioFeatures) -> float:
        """Expected mean star of the whole community, noise-free."""
        return float(self.expected_matrix([features]).mean())

    # The interface the simulation drives (bot.experiment.ear.EarCommunity has it too).
    def hear(self, audio: np.ndarray) -> AudioFeatures:
        return extract(audio, SAMPLE_RATE)

    def listen_seconds(self, member: Member, features: AudioFeatures, duration_s: float,
                       rng: np.random.Generator) -> float:
        return listen_seconds(member, features, duration_s, rng)

    def will_upload(self, member: Member, rng: np.random.Generator) -> bool:
        return will_upload(member, rng)

    def make_upload(self, member: Member, rng: np.random.Generator, seconds: float = 20.0,
                    cache_dir: object = None) -> np.ndarray:
        return make_upload(member, rng, seconds)


@lru_cache(maxsize=4)
def _default_community(seed: int) -> Community:
    return Community(seed)


def community_score(features: AudioFeatures, community: Community | None = None) -> float:
    """Expected mean star of `community` (default: the seed-0 community), noise-free."""
    return (community or _default_community(0)).score(features)
