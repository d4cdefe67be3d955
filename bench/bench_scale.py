"""Rounds per hour for N guilds: this machine's processes against a Ray cluster of one and
of two worker nodes.

    python bench/bench_scale.py [--guilds 4] [--tracks 16] [--steps 40] [--eval-clips 8]
                                [--backends local ray1 ray2]

Setup (not timed): a scratch data folder with the shipped base, the corpus pool (data/cache,
shared read-only), and per guild `--tracks` generated tracks rated by a simulated community.
Each backend then runs every guild's round at once on its own copy of that folder, through
`RoundService` as the scheduler would (all guilds due at the same hour):
- local: one machine, `round_concurrency` 1 (each round uses both cores);
- rayN: a Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head with no CPUs and N
  worker nodes with one CPU each), `CROWDTUNE_COMPUTE=ray`, one torch thread a round, and
  as many rounds admitted at once as there are guilds (Ray queues them by CPU).
Printed per backend: wall time, rounds per hour, mean round latency (fine-tune + evaluation,
as the round records it, with any wait for a free CPU) and CPU-seconds a round (the
backend's CPUs x wall time / rounds); then the scaling ratio from one to two
workers. `--steps` and `--eval-clips` default below the round's (150, 24) so that the
comparison fits in minutes; the per-round cost at the defaults is bench_round.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.core.compute import open_compute
from bot.core.config import BotSettings, load_settings
from bot.core.rounds import RoundService
from bot.core.services import Services
from bot.core.store import Store
from bot.experiment.community import Community
from model.features import extract
from model.finetune import load_audio
from model.registry import ModelRegistry


def settings_for(data: Path, a: argparse.Namespace, **kw) -> BotSettings:
    return load_settings(None, BotSettings, data_dir=data, track_seconds=a.seconds,
                         finetune_steps=a.steps, eval_clips=a.eval_clips,
                         pool_cache_dir=Path(a.cache_dir).resolve(), **kw)


async def prepare(data: Path, a: argparse.Namespace) -> None:
    settings = settings_for(data, a)
    registry = ModelRegistry(settings.models_dir)
    shutil.copytree(a.base, registry.base_dir)
    rng = np.random.default_rng(0)
    community = Community(seed=0)
    async with await Services.open(settings) as services:
        for g in range(a.guilds):
            tracks = await services.tracks.generate_mix(f"g{g}", a.tracks, seed=g * 1000)
            feats = [extract(load_audio(t.path, 16000), 16000) for t in tracks]
            stars = community.rate_tracks(feats, rng)
            for i, t in enumerate(tracks):
                for j, m in enumerate(community.members):
                    if rng.random() < 0.8:
                        await services.feedback.record_vote(t.track_id, m.id, int(stars[i, j]))


async def run_all(data: Path, a: argparse.Namespace, backend: str, cluster) -> dict:
    if backend == "local":
        settings = settings_for(data, a)
    else:
        settings = settings_for(data, a, compute="ray", ray_address=cluster.address,
                                torch_threads=1, round_concurrency=a.guilds)
    compute = open_compute(settings)
    compute.check()
    try:
        async with await Store.open(settings.db_path) as store:
            rounds = RoundService(settings, store, ModelRegistry(settings.models_dir),
                                  compute=compute)
            t0 = time.perf_counter()
            done = await asyncio.gather(*(rounds.run_round(f"g{g}") for g in range(a.guilds)))
            wall = time.perf_counter() - t0
    finally:
        compute.close()
    bad = [s.reason for s in done if s.status != "succeeded"]
    if bad:
        raise SystemExit(f"{backend}: a round did not succeed: {bad[0]}")
    latency = float(np.mean([s.metrics.seconds for s in done if s.metrics]))
    nodes = sorted({s.compute["node"] for s in done})
    # CPU-seconds a round: the CPUs the backend holds over the whole run, per round (a ray
    # round's latency includes its wait for a free CPU, so latency x CPUs would overcount).
    cpus = 2 if backend == "local" else int(backend[3:])
    return {"wall": wall, "per_hour": a.guilds / wall * 3600, "latency": latency,
            "cpu_s": wall * cpus / a.guilds, "nodes": nodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="data/models/base")
    ap.add_argument("--cache-dir", default="data/cache")
    ap.add_argument("--guilds", type=int, default=4)
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-clips", type=int, default=8)
    ap.add_argument("--backends", nargs="+", default=["local", "ray1", "ray2"])
    a = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-scale-"))
    results: dict[str, dict] = {}
    try:
        t0 = time.perf_counter()
        asyncio.run(prepare(scratch / "prepared", a))
        print(f"setup: {a.guilds} guilds x {a.tracks} rated tracks "
              f"({time.perf_counter() - t0:.0f} s, not timed)", flush=True)
        for backend in a.backends:
            data = scratch / backend
            shutil.copytree(scratch / "prepared", data)
            cluster = None
            if backend.startswith("ray"):
                from ray.cluster_utils import Cluster

                cluster = Cluster(initialize_head=True, head_node_args={
                    "num_cpus": 0, "include_dashboard": False,
                    "object_store_memory": 100 * 2**20})
                for _ in range(int(backend[3:])):
                    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
                cluster.wait_for_nodes()
            try:
                results[backend] = asyncio.run(run_all(data, a, backend, cluster))
            finally:
                if cluster is not None:
                    cluster.shutdown()
            r = results[backend]
            print(f"{backend}: {r['wall']:.0f} s for {a.guilds} rounds", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{a.guilds} guilds, rounds of {a.steps} fine-tuning steps and {a.eval_clips} "
          "evaluation clips\n")
    print("| backend | wall s | rounds / hour | round latency s | CPU-s / round |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['wall']:.0f} | {r['per_hour']:.1f} | {r['latency']:.0f} | "
              f"{r['cpu_s']:.0f} |")
    if "ray1" in results and "ray2" in results:
        ratio = results["ray2"]["per_hour"] / results["ray1"]["per_hour"]
        print(f"\nscaling from one to two worker nodes: {ratio:.2f}x (aim: at least 1.8x)")


if __name__ == "__main__":
    main()
