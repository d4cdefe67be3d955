"""Sample quality of a model against the starter corpus, printed as tables.

    python bench/bench_quality.py [--model data/models/base] [-n 64]

- Fréchet distance on hand-made audio features (model/features.py, z-scored by the held-out
  corpus) between n generated clips and n held-out corpus clips, beside the same distance for
  white noise, for the untrained model, and for the corpus after a codec round trip (the
  ceiling a mel model can reach).
- Diversity (mean pairwise feature distance) relative to the corpus's.
- The codec's round-trip spectral convergence, and median spectral flatness and loudness.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from model.codec import MelCodec, spectral_convergence
from model.features import diversity, extract, feature_matrix, frechet_distance
from model.pipeline import STEPS, CrowdtunePipeline
from model.scores import score_corpus
from model.synth import SAMPLE_RATE, corpus
from model.train import make_builtin_pipeline

HELD_OUT_SEED = 10_000_000  # far from the training seeds 0..clips


def generate(pipe: CrowdtunePipeline, n: int, steps: int) -> np.ndarray:
    clips = []
    for start in range(0, n, 16):
        out = pipe(batch_size=min(16, n - start), num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(start))
        clips += out.audios
    return np.stack(clips)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=STEPS)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    pipe = CrowdtunePipeline.from_pretrained(a.model)
    codec: MelCodec = pipe.mel
    # The corpus the model learnt from: tagged real tunes for a tag-conditioned base.
    if pipe.accepts_tags:
        held_out, _ = score_corpus(a.n, HELD_OUT_SEED, codec.config.window_seconds,
                                   codec.config.sample_rate)
    else:
        held_out, _ = corpus(a.n, HELD_OUT_SEED, codec.config.window_seconds)
    round_trip = codec.decode(codec.encode(torch.from_numpy(held_out))[..., : codec.config.x_res])
    round_trip = round_trip.numpy()
    sc = [spectral_convergence(torch.from_numpy(x), torch.from_numpy(y))
          for x, y in zip(held_out, round_trip, strict=True)]
    rng = np.random.default_rng(0)
    sets = {
        "corpus (held out)": held_out,
        "corpus, codec round trip": round_trip,
        "pretrained model": generate(pipe, a.n, a.steps),
        "untrained model": generate(make_builtin_pipeline(codec.config), a.n, a.steps),
        "white noise": (0.1 * rng.standard_normal(held_out.shape)).astype(np.float32),
    }
    feats = {k: feature_matrix(v, SAMPLE_RATE) for k, v in sets.items()}
    ref = feats["corpus (held out)"]
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    z = {k: (f - mu) / sd for k, f in feats.items()}
    # FD of the corpus against itself is 0 by construction; split it to show sampling noise.
    half = a.n // 2
    noise_floor = frechet_distance(z["corpus (held out)"][:half], z["corpus (held out)"][half:])
    ref_div = diversity(z["corpus (held out)"])
    print(f"model {a.model}; {a.n} clips of {codec.config.window_seconds:.0f} s per set, "
          f"{a.steps} sampler steps")
    print(f"codec round-trip spectral convergence: mean {np.mean(sc):.3f}, "
          f"median {np.median(sc):.3f} (0 = perfect)")
    print(f"corpus split-half Fréchet distance (sampling noise): {noise_floor:.2f}\n")
    print(f"{'set':<26} {'Fréchet dist':>12} {'diversity/corpus':>17} {'flatness med':>13} "
          f"{'loudness dBFS':>14} {'centroid Hz':>12} {'onsets/s':>9}")
    for k, v in sets.items():
        fd = 0.0 if k == "corpus (held out)" else frechet_distance(z[k], z["corpus (held out)"])
        per = [extract(x, SAMPLE_RATE) for x in v]
        print(f"{k:<26} {fd:>12.2f} {diversity(z[k]) / ref_div:>17.2f} "
              f"{np.median([p.flatness for p in per]):>13.4f} "
              f"{np.median([p.loudness_db for p in per]):>14.1f} "
              f"{np.median([p.centroid_hz for p in per]):>12.0f} "
              f"{np.median([p.onset_rate for p in per]):>9.2f}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
