"""Does "nearer the songs for voices" mean the same to the community and to the distance?

    python bench/bench_style_distance.py [-n 48]

Issue 11 asks that the feature Frechet distance between generated tracks and a community's
uploads in a style outside the corpus fall. `crowdtune simulate --outside-style`'s
community likes tracks its style detector (bot/experiment/ear.py, a logistic regression of
songs for voices against corpus clips over the ear's summary) hears as vocal. This bench
puts sets of 20-s clips side by side against 64 songs for voices (as the simulation's):
other songs for voices, corpus clips, and the shipped base at fixed seeds asked for uniform
tags, for strings, and for strings in folk style (what the tagger hears in most songs for
voices). Per set: the feature FD (the bot's spectral features, as the simulation's) split
into its mean and covariance terms, the same FD on the ear's standardised summary, and the
detector's mean P(voices). ~10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bot.experiment.ear import OUTSIDE_SEED, hear, load_ear, load_style_detector, outside_clips
from model import tags as tagvocab
from model.features import extract, frechet_distance
from model.pipeline import CrowdtunePipeline
from model.scores import score_corpus

SEED = 90_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("-n", type=int, default=48, help="clips a set")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    ear = load_ear(a.cache_dir)
    detector = load_style_detector(ear, a.cache_dir)

    def read(audio) -> tuple[np.ndarray, np.ndarray, float]:
        heard = [hear(x) for x in audio]
        return (np.stack([extract(x, 16000).vector() for x in audio]),
                (np.stack([h.summary for h in heard]) - ear.mean) / ear.scale,
                float(detector.prob(heard).mean()))

    pipe = CrowdtunePipeline.from_pretrained(a.model).for_generation()

    def asked(tags: Callable[[random.Random], dict[str, str]]) -> list[np.ndarray]:
        return [pipe(seconds=20.0, tags=tags(random.Random(s)),
                     generator=torch.Generator().manual_seed(SEED + s)).audios[0]
                for s in range(a.n)]

    songs = read(outside_clips(64, OUTSIDE_SEED + 1, 20.0, a.cache_dir))
    sets = {
        "other songs for voices": lambda: outside_clips(a.n, OUTSIDE_SEED + 7, 20.0,
                                                        a.cache_dir),
        "corpus clips": lambda: score_corpus(a.n, 555, 20.0, 16000, a.cache_dir)[0],
        "base, uniform tags": lambda: asked(tagvocab.uniform),
        "base, instrument=strings": lambda: asked(
            lambda r: {**tagvocab.uniform(r), "instrument": "strings"}),
        "base, strings + folk": lambda: asked(
            lambda r: {**tagvocab.uniform(r), "instrument": "strings", "style": "folk"}),
    }
    print(f"{a.n} clips of 20 s a set against 64 songs for voices")
    print("| set | feature FD (mean + cov) | ear FD | P(voices) |")
    print("|---|---|---|---|")
    for name, make in sets.items():
        feats, summary, p = read(make())
        fd = frechet_distance(feats, songs[0])
        mean = float(((feats.mean(0) - songs[0].mean(0)) ** 2).sum())
        print(f"| {name} | {fd:.1f} ({mean:.1f} + {fd - mean:.1f}) | "
              f"{frechet_distance(summary, songs[1]):.1f} | {p:.3f} |", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
