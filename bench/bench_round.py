"""One weekly round on a week of feedback: wall time and peak memory.

    python bench/bench_round.py [--tracks 200] [--uploads 20] [--seconds 20]

Setup (not timed): a scratch data folder with the base model, `--tracks` generated tracks
rated and listened to by a simulated community of 12, and `--uploads` 30-second songs
uploaded through the real ingest path, and the corpus pool that `crowdtune pretrain` builds
once (its time is printed apart). Then `RoundService.run_round` is timed: training set,
fine-tuning child, evaluation child, promotion, report. Peak memory is the largest resident
set of this process and of its children (the training and evaluation processes).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.core.audio import encode
from bot.core.config import BotSettings, load_settings
from bot.core.services import Services
from bot.experiment.community import Community, listen_seconds, make_upload
from model.codec import MelConfig
from model.corpus_pool import load_pool, pool_corpus
from model.features import extract
from model.finetune import load_audio
from model.registry import ModelRegistry

GUILD = "bench"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="data/models/base")
    ap.add_argument("--tracks", type=int, default=200)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-round-"))
    settings = load_settings(None, BotSettings, data_dir=scratch, track_seconds=a.seconds)
    registry = ModelRegistry(settings.models_dir)
    shutil.copytree(a.base, registry.base_dir)
    t0 = time.perf_counter()
    load_pool(settings.finetune_replay_clips, mel=MelConfig.load(registry.base_dir / "mel"),
              cache_dir=settings.cache_dir, corpus=pool_corpus(registry.base_dir))
    pool_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    community = Community(seed=0)
    try:
        async with await Services.open(settings) as services:
            t0 = time.perf_counter()
            tracks = await services.tracks.generate_mix(GUILD, a.tracks, seed=0)
            feedback = services.feedback
            feats = [extract(load_audio(t.path, 16000), 16000) for t in tracks]
            stars = community.rate_tracks(feats, rng)
            for i, (t, f) in enumerate(zip(tracks, feats, strict=True)):
                for j, m in enumerate(community.members):
                    if rng.random() < 0.7:
                        await feedback.record_vote(t.track_id, m.id, int(stars[i, j]))
                        await feedback.record_listen(t.track_id, m.id, 1e9 + i, 0.0,
                                                     listen_seconds(m, f, t.duration_s, rng),
                                                     True)
            uploads = services.uploads
            for k in range(a.uploads):
                member = community.members[k % len(community.members)]
                path = encode(make_upload(member, rng, seconds=30.0), 16000,
                              scratch / f"up{k}.mp3", "mp3")
                await uploads.ingest(GUILD, str(member.id), path, f"song {k}.mp3")
            print(f"setup: {a.tracks} tracks of {a.seconds:.0f} s, {a.uploads} uploads "
                  f"({time.perf_counter() - t0:.0f} s, not timed)")
            services.compute.close()  # the round's children get the memory
            t0 = time.perf_counter()
            summary = await services.rounds.run_round(GUILD)
            wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{'corpus pool (once, untimed)':<28} {pool_s:.0f} s")
    print(f"{'round status':<28} {summary.status} ({summary.reason})")
    print(f"{'counts':<28} {summary.counts}")
    print(f"{'wall time':<28} {wall:.0f} s ({wall / 60:.1f} min)")
    train_s = summary.metrics.train.seconds if summary.metrics else "-"
    print(f"{'  of which fine-tuning':<28} {train_s} s")
    print(f"{'peak RSS, this process':<28} {own:.0f} MB")
    print(f"{'peak RSS, largest child':<28} {kids:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
