"""Procedural music synthesiser: the starter corpus the built-in base model learns from.

Every piece is drawn from recorded `PieceParams` (tempo, key and scale, register, timbre,
brightness, rhythmic density, drums, bass) with a seeded generator, so the same seed always
renders the same audio. The simulated community later uses these parameters as the
"ground truth" of what the reference music sounds like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16000
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "blues": (0, 3, 5, 6, 7, 10),
}
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (0, 0, 3, 4))


@dataclass(frozen=True)
class PieceParams:
    seed: int
    seconds: float
    tempo_bpm: float  # 60..160
    key: int  # tonic pitch class 0..11
    scale: str
    register: int  # MIDI note of the melody's lowest tonic
    brightness: float  # 0 (dark, few weak partials) .. 1 (bright, many strong partials)
    harmonics: int  # partial count of the lead instrument
    attack_s: float
    decay_s: float  # time constant of the note's exponential decay
    density: float  # lead notes per beat
    drums: bool
    bass: bool

    def to_dict(self) -> dict:
        return asdict(self)


def random_params(seed: int, seconds: float = 5.0) -> PieceParams:
    rng = np.random.default_rng(seed)
    return PieceParams(
        seed=seed,
        seconds=seconds,
        tempo_bpm=float(rng.uniform(60, 160)),
        key=int(rng.integers(0, 12)),
        scale=str(rng.choice(list(SCALES))),
        register=int(rng.integers(48, 77)),
        brightness=float(rng.uniform(0, 1)),
        harmonics=int(rng.integers(2, 13)),
        attack_s=float(rng.uniform(0.003, 0.08)),
        decay_s=float(rng.uniform(0.08, 0.8)),
        density=float(rng.choice([0.5, 1.0, 2.0, 3.0, 4.0])),
        drums=bool(rng.random() < 0.6),
        bass=bool(rng.random() < 0.7),
    )


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _tone(
    hz: float, dur: float, harmonics: int, rolloff: float, attack: float, decay: float,
    rng: np.random.Generator,
) -> np.ndarray:
    n = max(1, int((dur + 0.05) * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    ks = np.arange(1, harmonics + 1)
    ks = ks[hz * ks < SAMPLE_RATE * 0.45]  # stay below Nyquist
    amps = ks.astype(np.float64) ** -rolloff
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    wave = (amps[:, None] * np.sin(2 * np.pi * hz * ks[:, None] * t + phases[:, None])).sum(0)
    env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    release = np.clip((dur + 0.05 - t) / 0.05, 0.0, 1.0)  # short fade at the note's end
    return wave * env * release / amps.sum()


def _drum(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":
        t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
        freq = 45 + 110 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.exp(-t / 0.09)
    if kind == "snare":
        t = np.arange(int(0.2 * SAMPLE_RATE)) / SAMPLE_RATE
        noise = rng.standard_normal(len(t))
        body = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04)
        return 0.5 * noise * np.exp(-t / 0.06) + 0.5 * body
    t = np.arange(int(0.06 * SAMPLE_RATE)) / SAMPLE_RATE  # closed hi-hat: high-passed noise
    noise = np.diff(rng.standard_normal(len(t) + 1))
    return 0.35 * noise * np.exp(-t / 0.015)


def _add(buf: np.ndarray, at: float, sound: np.ndarray, gain: float) -> None:
    i = int(at * SAMPLE_RATE)
    if i >= len(buf):
        return
    j = min(len(buf), i + len(sound))
    buf[i:j] += gain * sound[: j - i]


def render(p: PieceParams) -> np.ndarray:
    """Render a piece to a mono float32 waveform at 16 kHz, peak-normalised to 0.9."""
    rng = np.random.default_rng(p.seed + 7_919)
    out = np.zeros(int(p.seconds * SAMPLE_RATE), dtype=np.float64)
    beat = 60.0 / p.tempo_bpm
    scale = SCALES[p.scale]
    rolloff = 0.6 + (1.0 - p.brightness) * 2.4
    progression = PROGRESSIONS[p.seed % len(PROGRESSIONS)]

    def pitch(degree: int, base: int) -> int:
        octave, step = divmod(degree, len(scale))
        return base + p.key + 12 * octave + scale[step]

    # Lead melody: a bounded random walk on the scale, on a grid of `density` notes per beat.
    step_s = beat / p.density
    degree, t = 0, 0.0
    span = 2 * len(scale)
    while t < p.seconds:
        if rng.random() < 0.85:
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, span))
            dur = step_s * rng.uniform(0.6, 1.0)
            note = pitch(degree, p.register - p.key % 12)
            _add(out, t, _tone(_midi_hz(note), dur, p.harmonics, rolloff, p.attack_s,
                               p.decay_s, rng), 0.5)
        t += step_s

    if p.bass:  # one root note per bar (4 beats), two octaves below the lead
        for bar, t in enumerate(np.arange(0, p.seconds, 4 * beat)):
            root = pitch(progression[bar % len(progression)], p.register - 24 - p.key % 12)
            _add(out, t, _tone(_midi_hz(root), 4 * beat * 0.9, 4, 2.0, 0.01, 1.2, rng), 0.45)

    if p.drums:
        for i, t in enumerate(np.arange(0, p.seconds, beat / 2)):  # eighth notes
            if i % 4 == 0:
                _add(out, t, _drum("kick", rng), 0.8)
            elif i % 4 == 2:
                _add(out, t, _drum("snare", rng), 0.5)
            _add(out, t, _drum("hat", rng), 0.3)

    peak = np.abs(out).max()
    return (out * (0.9 / peak if peak > 0 else 1.0)).astype(np.float32)


def corpus(n: int, seed: int = 0, seconds: float = 5.0) -> tuple[np.ndarray, list[PieceParams]]:
    """n pieces from consecutive seeds: (n, samples) float32 audio and their parameters."""
    params = [random_params(seed + i, seconds) for i in range(n)]
    return np.stack([render(p) for p in params]), params
