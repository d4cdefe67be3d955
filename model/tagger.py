"""The tagger: a small CNN that hears a clip's tags from its mel image.

Two users:
- evaluation: tag adherence of generated clips (was the asked instrument, mode, drums heard?),
  by `predict` on the generated images and `adherence` against the asked tags;
- a learned reward model: `Tagger.embed` is a compact audio embedding.

It is trained on the labelled starter-corpus clips (model/scores.py). Design:
- frequency-aware: strided conv blocks shrink time and frequency, then time is pooled away
  (mean and max: sustained notes and short events such as drum hits) while the remaining
  frequency rows are kept and flattened, since where energy sits (pitch, timbre) matters;
- any width works (5-s windows are 160 frames), so it also tags shorter or longer clips;
- a tag left out of a clip's dict is not trained or scored for that field (masked loss);
- light augmentation (a random time crop, a small level change, a little noise) so that
  it transfers from clean rendered audio to the diffusion model's generated images;
- mode is heard on a pitch view (`pitch_fields`): the mel image resampled onto a log-pitch
  axis and averaged over time, where a chord's intervals look the same at every pitch, read
  by convolutions a third and an octave wide and pooled over pitch. Why: from the shared
  embedding the mode head said "major" on almost every generated clip (47-51% adherence
  whatever the model played), while this view, trained alone on the same clips, heard the
  held-out pieces' mode 87.7% right (bench/bench_mode_ruler.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from model.codec import MelConfig, mel_band_edges
from model.files import atomic_dir
from model.tags import VOCAB

log = logging.getLogger(__name__)

WEIGHTS_NAME = "tagger.safetensors"
CONFIG_NAME = "tagger_config.json"
OnStep = Callable[[int, int, float], None]  # (step, of steps, loss), step counted from 1
Vocab = Mapping[str, Sequence[str]]
ROWS_PER_SEMITONE = 3
# The pitch view's range: above 350 Hz a mel bin is narrower than a semitone; 4 kHz holds
# the melodies' and chords' fundamentals and first partials.
PITCH_HZ = (350.0, 4000.0)


@dataclass(frozen=True)
class TaggerConfig:
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)  # one strided conv block each
    n_mels: int = 128  # image height the frequency strides are planned for
    freq_rows: int = 8  # frequency rows kept (and flattened) after the convs
    embed_dim: int = 128
    dropout: float = 0.2
    epochs: int = 8  # ~870 steps on 4096 clips: ~3 min of one core's time (measured)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: float = 0.05  # share of the steps with a linear warm-up, then cosine decay
    holdout: float = 0.15
    seed: int = 0
    crop: int = 128  # training crop in frames (of 160): time-shift augmentation
    gain_db: float = 6.0  # uniform level change of +-gain_db in the image's dB scale
    noise: float = 0.02  # std of additive noise on the [-1, 1] image
    top_db: float = 80.0  # the codec's dB range that [-1, 1] spans (for gain_db)
    pitch_fields: tuple[str, ...] = ("mode",)  # heads that read the pitch view
    pitch_channels: int = 32
    pitch_shift: int = 2  # training: the pitch view rolled by up to this many semitones

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping) -> TaggerConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in raw.items() if k in known}
        kw.setdefault("pitch_fields", ())  # a tagger saved before the pitch view had none
        for name in ("channels", "pitch_fields"):
            kw[name] = tuple(kw.get(name, getattr(cls, name)))
        return cls(**kw)


def pitch_resampler(mel: MelConfig) -> Tensor:
    """(pitch rows, mel bins): linear interpolation between the mel bins' centre frequencies
    onto a log-pitch axis of ROWS_PER_SEMITONE rows a semitone over PITCH_HZ."""
    centres = mel_band_edges(mel)[1:-1].numpy()
    p0, p1 = (69 + 12 * math.log2(f / 440) for f in PITCH_HZ)
    freqs = 440 * 2 ** ((np.arange(p0, p1, 1 / ROWS_PER_SEMITONE) - 69) / 12)
    rows = np.zeros((len(freqs), mel.y_res), dtype=np.float32)
    for i, f in enumerate(freqs):
        j = int(np.searchsorted(centres, f))
        a = (f - centres[j - 1]) / (centres[j] - centres[j - 1])
        rows[i, j - 1], rows[i, j] = 1 - a, a
    return torch.from_numpy(rows)


def pitch_view(images: Tensor, resampler: Tensor) -> Tensor:
    """(n, 1, mels, T) mel images -> (n, 2, pitch rows): time mean and spread, standardised."""
    x = torch.einsum("pm,nmt->npt", resampler, images[:, 0].float())
    view = torch.stack([x.mean(-1), x.std(-1)], 1)
    return (view - view.mean(-1, keepdim=True)) / (view.std(-1, keepdim=True) + 1e-6)


class PitchFeatures(nn.Module):
    """(n, 2, pitch rows) -> (n, 2 * channels): convolutions over pitch, a third and then an
    octave wide, pooled over pitch (max and mean), so the same chord at another pitch gives
    the same features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        third, octave = 3 * ROWS_PER_SEMITONE, 12 * ROWS_PER_SEMITONE + 1  # odd: centred
        self.convs = nn.Sequential(
            nn.Conv1d(2, channels, third, padding="same"), nn.GELU(),
            nn.Conv1d(channels, channels, octave, padding="same"), nn.GELU(),
            nn.Conv1d(channels, channels, octave, padding="same"), nn.GELU())

    def forward(self, view: Tensor) -> Tensor:
        h = self.convs(view)
        return torch.cat([h.amax(-1), h.mean(-1)], 1)


class Tagger(nn.Module):
    """(n, 1, mels, W) mel images in [-1, 1] -> {field: (n, n_values) logits}."""

    def __init__(self, cfg: TaggerConfig = TaggerConfig(), vocab: Vocab = VOCAB) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = {f: tuple(v) for f, v in vocab.items()}
        # Strided convs rather than conv + max-pool: measured 4-5x faster on 2 CPU cores (the
        # pooling and the full-resolution activations dominated). Frequency stops halving at
        # freq_rows; time always halves, and a stride-2 conv with padding 1 keeps >= 1 frame,
        # so any width works.
        blocks: list[nn.Module] = []
        c_in, rows = 1, cfg.n_mels
        for c in cfg.channels:
            f_stride = 2 if rows // 2 >= cfg.freq_rows else 1
            rows //= f_stride
            blocks += [nn.Conv2d(c_in, c, 3, stride=(f_stride, 2), padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.project = nn.Sequential(
            nn.Linear(2 * c_in * cfg.freq_rows, cfg.embed_dim), nn.LayerNorm(cfg.embed_dim),
            nn.GELU())
        self.drop = nn.Dropout(cfg.dropout)
        self.pitch_fields = tuple(f for f in cfg.pitch_fields if f in self.vocab)
        if self.pitch_fields:
            self.register_buffer("resampler", pitch_resampler(MelConfig(y_res=cfg.n_mels)),
                                 persistent=False)
            self.pitch = PitchFeatures(cfg.pitch_channels)
        self.heads = nn.ModuleDict({
            f: nn.Linear(2 * cfg.pitch_channels if f in self.pitch_fields else cfg.embed_dim,
                         len(v)) for f, v in self.vocab.items()})

    def embed(self, images: Tensor) -> Tensor:
        """(n, embed_dim): the pooled features before the heads."""
        x = self.features(images.float())  # (n, C, H', W')
        x = torch.cat([x.mean(-1), x.amax(-1)], 1)  # time pooled away: (n, 2C, H')
        if x.shape[-1] != self.cfg.freq_rows:  # another image height: resample the rows
            x = F.adaptive_avg_pool1d(x, self.cfg.freq_rows)
        return self.project(x.flatten(1))

    def pitch_features(self, images: Tensor) -> Tensor:
        images = images.float()
        if images.shape[-2] != self.cfg.n_mels:  # another image height: resample the rows
            images = F.interpolate(images, size=(self.cfg.n_mels, images.shape[-1]),
                                   mode="bilinear", align_corners=False)
        view = pitch_view(images, self.resampler)
        if self.training and self.cfg.pitch_shift:  # the corpus plays some keys more often
            k = self.cfg.pitch_shift * ROWS_PER_SEMITONE
            view = torch.roll(view, int(torch.randint(-k, k + 1, ())), -1)
        return self.pitch(view)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        z = self.drop(self.embed(images))
        p = self.drop(self.pitch_features(images)) if self.pitch_fields else None
        return {f: head(p if f in self.pitch_fields else z) for f, head in self.heads.items()}

    def save(self, folder: Path) -> None:
        """Weights (safetensors) and config + vocabulary (json), replaced atomically."""
        with atomic_dir(Path(folder)) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME))
            meta = {"config": self.cfg.to_json(), "vocab": {f: list(v)
                                                            for f, v in self.vocab.items()}}
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Tagger:
        folder = Path(folder)
        meta = json.loads((folder / CONFIG_NAME).read_text())
        model = cls(TaggerConfig.from_json(meta["config"]), meta["vocab"])
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- reports ---------------------------------------------------------------------------------

def confusion_text(confusion: Mapping[str, list[list[int]]], vocab: Vocab = VOCAB) -> str:
    """Per field: rows are the true (or asked) value, columns the predicted (heard) one."""
    out: list[str] = []
    for name, table in confusion.items():
        values = list(vocab.get(name, ()))
        labels = values if len(values) == len(table) else [str(i) for i in range(len(table))]
        width = max([len(v) for v in labels] + [5])
        out.append(f"{name} (rows true, cols predicted)")
        out.append(" " * (width + 1) + " ".join(f"{v:>{width}}" for v in labels))
        for label, row in zip(labels, table, strict=True):
            out.append(f"{label:>{width}} " + " ".join(f"{n:>{width}d}" for n in row))
    return "\n".join(out)


@dataclass
class TaggerReport:
    accuracy: dict[str, float]  # held-out, per field (NaN where no held-out clip has the field)
    confusion: dict[str, list[list[int]]]  # rows true value, cols predicted (VOCAB order)
    n_train: int
    n_heldout: int
    seconds: float
    chance: dict[str, float] = field(default_factory=dict)  # majority-class held-out share

    def table(self) -> str:
        head = (f"tagger: {self.n_train} train / {self.n_heldout} held-out clips, "
                f"{self.seconds:.0f} s")
        rows = [head, f"{'field':<12} {'accuracy':>8} {'chance':>8} {'scored':>7}"]
        scored = {f: sum(map(sum, t)) for f, t in self.confusion.items()}
        for name, acc in self.accuracy.items():
            if not scored.get(name):  # no held-out clip is labelled with it
                continue
            chance = self.chance.get(name, math.nan)
            rows.append(f"{name:<12} {acc:>8.3f} {chance:>8.3f} {scored[name]:>7d}")
        shown = {f: t for f, t in self.confusion.items() if scored[f]}
        return "\n".join(rows + ["", confusion_text(shown)])


# --- training --------------------------------------------------------------------------------

def _targets(tags: Sequence[Mapping[str, str]], vocab: Vocab) -> Tensor:
    """(n, n_fields) value indices, -1 where the clip's dict leaves the field out."""
    out = torch.full((len(tags), len(vocab)), -1, dtype=torch.long)
    for i, t in enumerate(tags):
        for j, (name, values) in enumerate(vocab.items()):
            if name in t:
                if t[name] not in values:
                    raise ValueError(f"clip {i}: unknown {name} {t[name]!r}")
                out[i, j] = list(values).index(t[name])
    return out


def _split(n: int, holdout: float, seed: int,
           groups: Sequence[Hashable] | None) -> tuple[list[int], list[int]]:
    """A seeded train / held-out split; clips of one group (e.g. windows of one tune) stay
    on one side, so the held-out accuracy is not inflated by near-duplicates."""
    keys = list(range(n)) if groups is None else list(groups)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} groups for {n} clips")
    unique = sorted(set(keys), key=repr)
    random.Random(seed).shuffle(unique)
    n_out = round(len(unique) * holdout) if len(unique) > 1 else 0
    out_keys = set(unique[:n_out])
    held = [i for i, k in enumerate(keys) if k in out_keys]
    train = [i for i, k in enumerate(keys) if k not in out_keys]
    return train, held


def _augment(x: Tensor, cfg: TaggerConfig, gen: torch.Generator) -> Tensor:
    n = x.shape[0]
    if x.shape[-1] > cfg.crop > 0:  # one random crop per batch: a time shift
        start = int(torch.randint(0, x.shape[-1] - cfg.crop + 1, (1,), generator=gen))
        x = x[..., start:start + cfg.crop]
    if cfg.gain_db > 0:  # the codec normalises to the loudest bin; generated clips may not
        db = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.gain_db
        x = x + db * (2.0 / cfg.top_db)
    if cfg.noise > 0:
        x = x + cfg.noise * torch.randn(x.shape, generator=gen)
    return x.clamp(-1.0, 1.0)


def _masked_loss(logits: dict[str, Tensor], y: Tensor) -> Tensor:
    total = logits[next(iter(logits))].new_zeros(())
    for j, out in enumerate(logits.values()):
        labelled = y[:, j] >= 0
        if labelled.any():
            total = total + F.cross_entropy(out[labelled], y[labelled, j])
    return total


def _lr_factor(step: int, steps: int, warmup: float) -> float:
    w = max(1, int(steps * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


def train_tagger(images: Tensor, tags: Sequence[Mapping[str, str]],
                 cfg: TaggerConfig = TaggerConfig(), progress: OnStep | None = None,
                 groups: Sequence[Hashable] | None = None, vocab: Vocab = VOCAB,
                 device: str | torch.device = "cpu") -> tuple[Tagger, TaggerReport]:
    """Train on (n, 1, mels, W) images and their tag dicts; report held-out accuracy.

    `groups` (optional, one key per clip) keeps each group on one side of the split. The
    images stay where they are; batches move to `device`; the tagger returned is on the CPU.
    Deterministic given cfg.seed (on one machine and thread count).
    """
    t0 = time.monotonic()
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (n, 1, mels, W), got {tuple(images.shape)}")
    if len(tags) != images.shape[0]:
        raise ValueError(f"{len(tags)} tag dicts for {images.shape[0]} images")
    y = _targets(tags, vocab)
    train_idx, held_idx = _split(len(tags), cfg.holdout, cfg.seed, groups)
    if not train_idx:
        raise ValueError("no training clips")

    torch.manual_seed(cfg.seed)  # weight init
    gen = torch.Generator().manual_seed(cfg.seed)  # order, crops, gains, noise
    model = Tagger(cfg, vocab).to(device)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    train_t = torch.tensor(train_idx)
    bs = min(cfg.batch_size, len(train_idx))
    per_epoch = max(1, len(train_idx) // bs)  # drop the ragged last batch (BatchNorm)
    steps = per_epoch * cfg.epochs
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = train_t[torch.randperm(len(train_t), generator=gen)]
        running = 0.0
        for b in range(per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            x = _augment(images[idx].float(), cfg, gen).to(device)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, steps, cfg.warmup)
            loss = _masked_loss(model(x), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = loss.item()
            running += value
            if progress is not None:
                progress(step, steps, value)
        log.info("tagger epoch %d/%d: loss %.3f", epoch + 1, cfg.epochs, running / per_epoch)
    model.cpu().eval()

    accuracy: dict[str, float] = {}
    confusion: dict[str, list[list[int]]] = {}
    chance: dict[str, float] = {}
    if held_idx:
        probs = probabilities(model, images[held_idx])
        y_held = y[held_idx].numpy()
        for j, (name, values) in enumerate(model.vocab.items()):
            truth, pred = y_held[:, j], probs[name].argmax(1)
            mask = truth >= 0
            table = np.zeros((len(values), len(values)), dtype=np.int64)
            np.add.at(table, (truth[mask], pred[mask]), 1)
            confusion[name] = table.tolist()
            scored = int(mask.sum())
            accuracy[name] = float(np.trace(table) / scored) if scored else math.nan
            chance[name] = float(table.sum(1).max() / scored) if scored else math.nan
    report = TaggerReport(accuracy, confusion, len(train_idx), len(held_idx),
                          time.monotonic() - t0, chance)
    return model, report


# --- inference -------------------------------------------------------------------------------

def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def probabilities(tagger: Tagger, images: Tensor, batch: int = 64) -> dict[str, np.ndarray]:
    """{field: (n, n_values) softmax probabilities}."""
    tagger.eval()
    parts: dict[str, list[np.ndarray]] = {f: [] for f in tagger.vocab}
    images, dev = torch.as_tensor(images), _device(tagger)
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch):
            for name, logits in tagger(images[i:i + batch].to(dev).float()).items():
                parts[name].append(logits.softmax(-1).cpu().numpy())
    return {f: (np.concatenate(p) if p else np.zeros((0, len(tagger.vocab[f])), np.float32))
            for f, p in parts.items()}


def predict(tagger: Tagger, images: Tensor, batch: int = 64) -> list[dict[str, str]]:
    """The most probable value of every field, one dict per clip."""
    probs = probabilities(tagger, images, batch)
    n = torch.as_tensor(images).shape[0]
    best = {f: p.argmax(1) for f, p in probs.items()}
    return [{f: tagger.vocab[f][int(best[f][i])] for f in tagger.vocab} for i in range(n)]


def embed(tagger: Tagger, images: Tensor, batch: int = 64) -> np.ndarray:
    """(n, embed_dim) embeddings, batched without gradients."""
    tagger.eval()
    images, dev = torch.as_tensor(images), _device(tagger)
    with torch.inference_mode():
        parts = [tagger.embed(images[i:i + batch].to(dev).float()).cpu().numpy()
                 for i in range(0, images.shape[0], batch)]
    return np.concatenate(parts) if parts else np.zeros((0, tagger.cfg.embed_dim), np.float32)


def adherence(asked: Sequence[Mapping[str, str]], heard: Sequence[Mapping[str, str]],
              vocab: Vocab = VOCAB) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    """Per field that was asked of any clip: the share of the clips asked for it where the
    heard value equals the asked one; plus confusion tables (rows asked, cols heard)."""
    if len(asked) != len(heard):
        raise ValueError(f"{len(asked)} asked tag sets for {len(heard)} heard")
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    confusion: dict[str, np.ndarray] = {}
    for a, h in zip(asked, heard, strict=True):
        for name, value in a.items():
            values = list(vocab.get(name, ()))
            if value not in values:
                raise ValueError(f"unknown {name} {value!r}")
            counts[name] = counts.get(name, 0) + 1
            hits[name] = hits.get(name, 0) + int(h.get(name) == value)
            table = confusion.setdefault(name, np.zeros((len(values),) * 2, dtype=np.int64))
            if h.get(name) in values:  # a heard value outside the vocabulary is a miss only
                table[values.index(value), values.index(h[name])] += 1
    order = [f for f in vocab if f in counts]
    return ({f: hits[f] / counts[f] for f in order},
            {f: confusion[f].tolist() for f in order})


# --- the shipped tagger ---------------------------------------------------------------------
# What `python -m model.tagger --out DIR` (and `crowdtune pretrain --train`) makes with the
# defaults; `crowdtune pretrain` installs it beside the base.
SHIPPED_TAGGER = Path(__file__).parent / "pretrained_tagger"


def install_shipped_tagger(out_dir: Path, shipped: Path = SHIPPED_TAGGER) -> None:
    with atomic_dir(out_dir) as tmp:
        for f in shipped.iterdir():
            shutil.copy(f, tmp / f.name)


def train_on_corpus(clips: int, seed: int = 0, cache_dir: Path | None = None,
                    cfg: TaggerConfig = TaggerConfig(), progress: OnStep | None = None
                    ) -> tuple[Tagger, TaggerReport]:
    """Train on `clips` starter-corpus clips (model/scores.py) as the codec encodes them; the
    held-out split keeps each tune's clips on one side."""
    from model.scores import ClipInfo, excerpt_keys
    from model.train import corpus_images

    mel = MelConfig()
    images, records = corpus_images(clips, seed, mel, "scores", cache_dir)
    keys = excerpt_keys([ClipInfo(**r) for r in records], mel.window_seconds, cache_dir)
    # mode: the clip's own key where its notes give one, not the piece's
    tags = [{**r["tags"], **({"mode": k[1]} if k else {})}
            for r, k in zip(records, keys, strict=True)]
    return train_tagger(images, tags, cfg, progress, groups=[r["source"] for r in records])


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m model.tagger --out DIR`: train the tagger on the starter corpus."""
    ap = argparse.ArgumentParser(prog="python -m model.tagger",
                                 description="Train the tagger on the starter corpus.")
    ap.add_argument("--out", type=Path, required=True, help="folder for the trained tagger")
    ap.add_argument("--clips", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model, report = train_on_corpus(args.clips, args.seed, args.cache_dir)
    model.save(args.out)
    (args.out / "report.json").write_text(json.dumps(asdict(report), indent=1))
    print(report.table())
    print(f"saved to {args.out} ({n_params(model):,} parameters)")


if __name__ == "__main__":
    main()
