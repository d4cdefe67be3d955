"""Pretraining: the built-in architecture and its training on the synthesised corpus.

The loop is the shared training core (model/training.py, also fine-tuning's), which goes
through Accelerate, so the same code runs on this machine's CPU, on a GPU, and unchanged
under `accelerate launch -m model.train ...` on several GPUs (data-parallel; only the main
process saves). EMA weights are what gets saved: they sample noticeably cleaner than the
raw weights after a short run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel

from model import key_prior
from model import tags as tagvocab
from model.codec import MelCodec, MelConfig
from model.pipeline import CrowdtunePipeline
from model.synth import corpus
from model.training import Batch, FitConfig, OnStep, drop_tags, fit

log = logging.getLogger(__name__)

PATCH = (8, 4)
# The tag embedding's initial scale (diffusers' default for class embeddings). Measured on a
# tiny model: at 0.02 the tags still had no effect after 200 steps; at 1.0 they steer.
EMBED_STD = 1.0


@dataclass(frozen=True)
class TrainConfig(FitConfig):
    """Pretraining's settings of the training core (the shipped base's recipe): warmup then
    cosine LR, a long EMA with diffusers' power warmup; batches drawn uniformly."""

    steps: int = 5000
    lr: float = 3e-4
    warmup: int | None = 50
    batch_size: int = 16


def make_unet(mel: MelConfig, patch: tuple[int, int] = PATCH,
              channels: tuple[int, ...] = (64, 128, 192), layers_per_block: int = 2,
              tags: bool = True) -> UNet2DModel:
    """The built-in UNet (defaults: 10M parameters, ~20 ms a forward pass on 2 cores).

    Plain blocks on the fine grids, attention only on the coarsest, where it is cheap and
    gives every frame the whole window's context. With `tags`, a class embedding of the tag
    vocabulary's rows (pipeline.TagEmbedding sums a tag set's rows).
    """
    ph, pw = patch
    depth = len(channels)
    unet = UNet2DModel(
        sample_size=(mel.y_res // ph, mel.x_res // pw),
        in_channels=ph * pw,
        out_channels=ph * pw,
        layers_per_block=layers_per_block,
        block_out_channels=channels,
        down_block_types=("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1),
        attention_head_dim=min(32, channels[-1]),
        norm_num_groups=min(32, channels[0] // 2),
        num_class_embeds=tagvocab.n_embeddings() if tags else None,
    )
    if tags:
        torch.nn.init.normal_(unet.class_embedding.weight, std=EMBED_STD)
    return unet


def make_builtin_pipeline(mel: MelConfig | None = None, seed: int = 0, tags: bool = True,
                          **unet_size: object) -> CrowdtunePipeline:
    """An untrained built-in pipeline (random weights, reproducible by seed), conditioned on
    the tag vocabulary unless `tags` is False."""
    mel = mel or MelConfig()
    torch.manual_seed(seed)
    # v-prediction: with the cosine schedule's near-zero signal at t=T, predicting the noise
    # makes the first sampling steps divide by ~5e-5 and sampling returned pure noise
    # (measured); v keeps the clean-image estimate well-posed at every t.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction", clip_sample=False)
    unet = make_unet(mel, PATCH, tags=tags, **unet_size).eval()  # type: ignore[arg-type]
    vocab = {f: list(v) for f, v in tagvocab.VOCAB.items()} if tags else None
    return CrowdtunePipeline(unet=unet, scheduler=scheduler, mel=MelCodec(mel), patch_size=PATCH,
                             tag_vocab=vocab)


def corpus_images(n: int, seed: int, mel: MelConfig, corpus_name: str = "scores",
                  cache_dir: Path | None = None) -> tuple[torch.Tensor, list[dict]]:
    """n one-window clips of the starter corpus, encoded: (n, 1, y_res, x_res), and each
    clip's record (for "scores", a ClipInfo dict with its `tags`; for the older "synth"
    corpus, its PieceParams)."""
    codec = MelCodec(mel)
    if corpus_name == "scores":
        from model.scores import score_corpus

        audio, infos = score_corpus(n, seed, mel.window_seconds, mel.sample_rate, cache_dir)
        records = [i.to_dict() for i in infos]
        images = [codec.encode(torch.from_numpy(audio[s:s + 64]))[..., : mel.x_res]
                  for s in range(0, n, 64)]  # chunks keep peak memory small
        return torch.cat(images), records
    images, records = [], []
    for start in range(0, n, 64):
        audio, p = corpus(min(64, n - start), seed + start, mel.window_seconds)
        images.append(codec.encode(torch.from_numpy(audio))[..., : mel.x_res])
        records += [x.to_dict() for x in p]
    return torch.cat(images), records


def train_denoiser(
    pipe: CrowdtunePipeline,
    images: torch.Tensor,
    cfg: TrainConfig,
    weights: torch.Tensor | None = None,
    progress: OnStep | None = None,
    tags: list[dict[str, str]] | None = None,
) -> list[float]:
    """DDPM denoising on mel images, optionally weighted per example; EMA weights kept.

    `weights` (one per image, mean ~1) turn the loss into reward-weighted denoising; `tags`
    (one tag set per image) condition a tag-conditioned model, with tag dropout.
    Returns the loss curve; the pipeline's UNet ends holding the EMA weights (on the CPU).
    The loop is the shared core (model/training.py): batches drawn uniformly, warmup then
    cosine LR, a long EMA with diffusers' power warmup.
    """
    with torch.no_grad():
        latents = torch.cat([pipe.images_to_latents(c) for c in images.split(64)])
    labels = null = None
    if pipe.accepts_tags:
        labels = torch.cat([pipe.tag_labels(t, 1) for t in tags or [{}] * len(images)]).cpu()
        null = pipe.tag_labels(None, 1).cpu()

    def draw_batch(gen: torch.Generator) -> Batch:
        idx = torch.randint(len(latents), (cfg.batch_size,), generator=gen)
        lab = None if labels is None else drop_tags(labels[idx], null, gen)
        return latents[idx], None if weights is None else weights[idx], lab

    return fit(pipe.unet, pipe.scheduler, draw_batch, cfg, on_step=progress)


@dataclass(frozen=True)
class PretrainConfig:
    clips: int = 4096
    corpus: str = "scores"  # model/scores.py; "synth" is the older synthesiser-only corpus
    train: TrainConfig = TrainConfig()
    # The key stage's steps (None: half of train.steps; 0: none). After the first stage the
    # base gains the key prior (model/key_prior.py) and goes on, at a lower LR, on the same
    # clips, each tagged with its own excerpt's key. Why a second stage rather than the prior
    # from the start: that is what was measured (bench/bench_key_prior.py, 2,500 steps on the
    # 5,000-step base), and it leaves the first stage's recipe and results as they were.
    key_steps: int | None = None

    def key_stage(self) -> TrainConfig | None:
        steps = self.train.steps // 2 if self.key_steps is None else self.key_steps
        if self.corpus != "scores" or steps <= 0:
            return None  # only the score clips have keys
        return TrainConfig(steps=steps, lr=1e-4, warmup=min(20, steps), seed=self.train.seed + 21,
                           batch_size=self.train.batch_size)

    def to_dict(self) -> dict:
        key = self.key_stage()
        return {"clips": self.clips, "corpus": self.corpus, "train": asdict(self.train),
                "key": None if key is None else asdict(key)}


def keyed_tags(records: list[dict], seconds: float, cache_dir: Path | None = None
               ) -> list[dict[str, str]]:
    """Corpus clips' tags (their `ClipInfo` records) with each clip's own key: the mode and
    tonic of the notes sounding in it (model.scores.excerpt_keys), as the key prior learnt
    them; the synthesiser's clips and clips without notes keep their tags."""
    from model.scores import ClipInfo, excerpt_keys

    keys = excerpt_keys([ClipInfo(**r) for r in records], seconds, cache_dir)
    return [{**r["tags"], **key_prior.key_tags(k)} for r, k in zip(records, keys, strict=True)]


def train_key_stage(pipe: CrowdtunePipeline, images: torch.Tensor, records: list[dict],
                    cfg: TrainConfig, progress: OnStep | None = None,
                    cache_dir: Path | None = None) -> list[float]:
    """Add the key prior to a trained tag-conditioned base and train it on corpus clips
    (their `ClipInfo` records) tagged with each clip's own key (model.scores.excerpt_keys;
    the synthesiser's clips keep the tonic "any")."""
    tags = keyed_tags(records, pipe.mel.config.window_seconds, cache_dir)
    pipe.add_key_prior(torch.Generator().manual_seed(cfg.seed))
    return train_denoiser(pipe, images, cfg, progress=progress, tags=tags)


def pretrain(out_dir: Path, cfg: PretrainConfig, progress: OnStep | None = None,
             cache_dir: Path | None = None) -> dict:
    """Train the built-in base on the synthesised corpus and save it with its recipe."""
    start = time.perf_counter()
    mel = MelConfig()
    images, records = corpus_images(cfg.clips, cfg.train.seed, mel, cfg.corpus, cache_dir)
    tags = [r["tags"] for r in records] if cfg.corpus == "scores" else None
    pipe = make_builtin_pipeline(mel, seed=cfg.train.seed, tags=tags is not None)
    key = cfg.key_stage()
    total = cfg.train.steps + (key.steps if key else 0)
    losses = train_denoiser(pipe, images, cfg.train, tags=tags, progress=progress and (
        lambda s, _n, loss: progress(s, total, loss)))
    if key is not None:
        losses = train_key_stage(pipe, images, records, key, cache_dir=cache_dir,
                                 progress=progress and (lambda s, _n, loss: progress(
                                     cfg.train.steps + s, total, loss)))
    report = {
        "recipe": cfg.to_dict(),
        "corpus_clips": len(records),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if Accelerator().is_main_process:
        pipe.save_pretrained(out_dir)
        (out_dir / "pretrain.json").write_text(json.dumps(report, indent=2))
    return report


# The base that `crowdtune pretrain --train --steps N` makes (N and the rest of the recipe in
# its pretrain.json), shipped in half precision so a new install skips a long training run.
SHIPPED_BASE = Path(__file__).parent / "pretrained"


def ship_base(base_dir: Path, out: Path = SHIPPED_BASE) -> None:
    """Write a trained base as the shipped one (fp16 weights: half the size)."""
    pipe = CrowdtunePipeline.from_pretrained(base_dir)
    pipe.unet.to(torch.float16)
    shutil.rmtree(out, ignore_errors=True)
    pipe.save_pretrained(out)
    shutil.copy(base_dir / "pretrain.json", out / "pretrain.json")


def install_shipped_base(out_dir: Path, shipped: Path | None = None) -> None:
    """The shipped base, back in full precision, as a regular base folder."""
    shipped = shipped or SHIPPED_BASE
    pipe = CrowdtunePipeline.from_pretrained(shipped)
    pipe.unet.to(torch.float32)
    pipe.save_pretrained(out_dir)
    shutil.copy(shipped / "pretrain.json", out_dir / "pretrain.json")


def main() -> None:
    """Entry point for `accelerate launch -m model.train --out DIR` on several GPUs."""
    ap = argparse.ArgumentParser(description="Pretrain the built-in crowdtune base model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--clips", type=int, default=PretrainConfig.clips)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    cfg = PretrainConfig(clips=a.clips, train=TrainConfig(steps=a.steps, batch_size=a.batch_size,
                                                          seed=a.seed))
    log.info("pretrain done: %s", pretrain(a.out, cfg))


if __name__ == "__main__":
    main()
