"""The one training core: denoising steps through Accelerate, with an EMA of the weights.

Pretraining (model/train.py) and fine-tuning (model/finetune.py) both call `fit`; they
differ only in how a batch is drawn (`draw_batch`), in their settings (`FitConfig`: the
learning-rate schedule, the EMA's), and in an optional extra loss term (fine-tuning's
Diffusion-DPO). Everything else is shared:

- one denoising step: noise, a timestep, `add_noise`, the v (or noise) target
  (`denoise_target`), min-SNR weighting (`loss_weights`), bf16 autocast where the hardware
  has it (`autocast`);
- one EMA, diffusers' `EMAModel`; the unet ends holding the EMA weights, on the CPU;
- one loop: `accelerator.prepare`, `backward`, gradient clipping, AdamW, an LR schedule.

Through Accelerate the same code runs on the CPU, on a GPU when there is one, and under
`accelerate launch` on several. Random draws come from a seeded CPU generator and move to
the device after, so a run's batches, noise and timesteps do not depend on the hardware.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel

# (x0 latents on the CPU, per-example loss weights or None for a plain mean, per-example tag
# labels (n, fields) for a tag-conditioned unet or None)
Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
DrawBatch = Callable[[torch.Generator], Batch]
# An extra loss term: (the unet being trained, the run's generator, the device) -> a scalar.
ExtraLoss = Callable[[torch.nn.Module, torch.Generator, torch.device], torch.Tensor]
OnStep = Callable[[int, int, float], None]  # (step, of steps, loss), step counted from 1


def denoise_target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to output: the noise, or the velocity for v-prediction."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return noise


def loss_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma weighting (Hang et al. 2023): the many nearly-clean timesteps stop
    dominating the gradient; measurably faster convergence on this CPU budget."""
    ab = scheduler.alphas_cumprod.to(t.device)[t]
    snr = ab / (1 - ab)
    if scheduler.config.prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast(device: torch.device):
    """bf16 autocast where the hardware has it: 1.6x faster training on this machine's AMX
    cores (measured); CPUs without bf16 units would emulate it slowly, so they run fp32."""
    enabled = device.type == "cuda" or (device.type == "cpu" and _cpu_has_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def drop_tags(labels: torch.Tensor, null: torch.Tensor, gen: torch.Generator,
              p_field: float = 0.3, p_all: float = 0.1) -> torch.Tensor:
    """Tag dropout for classifier-free guidance: each field's label becomes its "any" row
    with probability `p_field`, a whole tag set with `p_all`; so the model also learns the
    partly tagged and the unconditional case (what guidance subtracts)."""
    n, f = labels.shape
    drop = torch.rand((n, f), generator=gen) < p_field
    drop |= torch.rand((n, 1), generator=gen) < p_all
    return torch.where(drop, null.expand(n, f), labels)


def denoise_errors(unet: torch.nn.Module, scheduler: DDPMScheduler, x0: torch.Tensor,
                   noise: torch.Tensor, t: torch.Tensor,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example mean squared error of the UNet's denoising target (not yet weighted)."""
    xt = scheduler.add_noise(x0, noise, t)
    target = denoise_target(scheduler, x0, noise, t)
    with autocast(x0.device):
        pred = unet(xt, t, class_labels=labels).sample
    return (pred.float() - target).pow(2).mean(dim=(1, 2, 3))


def denoise_loss(unet: torch.nn.Module, scheduler: DDPMScheduler, x0: torch.Tensor,
                 noise: torch.Tensor, t: torch.Tensor,
                 weights: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """The min-SNR-weighted denoising loss of a batch: its mean, or its `weights`-weighted
    mean (reward-weighted denoising)."""
    err = denoise_errors(unet, scheduler, x0, noise, t, labels) * loss_weights(scheduler, t)
    if weights is None:
        return err.mean()
    w = weights.to(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)


@dataclass(frozen=True)
class FitConfig:
    steps: int
    lr: float
    warmup: int | None = None  # None: constant LR; else linear warmup, then cosine to 10%
    ema_decay: float = 0.999
    # diffusers' EMA schedules: True, 1 - (1 + s)^-power (long runs); False,
    # min(ema_decay, (1 + s) / (10 + s)) (short runs: it follows the last few dozen steps).
    ema_warmup: bool = True
    ema_power: float = 2 / 3
    grad_clip: float = 1.0
    weight_decay: float = 1e-2
    seed: int = 0

    def lr_factor(self, step: int) -> float:
        if self.warmup is None:
            return 1.0
        if step < self.warmup:
            return (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    def ema(self, parameters) -> EMAModel:
        return EMAModel(parameters, decay=self.ema_decay, use_ema_warmup=self.ema_warmup,
                        power=self.ema_power)


def fit(unet: torch.nn.Module, scheduler: DDPMScheduler, draw_batch: DrawBatch,
        cfg: FitConfig, extra_loss: ExtraLoss | None = None,
        on_step: OnStep | None = None,
        params: list[torch.nn.Parameter] | None = None) -> list[float]:
    """Train `unet` to denoise batches from `draw_batch(generator)` for `cfg.steps` steps.

    Per step: a batch, then its noise and timesteps, all drawn from one generator seeded by
    `cfg.seed` (plus the process index under `accelerate launch`), on the CPU; the weighted
    denoising loss, plus `extra_loss(unet, generator, device)` when given; backward, clip,
    AdamW, LR schedule, EMA update. Returns the loss per step. The unet ends in eval mode,
    on the CPU, holding the EMA weights. `params`: the parameters to train (default: all;
    a LoRA adapter's factors, model/lora.py).
    """
    accelerator = Accelerator()
    device = accelerator.device
    gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    unet.train()
    params = list(unet.parameters()) if params is None else params
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
    model, opt, sched = accelerator.prepare(unet, opt, sched)
    ema = cfg.ema(params)  # after prepare: the shadow weights live on the device
    n_train = scheduler.config.num_train_timesteps
    losses: list[float] = []
    for step in range(cfg.steps):
        x0, weights, labels = draw_batch(gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, n_train, (len(x0),), generator=gen)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        if labels is not None:
            labels = labels.to(device)
        loss = denoise_loss(model, scheduler, x0, noise, t, weights, labels)
        if extra_loss is not None:
            loss = loss + extra_loss(model, gen, device)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema.step(params)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, cfg.steps, losses[-1])
    ema.copy_to(params)
    accelerator.unwrap_model(model).to("cpu").eval()
    accelerator.free_memory()
    return losses
