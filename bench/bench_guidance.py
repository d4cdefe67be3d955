"""How closely tracks should follow their tags: per community, and what learning it costs.

    python bench/bench_guidance.py [--communities 0 1 2 3] [--levels 2 3 4.5 6] [-n 96]
                                   [--passes 5] [--reps 40]

1. Per simulated community with its own ear (bot/experiment/ear.py, one per seed): n clips
   from the shipped base, tags drawn as a learnt policy would serve that community (per field
   its favourite value 80% of the time), made at each guidance level on the same seeds; the
   community's noise-free expected stars per level.
2. The guild's tag policy learning the level (bot/core/tag_policy.py, the real code): a pass
   of 96 tracks at the default, then `--passes` passes served by the policy fitted on every
   track so far; each track's reward is its level's measured stars (x `--slope`, normalised
   stars per star) plus noise (`--noise`, the rest of a track's reward). Both measured in a
   full simulation (`crowdtune simulate`, 192 rated tracks): reward sd 0.56, slope 0.85.
   Printed per community: the expected stars per pass, averaged over `--reps` runs, against
   staying at the default.

Measured 2026-12-03 (`--levels 3 4.5 6`; level 2 by a prototype on the same clips; expected
stars at 2 / 3 / 4.5 / 6): community 0: 3.07 / 3.15 / 3.23 / 3.26; 1: 3.16 / 3.13 / 3.05 /
2.95; 2: 3.84 / 3.84 / 3.77 / 3.65; 3: 2.95 / 3.07 / 3.12 / 3.09. Learnt over 3 / 4.5 / 6,
the last of 5 passes against the default 3: +0.088, -0.033, -0.029, +0.031 (the best
level's: +0.11, 0, 0, +0.05): it finds a server that likes strict tags; one that does not
pays for the exploring, most in the first pass (-0.08).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from rated_round import clips, favourite_values, policy_tags

from bot.core.tag_policy import GUIDANCE_FIELD, PolicyConfig, TagPolicy
from bot.experiment.ear import EarCommunity, load_ear
from model.pipeline import CrowdtunePipeline
from model.registry import ModelRegistry
from model.tags import GUIDANCE, GUIDANCE_LEVELS, uniform
from model.train import install_shipped_base

PASS_TRACKS = 96


def learn(stars: dict[float, float], passes: int, slope: float, noise: float, rep: int
          ) -> list[float]:
    """Expected stars per pass while the policy learns the level from noisy rewards."""
    rng, draws = np.random.default_rng(rep), random.Random(rep)
    centre = float(np.mean(list(stars.values())))
    rewarded: list[tuple[dict[str, str], float]] = []
    out = []
    for p in range(passes + 1):
        if p == 0:
            served = [GUIDANCE] * PASS_TRACKS
        else:
            policy = TagPolicy.fit(rewarded, PolicyConfig())
            served = [policy.serve(random.Random(draws.random()))[1] for _ in range(PASS_TRACKS)]
        got = np.array([stars[g] for g in served])
        out.append(float(got.mean()))
        rewarded += [({**uniform(draws), GUIDANCE_FIELD: f"{g:g}"},
                      (s - centre) * slope + rng.normal(0.0, noise))
                     for g, s in zip(served, got, strict=True)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--communities", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--levels", type=float, nargs="+", default=[2.0, *GUIDANCE_LEVELS])
    ap.add_argument("-n", type=int, default=96)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--slope", type=float, default=0.85)
    ap.add_argument("--noise", type=float, default=0.56)
    ap.add_argument("--cache-dir", default="data/cache")
    a = ap.parse_args()
    torch.set_num_threads(2)
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-guidance-"))
    try:
        install_shipped_base(scratch / "models" / "base")
        registry = ModelRegistry(scratch / "models")
        pipe = CrowdtunePipeline.from_pretrained(
            registry.version_dir("g", registry.ensure_guild("g").version))
        ear = load_ear(Path(a.cache_dir))
        print(f"expected stars of {a.n} clips per guidance level (favourite values 80%):")
        print("| community | " + " | ".join(f"{g:g}" for g in a.levels) + " |")
        print("|---" * (len(a.levels) + 1) + "|")
        measured = {}
        for c in a.communities:
            community = EarCommunity(ear, seed=c)
            rng = random.Random(5_000)  # the same tag draws for every community
            favourite = favourite_values(community)
            tags = [policy_tags(rng, favourite) for _ in range(a.n)]
            row = {}
            for g in a.levels:
                pipe_clips = clips(pipe, tags, 5_000, guidance=g)
                row[g] = float(np.mean([community.score(community.hear(x)) for x in pipe_clips]))
            measured[c] = row
            print(f"| {c} | " + " | ".join(f"{row[g]:.3f}" for g in a.levels) + " |", flush=True)
        missing = [g for g in GUIDANCE_LEVELS if g not in a.levels]
        if missing:
            print(f"(no learning run: the policy's levels {missing} were not measured)")
            return
        print(f"\nthe policy learning the level over {GUIDANCE_LEVELS}, {a.reps} runs each "
              f"(expected stars per pass of {PASS_TRACKS}; pass 0 at the default {GUIDANCE:g}):")
        for c, row in measured.items():
            stars = {g: row[g] for g in GUIDANCE_LEVELS}
            mean = np.mean([learn(stars, a.passes, a.slope, a.noise, k) for k in range(a.reps)],
                           axis=0)
            best = max(stars.values()) - stars[GUIDANCE]
            print(f"community {c}: " + ", ".join(f"{x:.3f}" for x in mean)
                  + f"; last pass against the default {mean[-1] - stars[GUIDANCE]:+.3f} "
                  f"(the best level's {best:+.3f})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
