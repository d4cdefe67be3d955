"""The one training core (model/training.py) that pretraining and fine-tuning share."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model.finetune as finetune_mod
import model.train as train_mod
from bot.core.audio import encode
from model.codec import MelCodec
from model.contracts import (
    DataEvent,
    FinetuneSpec,
    ItemKind,
    PreferencePair,
    RatedFile,
    StepEvent,
    TrainItem,
    TrainResult,
    parse_event,
)
from model.finetune import finetune, fit_config
from model.pipeline import CrowdtunePipeline
from model.train import TrainConfig, train_denoiser
from model.training import FitConfig, denoise_loss, fit
from tests.helpers import TINY_MEL, make_base, tiny_pipeline


def _latents(pipe: CrowdtunePipeline, n: int = 6) -> torch.Tensor:
    t = np.arange(TINY_MEL.window_samples) / TINY_MEL.sample_rate
    audio = np.concatenate([0.4 * np.sin(2 * np.pi * (300 + 150 * i) * t) for i in range(n)])
    images = pipe.mel.encode_windows(torch.from_numpy(audio).float())
    return pipe.images_to_latents(images)


def _uniform(latents: torch.Tensor, batch: int = 4):
    def draw(gen: torch.Generator):
        return latents[torch.randint(len(latents), (batch,), generator=gen)], None, None
    return draw


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().cpu().clone() for p in module.parameters()]  # (on a GPU too)


def _held_out_loss(pipe: CrowdtunePipeline, latents: torch.Tensor) -> float:
    """The denoising loss on fixed noise and timesteps (the training loss is too noisy)."""
    gen = torch.Generator().manual_seed(99)
    x0 = latents.repeat(8, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (len(x0),), generator=gen)
    with torch.no_grad():
        return float(denoise_loss(pipe.unet, pipe.scheduler, x0, noise, t))


def test_fit_lowers_the_loss_and_leaves_ema_weights_on_the_cpu():
    pipe = tiny_pipeline(tags=False)
    latents = _latents(pipe)
    before = _held_out_loss(pipe, latents)
    raw: list[torch.Tensor] = []
    losses = fit(pipe.unet, pipe.scheduler, _uniform(latents, 8),
                 FitConfig(steps=60, lr=2e-3, warmup=5, ema_decay=0.9, seed=1),
                 on_step=lambda s, n, _loss: s == n and raw.extend(_params(pipe.unet)))
    assert len(losses) == 60
    assert not pipe.unet.training
    assert _held_out_loss(pipe, latents) < 0.8 * before
    ema = _params(pipe.unet)
    assert all(p.device.type == "cpu" for p in ema)
    # The unet ends holding the EMA, not the last step's raw weights.
    assert max(float((a - b).abs().max()) for a, b in zip(ema, raw, strict=True)) > 1e-4


def test_finetune_ema_follows_the_short_schedule():
    """Fine-tuning's EMA is diffusers' EMAModel with decay min(0.95, (1+s)/(10+s)): checked
    on the decay function, and on the weights `fit` leaves against an EMA kept by hand."""
    cfg = fit_config(FinetuneSpec(parent_dir="", out_dir="", items=[], steps=7, lr=1e-3))
    ema = cfg.ema([torch.nn.Parameter(torch.zeros(1))])
    # diffusers' first update copies the weights (decay 0); from then on, the schedule.
    assert ema.get_decay(1) == 0.0
    for step in range(2, 300):
        s = step - 1
        assert ema.get_decay(step) == pytest.approx(min(0.95, (1 + s) / (10 + s)))

    pipe = tiny_pipeline(tags=False)
    latents = _latents(pipe)
    snapshots: list[list[torch.Tensor]] = []
    fit(pipe.unet, pipe.scheduler, _uniform(latents), cfg,
        on_step=lambda *_: snapshots.append(_params(pipe.unet)))
    by_hand = snapshots[0]
    for s, weights in enumerate(snapshots[1:], start=1):
        decay = min(0.95, (1 + s) / (10 + s))
        by_hand = [e * decay + w * (1 - decay) for e, w in zip(by_hand, weights, strict=True)]
    for mine, theirs in zip(_params(pipe.unet), by_hand, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_fit_is_seeded_and_adds_the_extra_loss_term():
    runs = []
    for extra in (None, lambda _unet, _gen, device: torch.tensor(0.5, device=device)):
        pipe = tiny_pipeline(tags=False)
        runs.append(fit(pipe.unet, pipe.scheduler, _uniform(_latents(pipe)),
                        FitConfig(steps=3, lr=1e-3, seed=3), extra_loss=extra))
    # Same seed, same draws; a constant term changes the loss, not the gradient.
    assert np.allclose(np.array(runs[1]) - np.array(runs[0]), 0.5, atol=1e-5)


def test_pretraining_keeps_warmup_and_cosine_and_finetuning_a_constant_lr():
    pre = FitConfig(steps=100, lr=1.0, warmup=10)
    assert pre.lr_factor(0) == pytest.approx(0.1) and pre.lr_factor(9) == pytest.approx(1.0)
    assert pre.lr_factor(10) == pytest.approx(1.0) and pre.lr_factor(100) == pytest.approx(0.1)
    ft = fit_config(FinetuneSpec(parent_dir="", out_dir="", items=[], steps=50))
    assert {ft.lr_factor(s) for s in range(50)} == {1.0}
    assert (ft.grad_clip, ft.weight_decay, ft.ema_warmup) == (1.0, 1e-2, False)


def test_pretraining_and_finetuning_both_train_through_the_core(monkeypatch, tmp_path):
    calls = []
    real_fit = train_mod.fit

    def spy(unet, scheduler, draw_batch, cfg, extra_loss=None, on_step=None, params=None):
        calls.append(cfg)
        return real_fit(unet, scheduler, draw_batch, cfg, extra_loss, on_step, params)

    monkeypatch.setattr(train_mod, "fit", spy)
    monkeypatch.setattr(finetune_mod, "fit", spy)
    pipe = tiny_pipeline()
    images = pipe.mel.encode_windows(torch.randn(TINY_MEL.window_samples * 2) * 0.1)
    train_denoiser(pipe, images, TrainConfig(steps=2, batch_size=2, warmup=1))
    base = make_base(tmp_path)
    finetune(FinetuneSpec(parent_dir=str(base), out_dir=str(tmp_path / "out"), items=[],
                          steps=2, batch_size=2, replay_clips=4), report=lambda _e: None)
    assert [(c.warmup, c.ema_warmup) for c in calls] == [(1, True), (None, False)]


def test_finetune_child_writes_a_candidate_and_reports_typed_events(tmp_path):
    """Uploads and rated tracks (with their mels), a reward model, DPO on: a candidate."""
    base = make_base(tmp_path / "models")
    parent = CrowdtunePipeline.from_pretrained(base)
    sr = TINY_MEL.sample_rate
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        audio = (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * np.arange(sr) / sr)
                 + 0.01 * rng.standard_normal(sr)).astype(np.float32)
        path = str(encode(audio, sr, tmp_path / f"t{i}.wav", "wav"))
        mel = tmp_path / f"t{i}.npy"
        np.save(mel, MelCodec(TINY_MEL).encode_windows(torch.from_numpy(audio)).numpy())
        items.append(TrainItem(key=f"track:{i}", path=path, weight=1.0 + i,
                               kind=ItemKind.TRACK, mel=str(mel)))
    items.append(TrainItem(key="upload:1", path=items[0].path, weight=2.0,
                           kind=ItemKind.UPLOAD))
    spec = FinetuneSpec(parent_dir=str(base), out_dir=str(tmp_path / "cand"), items=items,
                        pairs=[PreferencePair("track:3", "track:0"),
                               PreferencePair("track:2", "track:1")],
                        rated=[RatedFile(it.path, float(i)) for i, it in enumerate(items)],
                        reward_model_out=str(tmp_path / "rm.json"),
                        steps=10, batch_size=4, replay_clips=8, track_share=0.3,
                        dpo_weight=0.5, dpo_min_pairs=2, pool_cache=str(tmp_path / "cache"))
    lines: list[str] = []
    result = finetune(spec, report=lambda e: lines.append(e.to_json()))
    events = [parse_event(line, TrainResult) for line in lines]
    assert isinstance(events[0], DataEvent) and events[0].dpo and events[0].pairs == 2
    assert [e.step for e in events if isinstance(e, StepEvent)] == [10]
    assert events[-1] == result and result.dpo and result.windows == 5 * 2  # 1 s each
    assert result.reward_model_corr is not None and (tmp_path / "rm.json").is_file()
    assert json.loads(lines[-1])["event"] == "done"
    cand = CrowdtunePipeline.from_pretrained(spec.out_dir)
    changed = [not torch.equal(a, b) for a, b in zip(cand.unet.parameters(),
                                                     parent.unet.parameters(), strict=True)]
    assert any(changed)
    assert not list(tmp_path.glob(".cand.partial"))


def test_items_whose_files_were_deleted_meanwhile_are_skipped(tmp_path):
    """A member forgotten (or an upload removed) while a round runs: its file is gone by the
    time fine-tuning reads it, and fine-tuning goes on without it."""
    from model.contracts import ItemKind, TrainItem
    from model.finetune import item_images

    pipe = tiny_pipeline(tags=False)
    sr = pipe.mel.config.sample_rate
    kept = tmp_path / "kept.wav"
    encode(np.sin(np.arange(3 * sr) * 2 * np.pi * 440 / sr).astype(np.float32) * 0.3, sr,
           kept, "wav")
    items = [TrainItem("upload:1", str(tmp_path / "gone.wav"), 1.0, ItemKind.UPLOAD),
             TrainItem("upload:2", str(kept), 1.0, ItemKind.UPLOAD)]
    images, weights, kinds, index, _tags = item_images(pipe, items, per_item=4)
    assert list(index) == ["upload:2"] and len(images) == len(weights) == len(kinds) > 0
