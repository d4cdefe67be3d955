"""Does the base play the mode it is asked for, by a ruler that can hear mode?

    python bench/bench_mode_ruler.py [--model data/models/base] [--clips 4096] [-n 32]

The tagger's first mode head, on its shared embedding, heard mode barely above always saying
"major". This bench trains a mode ruler on a pitch view (since then the tagger's mode head,
model/tagger.py) and uses it on the model:
- Labels: each corpus clip's own key, found by Krumhansl-Kessler key finding on the score
  notes sounding in its 5-s excerpt (the piece's key analysis, the corpus tag, agrees with
  the excerpt's key on only ~73% of clips: excerpts modulate or sit on the relative key).
- Input: the codec's mel image resampled onto a log-pitch axis (a third of a semitone a row,
  350 Hz to 4 kHz, where a mel bin is narrower than a semitone), averaged over time (mean and
  spread). On that axis a note's overtone pattern and a chord's intervals look the same at
  every pitch, so a CNN over pitch with pooling over pitch is transposition-invariant.
- Trained on clips of 80% of the pieces; held-out accuracy and confusion are printed on the
  other pieces' clips, with the tagger's on the same clips.
Then n clips are asked of the model for each mode (all other tags left to it), at the
pipeline's default and at a strong guidance scale, and the ruler says what it hears.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.codec import MelCodec, MelConfig
from model.pipeline import GUIDANCE, CrowdtunePipeline
from model.scores import excerpt_keys, score_corpus
from model.tagger import (
    ROWS_PER_SEMITONE,
    PitchFeatures,
    Tagger,
    pitch_resampler,
    pitch_view,
    predict,
)

CACHE = Path("data/cache")


class ModeRuler(nn.Module):
    """The tagger's pitch view and convolutions (model/tagger.py) with a head of its own."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.features = PitchFeatures(channels)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_ruler(x: torch.Tensor, y: torch.Tensor, epochs: int = 15, seed: int = 0) -> ModeRuler:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ruler = ModeRuler()
    opt = torch.optim.AdamW(ruler.parameters(), 2e-3, weight_decay=1e-2)
    ruler.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), 64):
            idx = order[s:s + 64]
            # a small random transposition: the corpus covers some keys more than others
            shift = int(torch.randint(-2 * ROWS_PER_SEMITONE, 2 * ROWS_PER_SEMITONE + 1, (),
                                      generator=gen))
            loss = F.cross_entropy(ruler(torch.roll(x[idx], shift, -1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ruler.eval()


def hears_minor(ruler: ModeRuler, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (ruler(x).argmax(1) == 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("--tagger", default="data/models/tagger")
    ap.add_argument("--clips", type=int, default=4096, help="corpus clips to train on")
    ap.add_argument("-n", type=int, default=32, help="generated clips per mode")
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    codec = MelCodec(MelConfig())
    audio, infos = score_corpus(a.clips, 0, codec.config.window_seconds,
                                codec.config.sample_rate, CACHE)
    keep, minor, pieces = [], [], []
    keys = excerpt_keys(infos, codec.config.window_seconds, CACHE)
    for i, (info, key) in enumerate(zip(infos, keys, strict=True)):
        mode = key[1] if key and "mode" in info.tags else None
        if mode is not None:
            keep.append(i)
            minor.append(mode == "minor")
            pieces.append(info.source)
    agree = np.mean([(infos[i].tags["mode"] == "minor") == m for i, m in zip(keep, minor,
                                                                             strict=True)])
    clips = torch.from_numpy(audio[keep])
    images = torch.cat([codec.encode(clips[s:s + 64])[..., :codec.config.x_res]
                        for s in range(0, len(keep), 64)])
    resampler = pitch_resampler(codec.config)
    x, y = pitch_view(images, resampler), torch.tensor(minor, dtype=torch.long)
    names = sorted(set(pieces))
    np.random.default_rng(0).shuffle(names)
    held = set(names[: len(names) // 5])
    test = np.array([p in held for p in pieces])
    ruler = train_ruler(x[~test], y[~test])
    print(f"{len(keep)} corpus clips with a mode ({len(held)} of {len(names)} pieces held out); "
          f"the excerpt's key agrees with the piece's on {agree:.1%}; "
          f"{time.perf_counter() - t0:.0f} s")
    truth = y[test].numpy().astype(bool)
    tagger_minor = np.array([h["mode"] == "minor" for h in
                             predict(Tagger.load(Path(a.tagger)), images[test])])
    print(f"held-out clips, excerpt's mode ({truth.size} clips, always 'major' "
          f"{1 - truth.mean():.1%}):")
    for name, said in (("pitch ruler", hears_minor(ruler, x[test])), ("tagger", tagger_minor)):
        print(f"  {name:<12} {np.mean(said == truth):6.1%}   major recall "
              f"{np.mean(~said[~truth]):.0%}, minor recall {np.mean(said[truth]):.0%}")
    pipe = CrowdtunePipeline.from_pretrained(a.model)
    print(f"model {a.model}, {a.n} clips per mode; share heard in the asked mode:")
    for guidance in (GUIDANCE, 7.0):
        heard = {}
        for mode in ("major", "minor"):
            out = pipe(batch_size=a.n, tags={"mode": mode}, guidance=guidance,
                       generator=torch.Generator().manual_seed(0))
            gen_images = torch.from_numpy(np.stack([m[0] for m in out.mels]))
            said = hears_minor(ruler, pitch_view(gen_images, resampler))
            heard[mode] = np.mean(said if mode == "minor" else ~said)
        print(f"  guidance {guidance:.0f}: major {heard['major']:.0%}, minor "
              f"{heard['minor']:.0%}, both {(heard['major'] + heard['minor']) / 2:.1%}")
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
