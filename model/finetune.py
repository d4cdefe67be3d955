"""Fine-tuning a guild's champion on its community's feedback (run as a child process).

    python -m model.finetune SPEC.json

The spec names the parent pipeline, the candidate folder to write, the feedback examples
(audio files with non-negative weights), preference pairs, and the settings. The objective:

- reward-weighted denoising: feedback windows are drawn with probability proportional to
  their weight (drawing, rather than weighting the loss, keeps the gradient's variance low
  when a few tracks carry most of the weight);
- replay: a share of every batch comes from the starter corpus, against forgetting;
- Diffusion-DPO (Wallace et al. 2023) on pairs where one member rated two tracks far apart:
  the model is pushed to denoise the preferred window better, and the rejected one worse,
  than the frozen parent does.

Progress goes to stdout as JSON lines; the candidate is written to a temporary folder and
renamed into place only when training finished, so a killed child leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.pipeline import CrowdtunePipeline
from model.train import autocast, corpus_images, denoise_target, loss_weights

log = logging.getLogger(__name__)


@dataclass
class FinetuneSpec:
    parent_dir: str
    out_dir: str
    items: list[dict]  # {"key": str, "path": str, "weight": float}
    pairs: list[list[str]] = field(default_factory=list)  # [preferred key, rejected key]
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    replay_share: float = 0.25
    replay_clips: int = 256
    dpo_beta: float = 2000.0
    dpo_weight: float = 0.5
    dpo_min_pairs: int = 4
    windows_per_item: int = 4
    ema_decay: float = 0.95
    seed: int = 0
    threads: int = 2

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> FinetuneSpec:
        return cls(**json.loads(Path(path).read_text()))


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    from pydub import AudioSegment

    seg = AudioSegment.from_file(path).set_channels(1).set_frame_rate(sample_rate)
    scale = float(1 << (8 * seg.sample_width - 1))
    return np.array(seg.get_array_of_samples(), dtype=np.float32) / scale


def item_images(pipe: CrowdtunePipeline, items: list[dict], per_item: int
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[int]]]:
    """Mel windows of every item, each window carrying its item's weight / window count."""
    sr = pipe.mel.config.sample_rate
    images, weights, index, count = [], [], {}, 0
    for it in items:
        if it.get("mel"):  # the model's own output, exactly as generated
            wins = torch.from_numpy(np.load(it["mel"]).astype(np.float32))[:per_item]
        else:  # uploads (and tracks whose mel is gone): encode the audio
            wins = pipe.mel.encode_windows(torch.from_numpy(load_audio(it["path"], sr)))
            wins = wins[:per_item]
        index[it["key"]] = list(range(count, count + len(wins)))
        count += len(wins)
        images.append(wins)
        weights += [float(it["weight"]) / len(wins)] * len(wins)
    return torch.cat(images), torch.tensor(weights), index


def dpo_loss(unet, ref_unet, scheduler, x_w: torch.Tensor, x_l: torch.Tensor, beta: float,
             gen: torch.Generator) -> torch.Tensor:
    """Diffusion-DPO: same noise and timestep for the preferred and the rejected window."""
    n = len(x_w)
    noise = torch.randn(x_w.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen)
    x = torch.cat([scheduler.add_noise(x_w, noise, t), scheduler.add_noise(x_l, noise, t)])
    tt = torch.cat([t, t])
    target = torch.cat([denoise_target(scheduler, x_w, noise, t),
                        denoise_target(scheduler, x_l, noise, t)])
    with autocast(x.device):
        err = (unet(x, tt).sample.float() - target).pow(2).mean(dim=(1, 2, 3))
        with torch.no_grad():
            ref_err = (ref_unet(x, tt).sample.float() - target).pow(2).mean(dim=(1, 2, 3))
    model_diff = err[:n] - err[n:]
    ref_diff = ref_err[:n] - ref_err[n:]
    return -F.logsigmoid(-0.5 * beta * (model_diff - ref_diff)).mean()


def finetune(spec: FinetuneSpec, report=print) -> dict:
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    start = time.perf_counter()
    pipe = CrowdtunePipeline.from_pretrained(spec.parent_dir)
    images, weights, index = item_images(pipe, spec.items, spec.windows_per_item)
    with torch.no_grad():
        latents = pipe.images_to_latents(images)
        replay = None
        if spec.replay_share > 0 and spec.replay_clips > 0 and pipe.vqvae is None:
            rimg, _ = corpus_images(spec.replay_clips, 10_000 + spec.seed, pipe.mel.config)
            replay = pipe.images_to_latents(rimg)
    pairs = [(index[a], index[b]) for a, b in spec.pairs if a in index and b in index]
    use_dpo = spec.dpo_weight > 0 and len(pairs) >= spec.dpo_min_pairs
    report(json.dumps({"event": "data", "windows": len(latents), "pairs": len(pairs),
                       "replay": 0 if replay is None else len(replay), "dpo": use_dpo}))

    unet = pipe.unet
    ref_unet = copy.deepcopy(unet).eval().requires_grad_(False) if use_dpo else None
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=spec.lr, weight_decay=1e-2)
    sched = pipe.scheduler
    n_replay = round(spec.batch_size * spec.replay_share) if replay is not None else 0
    n_feedback = spec.batch_size - n_replay
    probs = weights / weights.sum()
    losses = []
    for step in range(spec.steps):
        idx = torch.multinomial(probs, n_feedback, replacement=True, generator=gen)
        x0 = latents[idx]
        if n_replay:
            ridx = torch.randint(len(replay), (n_replay,), generator=gen)
            x0 = torch.cat([x0, replay[ridx]])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
        with autocast(x0.device):
            pred = unet(sched.add_noise(x0, noise, t), t).sample
        err = (pred.float() - denoise_target(sched, x0, noise, t)).pow(2).mean(dim=(1, 2, 3))
        loss = (err * loss_weights(sched, t)).mean()
        if use_dpo:
            pick = torch.randint(len(pairs), (max(2, spec.batch_size // 4),), generator=gen)
            chosen = [pairs[i] for i in pick.tolist()]
            x_w = torch.stack([latents[w[int(torch.randint(len(w), (1,), generator=gen))]]
                               for w, _ in chosen])
            x_l = torch.stack([latents[lo[int(torch.randint(len(lo), (1,), generator=gen))]]
                               for _, lo in chosen])
            loss = loss + spec.dpo_weight * dpo_loss(unet, ref_unet, sched, x_w, x_l,
                                                     spec.dpo_beta, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():  # a short EMA: smooths the last few dozen steps
            decay = min(spec.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0 or step + 1 == spec.steps:
            report(json.dumps({"event": "step", "step": step + 1, "steps": spec.steps,
                               "loss": round(float(np.mean(losses[-10:])), 4)}))
    pipe.unet = ema
    out = Path(spec.out_dir)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    result = {"event": "done", "windows": len(latents), "pairs": len(pairs), "dpo": use_dpo,
              "final_loss": round(float(np.mean(losses[-10:])), 4),
              "seconds": round(time.perf_counter() - start, 1)}
    report(json.dumps(result))
    return result


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = FinetuneSpec.load(Path(sys.argv[1]))
    try:
        finetune(spec, report=lambda line: print(line, flush=True))
    except Exception as exc:  # noqa: BLE001 - the parent reads one line and marks the round
        print(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}),
              flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
