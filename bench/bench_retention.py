"""Disk per guild after a year of weekly rounds: full half-precision copies against LoRA
adapters, with and without retention.

    python bench/bench_retention.py [--rounds 52] [--promote 0.3 1.0] [--keep 4] [--ranks 4 16]

Each method runs `--rounds` rounds of one guild through the real registry (`add_version`
halves the weights, `promote`, `prune` with `--keep` recent versions) in a scratch folder,
starting from the shipped base. A round's candidate is the base's weights (full) or a
LoRA adapter over the lineage's full version with random factors (the files have the sizes
a trained one has; what they hold does not change the bytes). A round promotes its candidate
with probability `--promote` (seeded): every promotion lengthens the chain of ancestors that
retention keeps, so 1.0 is the worst case. Printed per method and promotion rate: MB per
version, the versions kept and the guild's disk after the last round, the disk the same
rounds take without pruning, and the disk for 1,000 guilds.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

import torch

from model.lora import AdapterConfig, add_adapter, is_adapter, load_adapter_state, save_adapter
from model.pipeline import CrowdtunePipeline
from model.registry import ModelRegistry
from model.train import install_shipped_base

GUILD = "1"


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def make_candidate(registry: ModelRegistry, rank: int, out: Path) -> None:
    """What a round's fine-tune would leave in `out`: a whole pipeline, or an adapter over
    the active version's full base (continuing the parent's adapter, as fine-tuning does)."""
    shutil.rmtree(out, ignore_errors=True)
    active = registry.version_dir(GUILD, registry.active_name(GUILD))
    if rank <= 0:
        shutil.copytree(active, out)
        return
    state = None
    if is_adapter(active):
        cfg = AdapterConfig.load(active)
        state = load_adapter_state(active)
    else:
        cfg = AdapterConfig(rank=rank, alpha=float(rank), base=active.name)
    pipe = CrowdtunePipeline.from_pretrained(active.parent / cfg.base)
    params = add_adapter(pipe.unet, cfg, state)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 1e-3)
    save_adapter(pipe.unet, cfg, out)


def run(rank: int, promote: float, a: argparse.Namespace, scratch: Path) -> dict:
    registry = ModelRegistry(scratch / "models")
    shutil.rmtree(registry.root, ignore_errors=True)
    install_shipped_base(registry.base_dir)
    registry.ensure_guild(GUILD)
    rng = random.Random(a.seed)
    written = folder_mb(registry.version_dir(GUILD, "v0001"))
    promotions = 0
    for _ in range(a.rounds):
        make_candidate(registry, rank, scratch / "candidate")
        info = registry.add_version(GUILD, scratch / "candidate",
                                    parent=registry.active_name(GUILD), source="round")
        written += folder_mb(registry.version_dir(GUILD, info.version))
        if rng.random() < promote:
            registry.promote(GUILD, info.version)
            promotions += 1
        registry.prune(GUILD, a.keep)
    last = registry.versions(GUILD)[-1]
    return {"per_version": folder_mb(registry.version_dir(GUILD, last.version)),
            "kept": len(registry.versions(GUILD)), "promotions": promotions,
            "disk": folder_mb(registry.guild_dir(GUILD)), "unpruned": written}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=52)
    ap.add_argument("--promote", type=float, nargs="+", default=[0.3, 1.0])
    ap.add_argument("--keep", type=int, default=4)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-retention-"))
    rows = []
    try:
        for rank in [0, *a.ranks]:
            for promote in a.promote:
                r = run(rank, promote, a, scratch)
                name = "full (fp16 copy)" if rank <= 0 else f"LoRA rank {rank}"
                rows.append((name, promote, r))
                print(f"{name}, promote {promote}: {r['disk']:.1f} MB kept", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{a.rounds} weekly rounds of one guild, keeping the active version, its "
          f"ancestors, the newest {a.keep} and the pinned\n")
    print("| method | promote p | promotions | MB / version | versions kept | "
          "guild MB | guild MB unpruned | GB / 1,000 guilds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, promote, r in rows:
        print(f"| {name} | {promote} | {r['promotions']} | {r['per_version']:.1f} | "
              f"{r['kept']} | {r['disk']:.0f} | {r['unpruned']:.0f} | "
              f"{r['disk'] * 1000 / 1024:.1f} |")


if __name__ == "__main__":
    main()
