"""Does "nearer the songs for voices" mean the same to the community and to the distance?

    python bench/bench_style_distance.py [-n 48] [--seconds 5]

Issue 11 asks that the feature Frechet distance between generated tracks and a community's
uploads in a style outside the corpus fall. `crowdtune simulate --outside-style`'s
community likes tracks by their nearness to songs for voices (bot/experiment/ear.py
`StyleNearness`, a Gaussian over the ear's summary of such songs). This bench puts sets of
clips (5 s, as the simulation's tracks) side by side against 64 songs for voices:
other songs for voices, corpus clips, and the shipped base at fixed seeds asked for uniform
tags, for each instrument, and for strings in folk style (what the tagger hears in most
songs for voices). Per set: the feature FD (the bot's spectral features, as the
simulation's) split into its mean and covariance terms, the same FD on the ear's
standardised summary, and the community's mean nearness (1/2: as near as a typical song).
With -n 24, 17 min for the 12 sets while a simulation shared the 2 cores.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bot.experiment.ear import OUTSIDE_SEED, hear, load_ear, load_style_nearness, outside_clips
from model import tags as tagvocab
from model.features import extract, frechet_distance
from model.pipeline import CrowdtunePipeline
from model.scores import score_corpus

SEED = 90_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("-n", type=int, default=48, help="clips a set")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    ear = load_ear(a.cache_dir)
    nearness = load_style_nearness(ear, a.cache_dir)

    def read(audio) -> tuple[np.ndarray, np.ndarray, float]:
        heard = [hear(x) for x in audio]
        return (np.stack([extract(x, 16000).vector() for x in audio]),
                ear.standardise(heard),
                float(nearness.nearness(heard).mean()))

    pipe = CrowdtunePipeline.from_pretrained(a.model).for_generation()

    def asked(tags: Callable[[random.Random], dict[str, str]]) -> list[np.ndarray]:
        return [pipe(seconds=a.seconds, tags=tags(random.Random(s)),
                     generator=torch.Generator().manual_seed(SEED + s)).audios[0]
                for s in range(a.n)]

    songs = read(outside_clips(64, OUTSIDE_SEED + 1, a.seconds, a.cache_dir))
    sets = {
        "other songs for voices": lambda: outside_clips(a.n, OUTSIDE_SEED + 7, a.seconds,
                                                        a.cache_dir),
        "corpus clips": lambda: score_corpus(a.n, 555, a.seconds, 16000, a.cache_dir)[0],
        "base, uniform tags": lambda: asked(tagvocab.uniform),
        **{f"base, instrument={v}": (lambda v=v: asked(
            lambda r: {**tagvocab.uniform(r), "instrument": v}))
           for v in tagvocab.VOCAB["instrument"]},
        "base, strings + folk": lambda: asked(
            lambda r: {**tagvocab.uniform(r), "instrument": "strings", "style": "folk"}),
    }
    print(f"{a.n} clips of {a.seconds:g} s a set against 64 songs for voices")
    print("| set | feature FD (mean + cov) | ear FD | nearness |")
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
