"""What the tagger can hear through finer mel images: the same corpus clips, three codecs.

    python bench/bench_codec_tagger.py [--clips 4096] [--seed 0] [--cache-dir data/cache]

Why: the base follows the asked mode at chance, and below ~400 Hz one mel bin of today's
codec (128 bins to 8 kHz, 1024-point FFT at 16 kHz: ~23 Hz a bin) is wider than a semitone,
so a minor and a major third in the low parts share a bin. If the image hid mode, a tagger
trained on finer images would hear it better; that decides whether a codec change (and so a
base retrain) is worth its cost. For each codec the tagger (model/tagger.py, its defaults,
one thread) is trained on `--clips` starter-corpus clips with the same tune-grouped split;
printed: held-out accuracy per field and training seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from model.codec import MelCodec, MelConfig
from model.scores import score_corpus
from model.tagger import TaggerConfig, train_tagger
from model.tags import VOCAB

CODECS = {
    "128 mels to 8 kHz, FFT 1024 (today)": MelConfig(),
    "256 mels to 8 kHz, FFT 2048": MelConfig(y_res=256, n_fft=2048),
    "128 mels to 4 kHz, FFT 2048": MelConfig(n_fft=2048, f_max=4000.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    today = CODECS["128 mels to 8 kHz, FFT 1024 (today)"]  # all three share its window and rate
    audio, infos = score_corpus(a.clips, a.seed, today.window_seconds, today.sample_rate,
                                a.cache_dir)
    print(f"{a.clips} corpus clips rendered in {time.perf_counter() - t:.0f} s")
    tags = [i.tags for i in infos]
    groups = [i.source for i in infos]
    print(f"| codec | {' | '.join(VOCAB)} | train s |")
    print("|---|" + "---|" * (len(VOCAB) + 1))
    for name, mel in CODECS.items():
        codec = MelCodec(mel)
        images = torch.cat([codec.encode(torch.from_numpy(audio[s:s + 64]))[..., :mel.x_res]
                            for s in range(0, a.clips, 64)])
        _, report = train_tagger(images, tags, TaggerConfig(n_mels=mel.y_res), groups=groups)
        acc = " | ".join(f"{100 * report.accuracy[f]:.1f}%" for f in VOCAB)
        print(f"| {name} | {acc} | {report.seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
