"""What the reward model should read: spectral statistics, the tagger's embedding, or both.

    python bench/bench_reward_inputs.py [--model data/models/base] [-n 96] [--members 12]
                                        [--community ear|features] [--seed 0]

The base model makes n clips (one 5-s window each) with uniform tags; a simulated community
(bot/experiment: the one with its own ear by default) rates them, 70% of members per clip;
rewards come from the bot's own code (bot/core/rewards.py). For each input set of
model/reward_model.py it prints:
- held-out r: grouped 5-fold correlation of predicted and actual rewards (what a round
  reports);
- transfer r: correlation of its predictions on the 512 starter-corpus clips fine-tuning
  rehearses with the community's noise-free mean stars of those clips (what guided replay
  needs: it picks the clips to rehearse by these predictions);
- the penalty the grid chose, and seconds to fit;
and, as a ceiling for the held-out r, how well the rewards themselves (noisy votes) correlate
with the community's noise-free mean stars of the same clips. With the ear community, also
how often the tagger and the community's ear agree per field, and the r of a reward model
reading the ear's own beliefs.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

from bot.core.rewards import DEFAULT_SETTINGS, Vote, track_rewards
from bot.experiment.community import Community
from bot.experiment.ear import EarCommunity, load_ear
from model.corpus_pool import load_pool
from model.features import extract
from model.finetune import load_listener
from model.pipeline import STEPS, CrowdtunePipeline
from model.reward_model import INPUTS, Heard, RewardModel
from model.tags import VOCAB, uniform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("data/models/base"))
    ap.add_argument("--tagger", type=Path, default=Path("data/models/tagger"))
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    ap.add_argument("-n", type=int, default=96)
    ap.add_argument("--members", type=int, default=12)
    ap.add_argument("--community", choices=("ear", "features"), default="ear")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    pipe = CrowdtunePipeline.from_pretrained(a.model)
    sr = pipe.mel.config.sample_rate
    rng = random.Random(a.seed)
    tags = [uniform(rng) for _ in range(a.n)]
    kept = a.cache_dir / f"bench-reward-clips-{a.n}-{a.seed}-{a.steps}.npy"
    if kept.is_file() and kept.stat().st_mtime > (a.model / "unet").stat().st_mtime:
        audios = list(np.load(kept))  # the same model's clips from an earlier run
    else:
        audios = []
        for start in range(0, a.n, 8):
            k = min(8, a.n - start)
            gen = torch.Generator().manual_seed(a.seed * 10_000 + start)
            audios += pipe(batch_size=k, num_inference_steps=a.steps, generator=gen,
                           tags=tags[start:start + k]).audios
        np.save(kept, np.stack(audios))
    print(f"{a.n} clips in {time.perf_counter() - t0:.0f} s")

    if a.community == "ear":
        community = EarCommunity(load_ear(a.cache_dir), seed=a.seed, n_members=a.members)
        judge = community.hear
    else:
        community = Community(seed=a.seed, n_members=a.members)  # type: ignore[assignment]
        judge = lambda audio: extract(audio, sr)  # noqa: E731
    nrng = np.random.default_rng(a.seed)
    heard_by_members = [judge(x) for x in audios]
    stars = community.rate_tracks(heard_by_members, nrng)  # type: ignore[arg-type]
    present = nrng.random(stars.shape) < 0.7
    votes = [Vote(i, m.id, int(stars[i, j])) for i in range(a.n)
             for j, m in enumerate(community.members) if present[i, j]]
    rewards = track_rewards(votes, [], DEFAULT_SETTINGS)
    y = np.array([rewards[i].reward for i in range(a.n)])

    listener = load_listener(str(a.tagger) if a.tagger.is_dir() else None)
    heard = Heard.concat([listener.audio(x, max_windows=1) for x in audios])
    pool = load_pool(512, cache_dir=a.cache_dir)
    pool_heard = pool.heard(listener)
    pool_audio = listener.codec.decode(pool.images).numpy()
    truth = np.array([community.score(judge(x)) for x in pool_audio])  # type: ignore[arg-type]

    expected = np.array([community.score(h) for h in heard_by_members])  # type: ignore[arg-type]
    ceiling = float(np.corrcoef(y, expected)[0, 1])
    print(f"\n{a.community} community, {a.members} members, {len(votes)} votes on {a.n} clips; "
          f"the rewards' own r with the noise-free scores: {ceiling:.2f} (a ceiling)")
    print("| inputs | held-out r | transfer r (corpus) | alpha | fit s |")
    print("|---|---|---|---|---|")
    for inputs in INPUTS:
        t = time.perf_counter()
        model = RewardModel.fit(heard, y, inputs=inputs)
        fit_s = time.perf_counter() - t
        transfer = float(np.corrcoef(model.predict(pool_heard), truth)[0, 1])
        print(f"| {inputs} | {model.corr:.2f} | {transfer:.2f} | {model.alpha:g} | "
              f"{fit_s:.1f} |")
    if a.community == "ear":
        print_judges(community, heard_by_members, heard, y)


def print_judges(community: EarCommunity, hearings: list, heard: Heard, y: np.ndarray) -> None:
    """How far apart the tagger (what the reward model reads) and the community's ear hear
    the same clips, field by field, and the held-out r of a reward model that read the ear's
    own beliefs instead: a bound that no input set of the bot can reach, and that it would
    be wrong to chase by reading what the ear reads."""
    beliefs = np.asarray(community.ear.beliefs(hearings))
    print("\n| field | tagger and ear agree (top value) | ear's top belief | tagger's |")
    print("|---|---|---|---|")
    col = 0
    for field, values in VOCAB.items():
        b, t = beliefs[:, col:col + len(values)], heard.tags[:, col:col + len(values)]
        print(f"| {field} | {np.mean(b.argmax(1) == t.argmax(1)):.2f} | "
              f"{b.max(1).mean():.2f} | {t.max(1).mean():.2f} |")
        col += len(values)
    empty = heard.embedding[:, :0]
    oracle = RewardModel.fit(Heard(empty, beliefs, heard.spectral[:, :0]), y, inputs="embedding")
    print(f"held-out r of a reward model reading the ear's own beliefs: {oracle.corr:.2f}")


if __name__ == "__main__":
    main()
