"""Does conditioning laid out over pitch let the base play the asked mode? (issue 10)

    python bench/bench_key_prior.py [--steps 2500] [--clips 4096] [-n 48] [--control]

The tags reach the UNet as one embedding added to the time embedding: a per-channel shift
that cannot say which pitch rows to fill, and the base plays the asked mode at chance
(bench_mode_ruler.py; neither relabelling, the tonic as a tag, 4x8 patches nor twice the
training changed that, docs/results/README.md). Here the UNet also sees a "key prior": an
image whose every mel row holds the asked key's Krumhansl-Kessler weight for the semitones
that row covers (zero when the mode or the tonic is "any", so guidance pushes toward it),
patchified like the input and added to conv_in's output through a small conv. The key
comes from a new `tonic` tag (its embedding rows are zero: it acts only through the prior).

The shipped base is fine-tuned on the pretraining clips, each tagged with its excerpt's key
(Krumhansl-Schmuckler on the score notes sounding in its 5 s, transposed as rendered);
`--control` fine-tunes the same way without the prior. Then n clips per mode, each at a
random tonic, are judged by the pitch ruler of bench_mode_ruler.py (trained here, held-out
pieces), by key finding on the decoded audio's chroma (model.features), and by the tagger.
A prototype: hooks on a diffusers UNet, not the shipped model; ~35 min on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_mode_ruler import CACHE, excerpt_profile, pitch_resampler, pitch_view, train_ruler
from torch import nn

from model import tags as tagvocab
from model.codec import MelCodec, MelConfig, mel_band_edges
from model.features import KEY_PROFILES, extract, find_key, key_mode
from model.pipeline import CrowdtunePipeline, TagEmbedding, patchify
from model.scores import ClipInfo, score_corpus
from model.tagger import Tagger, predict
from model.train import TrainConfig, train_denoiser

MODES = tuple(KEY_PROFILES)


def excerpt_key(info: ClipInfo) -> tuple[int, str] | None:
    """(tonic pitch class as rendered, mode) of the score notes sounding in the clip."""
    profile = None if info.source == "synth" else excerpt_profile(info)
    if profile is None:
        return None
    tonic, mode = find_key(profile)
    return (tonic + info.transpose) % 12, mode


def key_table(cfg: MelConfig) -> torch.Tensor:
    """(24, mel rows), key mode * 12 + tonic: each row's mean profile weight over the
    semitones its filter covers, standardised over rows."""
    edges = mel_band_edges(cfg).numpy()
    table = np.zeros((24, cfg.y_res), np.float32)
    for r in range(cfg.y_res):
        lo, hi = (edges[r] + edges[r + 1]) / 2, (edges[r + 1] + edges[r + 2]) / 2
        pcs = np.rint(69 + 12 * np.log2(np.linspace(max(lo, 20.0), hi, 16) / 440)).astype(int)
        for m, mode in enumerate(MODES):
            for k in range(12):
                table[m * 12 + k, r] = KEY_PROFILES[mode][(pcs - k) % 12].mean()
    table = (table - table.mean(1, keepdims=True)) / table.std(1, keepdims=True)
    return torch.from_numpy(table)


class KeyPrior(nn.Module):
    def __init__(self, pipe: CrowdtunePipeline, cfg: MelConfig) -> None:
        super().__init__()
        self.register_buffer("table", key_table(cfg))
        self.patch = pipe.patch
        ph, pw = self.patch
        self.conv = nn.Conv2d(ph * pw, pipe.unet.conv_in.out_channels, 3, padding=1)
        with torch.no_grad():  # small at first: the base's features stay as they were
            self.conv.weight.mul_(0.1)
            self.conv.bias.zero_()
        fields, offsets = list(pipe.tag_vocab), tagvocab.offsets(pipe.tag_vocab)
        self.cols = (fields.index("mode"), fields.index("tonic"))
        self.offsets = (offsets["mode"], offsets["tonic"])

    def image(self, labels: torch.Tensor | None, sample: torch.Tensor) -> torch.Tensor:
        n, _, h, w = sample.shape
        ph, pw = self.patch
        if labels is None or labels.dim() != 2:
            return sample.new_zeros(n, ph * pw, h, w)
        mode = labels[:, self.cols[0]] - self.offsets[0]
        tonic = labels[:, self.cols[1]] - self.offsets[1]
        known = ((mode < 2) & (tonic < 12)).to(sample.dtype)  # an "any" row: no prior
        rows = self.table[(mode.clamp(max=1) * 12 + tonic.clamp(max=11)).long()]
        rows = rows.to(sample.dtype) * known[:, None]
        return patchify(rows[:, None, :, None].expand(n, 1, h * ph, w * pw).contiguous(),
                        ph, pw)


def add_tonic(pipe: CrowdtunePipeline) -> None:
    vocab = {**pipe.tag_vocab, "tonic": tuple(str(i) for i in range(12))}
    old = pipe.unet.class_embedding
    new = TagEmbedding(tagvocab.n_embeddings(vocab), old.embedding_dim)
    with torch.no_grad():  # zero rows stay ~0 at lr 1e-4: the tonic acts through the prior
        new.weight.zero_()
        new.weight[: old.num_embeddings] = old.weight
    pipe.unet.class_embedding = new
    pipe.unet.register_to_config(num_class_embeds=new.num_embeddings)
    pipe.tag_vocab = vocab


def attach(pipe: CrowdtunePipeline, cfg: MelConfig) -> KeyPrior:
    unet, prior, cond = pipe.unet, KeyPrior(pipe, cfg), {}
    unet.add_module("key_prior", prior)  # trained and averaged with the unet's weights

    def before(_module, args, kwargs):
        cond["image"] = prior.image(kwargs.get("class_labels"),
                                    args[0] if args else kwargs["sample"])

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.conv_in.register_forward_hook(lambda _m, _i, out: out + prior.conv(cond["image"]))
    return prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="data/models/base")
    ap.add_argument("--tagger", default="data/models/tagger")
    ap.add_argument("--clips", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("-n", type=int, default=48, help="generated clips per mode")
    ap.add_argument("--control", action="store_true", help="the same fine-tuning, no prior")
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    cfg = MelConfig()
    codec = MelCodec(cfg)
    audio, infos = score_corpus(a.clips, 0, cfg.window_seconds, cfg.sample_rate, CACHE)
    images = torch.cat([codec.encode(torch.from_numpy(audio[s:s + 64]))[..., :cfg.x_res]
                        for s in range(0, len(audio), 64)])
    keys = [excerpt_key(info) for info in infos]
    tags = [{**info.tags, **({"mode": k[1], "tonic": str(k[0])} if k else {})}
            for info, k in zip(infos, keys, strict=True)]
    keep = [i for i, k in enumerate(keys) if k]
    pieces = [infos[i].source for i in keep]
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
    print(f"{len(keep)} of {len(infos)} clips with a key; pitch ruler held-out {acc:.1%} "
          f"({test.sum()} clips); {time.perf_counter() - t0:.0f} s", flush=True)

    pipe = CrowdtunePipeline.from_pretrained(a.model)
    add_tonic(pipe)
    prior = None if a.control else attach(pipe, cfg)
    t1 = time.perf_counter()
    losses = train_denoiser(pipe, images, TrainConfig(steps=a.steps, lr=1e-4, warmup=20,
                                                      seed=21), progress=None, tags=tags)
    print(f"{'control' if a.control else 'key prior'}: {a.steps} steps in "
          f"{time.perf_counter() - t1:.0f} s, loss {np.mean(losses[:50]):.4f} -> "
          f"{np.mean(losses[-50:]):.4f}" + ("" if prior is None else
                                            f", prior conv mean |w| "
                                            f"{prior.conv.weight.abs().mean():.4f}"), flush=True)

    tagger = Tagger.load(Path(a.tagger))
    rng = np.random.default_rng(5)
    print(f"{a.n} clips per mode at random tonics; share in the asked mode by the pitch "
          "ruler (sure: p above 0.8 or below 0.2), by key finding on the audio, by the tagger")
    for guidance in (3.0, 6.0):
        cells = []
        for mode in MODES:
            asked = [{"mode": mode, "tonic": str(rng.integers(12))} for _ in range(a.n)]
            out = pipe(batch_size=a.n, tags=asked, guidance=guidance,
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
              f"{cells[1][0]:.0%}; sure {s:.0%}), audio key {k:.1%}, tagger {t:.1%}",
              flush=True)
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
