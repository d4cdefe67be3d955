"""Serving guilds' LoRA adapters from one loaded base on CPU: merge or hot-swap?

    python bench/bench_adapter_serving.py [--ranks 4 16] [--repeats 5]

One shipped base is loaded once. For each rank, a guild's adapter (random factors: the cost
does not depend on what they learnt) is saved as the registry stores it. Then, medians:
- switch s: going from one guild's model to another's. Merge: put the base's weights back
  (a kept copy) and merge the next adapter into them. Hot-swap: the adapter layers stay
  attached, unmerged, and the next adapter's factors are loaded into them.
- gen s: one 5-s clip with tags asked, through the merged weights (the same network as the
  base) and through the attached adapter (an extra low-rank product per target layer).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from model.lora import (
    AdapterConfig,
    add_adapter,
    load_adapter_state,
    merge_into,
    remove_adapter,
    save_adapter,
)
from model.pipeline import CrowdtunePipeline
from model.train import install_shipped_base


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    scratch = Path(tempfile.mkdtemp(prefix="crowdtune-bench-serving-"))
    try:
        install_shipped_base(scratch / "base")
        pipe = CrowdtunePipeline.from_pretrained(scratch / "base")
        unet = pipe.unet
        base_weights = copy.deepcopy(unet.state_dict())

        def generate() -> None:
            pipe(batch_size=1, tags={"instrument": "piano"},
                 generator=torch.Generator().manual_seed(0))

        print("| rank | switch s, merge | switch s, hot-swap | gen s, merged | "
              "gen s, hot-swapped |")
        print("|---|---|---|---|---|")
        for rank in a.ranks:
            cfg = AdapterConfig(rank, float(rank), "v0001")
            folder = scratch / f"adapter-{rank}"
            add_adapter(unet, cfg)
            with torch.no_grad():
                for name, p in unet.named_parameters():
                    if ".lora_b" in name:
                        p.normal_(0, 1e-3)
            save_adapter(unet, cfg, folder)
            remove_adapter(unet, merge=False)

            def merge_switch(folder: Path = folder) -> None:
                unet.load_state_dict(base_weights)
                merge_into(unet, folder)

            switch_merge = median_s(merge_switch, a.repeats)
            gen_merged = median_s(generate, a.repeats)
            unet.load_state_dict(base_weights)
            add_adapter(unet, cfg, load_adapter_state(folder))
            switch_hot = median_s(
                lambda f=folder: unet.load_state_dict(load_adapter_state(f), strict=False),
                a.repeats)
            gen_hot = median_s(generate, a.repeats)
            remove_adapter(unet, merge=False)
            print(f"| {rank} | {switch_merge:.3f} | {switch_hot:.3f} | {gen_merged:.2f} | "
                  f"{gen_hot:.2f} |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
