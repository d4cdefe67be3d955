"""Full fine-tuning against LoRA adapters of two ranks: one round, same data, same seeds.

    python bench/bench_lora.py [--ranks 4 16] [--steps 300] [--rated 96] [--clips 48]

Setup (not timed): the shipped base as a guild's v0001 in a scratch registry; `--rated` base
clips (uniform tags) rated by the simulated community with its own ear (bot/experiment/
ear.py), their rewards from the bot's own code; the corpus pool (cached under data/cache).
Then, for full fine-tuning and each rank, one fine-tune through `model.finetune.finetune`
(the round's defaults, guided corpus replay) and, per method, printed:
- disk: the stored version (half precision, as the registry keeps it);
- train s: fine-tuning wall time; load s: loading the version (an adapter merges into its
  base); gen s: one 5-s clip, tags asked;
- gain: the community's noise-free mean stars of `--clips` clips from the candidate minus the
  parent's, same seeds and tags (paired), with its standard error.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rated_round import clips, rated_files

from bot.experiment.ear import EarCommunity, load_ear
from model.contracts import FinetuneSpec
from model.finetune import finetune
from model.pipeline import CrowdtunePipeline
from model.registry import ModelRegistry
from model.tags import uniform
from model.train import install_shipped_base


def uniform_clips(pipe: CrowdtunePipeline, n: int, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    return clips(pipe, [uniform(rng) for _ in range(n)], seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rated", type=int, default=96)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--lr", type=float, default=FinetuneSpec.lr)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--cache-dir", default="data/cache")
    a = ap.parse_args()
    torch.set_num_threads(2)
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-lora-"))
    try:
        install_shipped_base(scratch / "models" / "base")
        registry = ModelRegistry(scratch / "models")
        parent_dir = registry.version_dir("g", registry.ensure_guild("g").version)
        parent = CrowdtunePipeline.from_pretrained(parent_dir)
        sr = parent.mel.config.sample_rate
        community = EarCommunity(load_ear(Path(a.cache_dir)), seed=0)
        rated = rated_files(community, uniform_clips(parent, a.rated, 70_000), sr, scratch)
        before = [community.score(community.hear(x))
                  for x in uniform_clips(parent, a.clips, 5_000)]
        print(f"parent: {np.mean(before):.3f} expected stars on {a.clips} clips")
        print("| method | disk MB | train s | load s | gen s (5 s, tags) | gain [se] |")
        print("|---|---|---|---|---|---|")
        for rank in [0, *a.ranks]:
            out = scratch / f"cand-{rank}"
            spec = FinetuneSpec(parent_dir=str(parent_dir), out_dir=str(out), items=[],
                                rated=rated, steps=a.steps, lora_rank=rank,
                                lora_alpha=float(rank) if rank else 8.0,
                                lr=a.lora_lr if rank else a.lr, pool_cache=a.cache_dir,
                                corpus_guided=True)  # as measured
            t = time.perf_counter()
            finetune(spec, report=lambda _e: None)
            train_s = time.perf_counter() - t
            info = registry.add_version("g", out, "v0001", "finetune")
            folder = registry.version_dir("g", info.version)
            disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
            t = time.perf_counter()
            cand = CrowdtunePipeline.from_pretrained(folder)
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            cand(batch_size=1, tags={"instrument": "piano"})
            gen_s = time.perf_counter() - t
            after = [community.score(community.hear(x))
                     for x in uniform_clips(cand, a.clips, 5_000)]
            diff = np.array(after) - np.array(before)
            name = f"LoRA rank {rank}" if rank else "full fine-tuning"
            print(f"| {name} | {disk:.1f} | {train_s:.0f} | {load_s:.2f} | {gen_s:.2f} | "
                  f"{diff.mean():+.3f} [{diff.std(ddof=1) / np.sqrt(len(diff)):.3f}] |",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
