"""Generation speed and memory on this machine: seconds per 5-s clip, audio s per wall s.

    python bench/bench_generate.py [--model DIR] [--repeats 7] [--steps 20]

Each measurement runs in a fresh process so peak RSS is the generation's own. A
tag-conditioned model is timed twice: with no tags (one UNet pass a step) and with tags
asked (classifier-free guidance: a conditional and an unconditional pass a step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from model.pipeline import STEPS

CHILD = r"""
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(2)
from model.pipeline import CrowdtunePipeline
from model.train import make_builtin_pipeline
model, repeats, steps, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tags = json.loads(sys.argv[5]) or None
pipe = CrowdtunePipeline.from_pretrained(model) if model != "untrained" else make_builtin_pipeline()
pipe.for_generation()  # as the worker and evaluation load it
pipe(num_inference_steps=steps, seconds=seconds, tags=tags)  # warm-up
times = []
for i in range(repeats):
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(i)
    out = pipe(num_inference_steps=steps, seconds=seconds, generator=gen, tags=tags)
    times.append(time.perf_counter() - t)
audio_s = len(out.audios[0]) / out.sample_rate
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "median_s": statistics.median(times), "min_s": min(times),
                  "audio_s": audio_s, "peak_rss_mb": rss}))
"""


ASKED = {"mode": "minor", "instrument": "piano"}  # any asked tag turns guidance on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=STEPS)
    a = ap.parse_args()
    if a.model != "untrained" and not Path(a.model, "model_index.json").is_file():
        sys.exit(f"no model at {a.model}: run `crowdtune pretrain` (or pass --model untrained)")
    print(f"model {a.model}, {a.steps} sampler steps, {a.repeats} runs each, 2 torch threads")
    tagged = a.model != "untrained" and "tags" in json.loads(
        Path(a.model, "model_index.json").read_text())
    asks = [{}] + ([ASKED] if tagged else [])
    print(f"{'clip':>8} {'tags':>28} {'median s':>9} {'min s':>7} {'audio s/wall s':>15} "
          f"{'peak RSS MB':>12}")
    for tags in asks:
        for seconds in (5.0, 20.0):
            res = subprocess.run([sys.executable, "-c", CHILD, a.model, str(a.repeats),
                                  str(a.steps), str(seconds), json.dumps(tags)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            shown = ",".join(f"{k}={v}" for k, v in tags.items()) or "none"
            print(f"{r['seconds']:>7.0f}s {shown:>28} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
                  f"{r['audio_s'] / r['median_s']:>15.1f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
