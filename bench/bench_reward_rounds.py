"""What limits the reward model round by round: a finished simulation's data refitted.

    python bench/bench_reward_rounds.py SIM_DATA_DIR [--rounds 3] [--cache-dir data/cache]
        [--outside-style] [--factions]

SIM_DATA_DIR is the data folder a `crowdtune simulate` run left (seed 0; the default
community, or the one `--outside-style` or `--factions` names, as the run's). Per round,
the reward model's data as that round built it (the tracks posted before it, with their
rewards, and the uploads) is read through the run's tagger and refitted
(model/reward_model.py), and printed:
- held-out r: what the round reported (grouped 5-fold, uploads included);
- ceiling: how well the tracks' rewards (noisy votes and listening) correlate with the
  community's noise-free expected stars of the same tracks;
- r to the truth: the held-out predictions against those expected stars;
- held-out r per input block (each standardised, its own best penalty): embedding, tags
  (the tagger's probabilities), spectral, and tags with spectral.

Measured 2026-12-07 on `docs/results/default-full-judged/`'s run (2.8 min alone):
round 1: 96 tracks (+2 uploads), held-out r 0.568, ceiling 0.958, r to the truth 0.613;
blocks 0.346 / 0.343 / 0.548 / 0.596. Round 2: 192 (+3), 0.562, 0.959, 0.566; blocks
0.428 / 0.403 / 0.542 / 0.564. Round 3: 288 (+7), 0.615, 0.955, 0.614; blocks 0.562 /
0.496 / 0.576 / 0.609.
The votes are not what limits it: the rewards follow the truth at r 0.96. What limits it
is how the tagger hears generated audio against how the ear does: its probabilities alone
reach 0.34-0.50. Checked on the same data with one-off scripts (not this bench): the truth
is the members' liking of the ear's tag beliefs (r 0.97 at round 2; the quality gate barely
varies among generated tracks); the best of 192 block weightings reached held-out r 0.570
at round 2, an RBF kernel ridge on tags and spectral 0.588: within the scatter between runs
(0.56 here, 0.60 in `default-full-heard-uploads/`).
Measured 2026-12-08 on `docs/results/factions-full-keyed/`'s run (`--factions`): held-out r
0.523 / 0.529 / 0.596 at rounds 1-3, r to the truth 0.591 / 0.585 / 0.684; on
`docs/results/outside-style-even-replay-full/`'s (`--outside-style`): 0.629 / 0.761 /
0.776, r to the truth 0.704 / 0.749 / 0.781 (tracks only: the singing members' uploads do
not inflate it).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
import torch
from rated_round import add_community_flags, sim_community, sim_guild

from bot.core.config import Settings
from bot.core.rewards import RewardSettings
from bot.core.rounds import build_training_set
from model.finetune import load_audio, load_listener, reward_rows
from model.reward_model import (
    ALPHAS,
    RewardModel,
    _folds,
    _held_out_corr,
    held_out_predictions,
)

FOLDS = 5


def block_r(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> float:
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return max(_held_out_corr(z, y, a, fold, FOLDS) for a in ALPHAS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    add_community_flags(ap)
    a = ap.parse_args()
    torch.set_num_threads(2)
    s = Settings(_env_file=None)
    feedback, uploads, starts = asyncio.run(sim_guild(a.data_dir / "crowdtune.sqlite3"))
    listener = load_listener(str(a.data_dir / "models" / "tagger"))
    community = sim_community(a, a.cache_dir)
    sr = listener.codec.config.sample_rate
    upload_files = {u.file for u in uploads}
    for k, start in enumerate(starts[: a.rounds], 1):
        fb = [f for f in feedback if f.track.created_at < start]
        ups = [u for u in uploads if u.created_at < start]
        data = build_training_set(fb, ups, s, RewardSettings(**s.reward), fb, [])
        heard, y, groups = reward_rows(data.rated, listener)
        g = np.asarray(groups)
        model = RewardModel.fit(heard, y, groups=groups)
        fold = _folds(g, FOLDS)
        pred = held_out_predictions((heard.rows("both") - model.mu) / model.sd, y, model.alpha,
                                    fold, FOLDS)
        tracks = [i for i in np.unique(g) if data.rated[i].path not in upload_files]
        truth = np.array([community.score(community.hear(load_audio(data.rated[i].path, sr)))
                          for i in tracks])
        reward = np.array([y[g == i][0] for i in tracks])
        predicted = np.array([pred[g == i].mean() for i in tracks])
        blocks = {"embedding": heard.embedding, "tags": heard.tags,
                  "spectral": heard.spectral, "tags+spectral": np.hstack([heard.tags,
                                                                          heard.spectral])}
        print(f"round {k}: {len(tracks)} tracks (+{len(np.unique(g)) - len(tracks)} uploads); "
              f"held-out r {model.corr:.3f}; ceiling {np.corrcoef(reward, truth)[0, 1]:.3f}; "
              f"r to the truth {np.corrcoef(predicted, truth)[0, 1]:.3f}; blocks "
              + ", ".join(f"{n} {block_r(x, y, fold):.3f}" for n, x in blocks.items()),
              flush=True)


if __name__ == "__main__":
    main()
