"""Tag adherence of a model: ask for each tag value, let the tagger say what it hears.

    python bench/bench_tags.py [--model data/models/base] [--tagger data/models/tagger]
                               [-n 8] [--steps 20] [--sheet docs/results/tag-sheet.png]

For every value of every field, n clips are generated asking for that value only (the other
fields left to the model), on the same seeds; the tagger (model/tagger.py) tags them.
Printed: per field, the share of clips where the asked value was heard, and the confusion
table (rows asked, columns heard); the share of noise-like clips (spectral flatness above
that of pink noise at the same analysis); mode by a second judge, chroma key finding, with
both judges' accuracy on held-out corpus clips; and, with --sheet, a spectrogram sheet with
one generated clip per tag value beside a corpus clip carrying that value.
A model without tag conditioning is measured too: its adherence is what chance gives.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from model.features import extract, key_mode
from model.pipeline import STEPS, CrowdtunePipeline
from model.scores import score_corpus
from model.tagger import Tagger, adherence, confusion_text, predict
from model.tags import VOCAB

HELD_OUT_SEED = 10_000_000  # as bench_quality: far from the training seeds


def pink_noise_flatness(sr: int, seconds: float, seed: int = 0) -> float:
    """Spectral flatness of pink (1/f) noise under the features' analysis: the line above
    which a clip counts as noise-like."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    pink = np.fft.irfft(spec, n)
    pink = (0.3 * pink / np.abs(pink).max()).astype(np.float32)
    return extract(pink, sr).flatness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("--tagger", default="data/models/tagger")
    ap.add_argument("-n", type=int, default=8, help="clips per tag value")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--guidance-share", type=float, default=None,
                    help="share of the steps (noisiest first) with classifier-free guidance")
    ap.add_argument("--sheet", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    pipe = CrowdtunePipeline.from_pretrained(a.model)
    tagger = Tagger.load(Path(a.tagger))
    sr = pipe.mel.config.sample_rate
    extra = {} if a.guidance is None else {"guidance": a.guidance}
    if a.guidance_share is not None:
        extra["guidance_share"] = a.guidance_share
    asked, images, audios = [], [], []
    for field, values in VOCAB.items():
        for value in values:
            out = pipe(batch_size=a.n, num_inference_steps=a.steps, tags={field: value},
                       generator=torch.Generator().manual_seed(0), **extra)
            asked += [{field: value}] * a.n
            images += [m[0] for m in out.mels]
            audios += out.audios
    heard = predict(tagger, torch.from_numpy(np.stack(images)))
    shares, confusion = adherence(asked, heard)
    pink = pink_noise_flatness(sr, pipe.mel.config.window_seconds)
    noisy = np.mean([extract(x, sr).flatness > pink for x in audios])
    print(f"model {a.model} ({'tag-conditioned' if pipe.accepts_tags else 'takes no tags'}); "
          f"{a.n} clips per tag value, {a.steps} sampler steps, {len(audios)} clips, "
          f"{time.perf_counter() - t0:.0f} s")
    print("tag adherence (asked value heard by the tagger):")
    for field, share in shares.items():
        print(f"  {field:<11} {share:6.1%}   (chance {1 / len(VOCAB[field]):.0%})")
    print(f"noise-like clips (flatness above pink noise's {pink:.3f}): {noisy:.1%}\n")
    print(confusion_text(confusion))
    print_key_finding(asked, audios, pipe, tagger)
    if a.sheet:
        write_sheet(a.sheet, asked, images, a.n)
        print(f"\nspectrogram sheet: {a.sheet}")


def print_key_finding(asked: list[dict[str, str]], audios: list[np.ndarray],
                      pipe: CrowdtunePipeline, tagger: Tagger, n_corpus: int = 128) -> None:
    """Mode by a second judge, chroma key finding (model/features.key_mode), which shares
    nothing with the tagger: on the clips asked for a mode and, as both judges' own
    accuracy, on held-out corpus clips (the synthesiser style has no mode: left out)."""
    sr = pipe.mel.config.sample_rate
    print("\nmode by chroma key finding (share of clips asked for a mode heard in it):")
    for value in VOCAB["mode"]:
        idx = [i for i, t in enumerate(asked) if t == {"mode": value}]
        found = np.mean([key_mode(extract(audios[i], sr).chroma) == value for i in idx])
        print(f"  asked {value:<6} {found:6.1%}")
    clips, infos = score_corpus(n_corpus, seed=HELD_OUT_SEED, sample_rate=sr,
                                cache_dir=Path("data/cache/scores"))
    keep = [i for i, info in enumerate(infos) if info.source != "synth"]
    truth = [infos[i].tags["mode"] for i in keep]
    images = torch.cat([pipe.mel.encode_windows(torch.from_numpy(clips[i]))[:1] for i in keep])
    by_tagger = [h["mode"] for h in predict(tagger, images)]
    by_key = [key_mode(extract(clips[i], sr).chroma) for i in keep]
    print(f"the judges' own accuracy on {len(keep)} held-out corpus clips "
          "(major / minor recall):")
    for name, said in (("tagger", by_tagger), ("key finding", by_key)):
        recall = [np.mean([s == v for s, t in zip(said, truth, strict=True) if t == v])
                  for v in VOCAB["mode"]]
        right = np.mean([s == t for s, t in zip(said, truth, strict=True)])
        print(f"  {name:<12} {right:6.1%}  ({recall[0]:.0%} / {recall[1]:.0%})")


def write_sheet(path: Path, asked: list[dict[str, str]], images: list[np.ndarray],
                per_value: int) -> None:
    """One generated clip per tag value beside a corpus clip with that value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from model.codec import MelConfig
    from model.train import corpus_images

    corpus, records = corpus_images(256, HELD_OUT_SEED, MelConfig(), "scores")
    labels = [next(iter(t.items())) for t in asked[::per_value]]
    fig, axes = plt.subplots(len(labels), 2, figsize=(6, 1.1 * len(labels)))
    for row, (field, value) in enumerate(labels):
        match = next(i for i, r in enumerate(records) if r["tags"][field] == value)
        pairs = ((images[row * per_value][0], "generated"), (corpus[match, 0].numpy(), "corpus"))
        for col, (img, kind) in enumerate(pairs):
            ax = axes[row, col]
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{field}=\n{value}", fontsize=7, rotation=0, ha="right",
                              va="center")
            if row == 0:
                ax.set_title(kind, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
