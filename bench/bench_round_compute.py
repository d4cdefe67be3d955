"""A round's model work on this machine's best device: fine-tuning, then evaluation.

    python bench/bench_round_compute.py [--steps 150] [--rated 96] [--uploads 20]

What `bench_round.py` times minus the database, the tracks' encoding and the child
processes' start: the two steps that a GPU speeds up, run in this process through the same
functions the round's children call (`model.finetune.finetune`, `model.evaluate.evaluate`),
with the round's default settings. It needs no ffmpeg (the audio is WAV), so it also runs on
a lent GPU machine. Setup (not timed): the shipped base, the corpus pool (cached under
data/cache when it is there), `--rated` synthesised 20-s pieces rated by the simulated
community's expected stars, and `--uploads` 30-s songs its members would share.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bot.experiment.community import Community, make_upload
from model.contracts import EvalSpec, FinetuneSpec, ItemKind, RatedFile, TrainItem
from model.evaluate import evaluate
from model.features import extract
from model.files import write_wav
from model.finetune import finetune
from model.pipeline import best_device
from model.synth import SAMPLE_RATE, corpus
from model.train import install_shipped_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=FinetuneSpec.steps)
    ap.add_argument("--rated", type=int, default=96)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--clips", type=int, default=EvalSpec.clips)
    ap.add_argument("--pool-cache", default="data/cache")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    device = best_device()
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-compute-"))
    try:
        t0 = time.perf_counter()
        base = scratch / "base"
        install_shipped_base(base)
        community = Community(seed=0)
        rng = np.random.default_rng(0)
        audio, _ = corpus(a.rated, seed=90_000, seconds=20.0)
        rated = [RatedFile(str(write_wav(scratch / f"rated{i}.wav", x, SAMPLE_RATE)),
                           community.score(extract(x, SAMPLE_RATE)) - 3.0)
                 for i, x in enumerate(audio)]
        items = []
        for k in range(a.uploads):
            member = community.members[k % len(community.members)]
            song = make_upload(member, rng, seconds=30.0)
            path = str(write_wav(scratch / f"up{k}.wav", song, SAMPLE_RATE))
            items.append(TrainItem(f"upload:{k}", path, 1.0, ItemKind.UPLOAD))
            rated.append(RatedFile(path, 1.0))
        spec = FinetuneSpec(
            parent_dir=str(base), out_dir=str(scratch / "candidate"), items=items, rated=rated,
            steps=a.steps, pool_cache=a.pool_cache, threads=a.threads,
            reward_model_out=str(scratch / "reward_model.json"))
        name = (torch.cuda.get_device_name() if device.type == "cuda"
                else f"{a.threads} torch threads")
        print(f"device {device} ({name}); setup {time.perf_counter() - t0:.0f} s, not timed")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trained = finetune(spec, report=lambda _e: None)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdict = evaluate(EvalSpec(champion_dir=str(base), candidate_dir=spec.out_dir,
                                    rated=rated, reward_model=spec.reward_model_out,
                                    clips=a.clips, threads=a.threads))
        eval_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'fine-tuning':<30} {train_s:7.1f} s  ({a.steps} steps, {a.steps / train_s:.1f} "
          f"steps/s incl. data; reward model r={trained.reward_model_corr})")
    print(f"{'evaluation':<30} {eval_s:7.1f} s  ({a.clips} clips x 2 models)")
    print(f"{'round compute':<30} {train_s + eval_s:7.1f} s")
    print(f"{'verdict':<30} {'promote' if verdict.promote else 'keep'}: {verdict.reason}")
    print(f"{'peak RSS':<30} {rss:7.0f} MB")
    if device.type == "cuda":
        print(f"{'peak GPU memory':<30} {torch.cuda.max_memory_allocated() / 2**20:7.0f} MB")


if __name__ == "__main__":
    main()
