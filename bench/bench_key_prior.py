"""Does the model play the mode it is asked for? The key prior's benchmark (issue 10).

    python bench/bench_key_prior.py [--model data/models/base] [-n 48]
    python bench/bench_key_prior.py --train-from DIR [--steps 2500] [--control]

The built-in base sees the asked key laid out over pitch (model/key_prior.py). This bench asks
a model for n clips per mode, each at a random tonic (the pipeline draws one when only a mode
is asked), at guidance 3 and 6, and three judges say what they hear:
- the pitch ruler of bench_mode_ruler.py, trained here on 80% of the pieces (held-out
  accuracy printed);
- key finding on the decoded audio's chroma (model.features.key_mode), which shares nothing
  with the model's codec or the rulers;
- the tagger (its mode head reads the same kind of pitch view as the ruler).

`--train-from DIR` first runs pretraining's key stage (model/train.py `train_key_stage`: the
prior added, then `--steps` at LR 1e-4 on the corpus clips tagged with their own keys) on a
base without the prior, as `crowdtune pretrain --train` does after its first stage;
`--control` runs the same fine-tuning with the excerpt keys' modes as tags but no prior.
Evaluation ~5 min; the key stage ~20 min more on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_mode_ruler import CACHE, pitch_resampler, pitch_view, train_ruler

from model.codec import MelConfig
from model.features import extract, key_mode
from model.key_prior import MODES
from model.pipeline import CrowdtunePipeline
from model.scores import ClipInfo, excerpt_keys
from model.tagger import Tagger, predict
from model.train import PretrainConfig, corpus_images, train_denoiser, train_key_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base", help="a model to judge")
    ap.add_argument("--train-from", type=Path, help="a base without the prior: run the key "
                                                    "stage on it first")
    ap.add_argument("--tagger", default="data/models/tagger")
    ap.add_argument("--clips", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("-n", type=int, default=48, help="generated clips per mode")
    ap.add_argument("--control", action="store_true", help="the same fine-tuning, no prior")
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    cfg = MelConfig()
    images, records = corpus_images(a.clips, 0, cfg, "scores", CACHE)
    keys = excerpt_keys([ClipInfo(**r) for r in records], cfg.window_seconds, CACHE)
    keep = [i for i, k in enumerate(keys) if k]
    pieces = [records[i]["source"] for i in keep]
    names = sorted(set(pieces))
    np.random.default_rng(0).shuffle(names)
    held = set(names[: len(names) // 5])
    test = np.array([p in held for p in pieces])
    resampler = pitch_resampler(cfg)
    x = pitch_view(images[keep], resampler)
    y = torch.tensor([keys[i][1] == "minor" for i in keep], dtype=torch.long)
    ruler = train_ruler(x[~test], y[~test])
    with torch.no_grad():
        acc = float((ruler(x[test]).argmax(1) == y[test]).float().mean())
    print(f"{len(keep)} of {len(records)} clips with a key; pitch ruler held-out {acc:.1%} "
          f"({test.sum()} clips); {time.perf_counter() - t0:.0f} s", flush=True)

    if a.train_from:
        pipe = CrowdtunePipeline.from_pretrained(a.train_from)
        stage = replace(PretrainConfig().key_stage(), steps=a.steps)
        t1 = time.perf_counter()
        if a.control:
            tags = [{**r["tags"], **({"mode": k[1]} if k else {})}
                    for r, k in zip(records, keys, strict=True)]
            losses = train_denoiser(pipe, images, stage, tags=tags)
        else:
            losses = train_key_stage(pipe, images, records, stage, cache_dir=CACHE)
        print(f"{'control' if a.control else 'key stage'}: {a.steps} steps in "
              f"{time.perf_counter() - t1:.0f} s, loss {np.mean(losses[:50]):.4f} -> "
              f"{np.mean(losses[-50:]):.4f}", flush=True)
    else:
        pipe = CrowdtunePipeline.from_pretrained(a.model)
    print(f"model: {a.train_from or a.model}, key prior: {pipe.keyed}")

    tagger = Tagger.load(Path(a.tagger))
    print(f"{a.n} clips per mode; share in the asked mode by the pitch ruler (sure: p above "
          "0.8 or below 0.2), by key finding on the audio, by the tagger")
    for guidance in (3.0, 6.0):
        cells = []
        for mode in MODES:
            out = pipe(batch_size=a.n, tags={"mode": mode}, guidance=guidance,
                       generator=torch.Generator().manual_seed(0))
            img = torch.from_numpy(np.stack([m[0] for m in out.mels]))
            with torch.no_grad():
                p = torch.softmax(ruler(pitch_view(img, resampler)), 1)[:, 1].numpy()
            ruler_ok = np.mean(p > 0.5) if mode == "minor" else np.mean(p <= 0.5)
            sure = np.mean((p > 0.8) | (p < 0.2))
            audio_ok = np.mean([key_mode(extract(w, out.sample_rate).chroma) == mode
                                for w in out.audios])
            tagger_ok = np.mean([h["mode"] == mode for h in predict(tagger, img)])
            cells.append((ruler_ok, sure, audio_ok, tagger_ok))
        r, s, k, t = np.mean(cells, 0)
        print(f"  guidance {guidance:.0f}: ruler {r:.1%} (major {cells[0][0]:.0%}, minor "
              f"{cells[1][0]:.0%}; sure {s:.0%}), audio key {k:.1%} (major "
              f"{cells[0][2]:.0%}, minor {cells[1][2]:.0%}), tagger {t:.1%} (major "
              f"{cells[0][3]:.0%}, minor {cells[1][3]:.0%})", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
