"""LoRA adapters: small versions over a guild's full version, trained by the one core."""

from __future__ import annotations

import numpy as np
import torch

from bot.core.audio import encode
from bot.core.worker import GenerationJob, run_job
from model.contracts import FinetuneSpec, ItemKind, TrainItem
from model.corpus_pool import pool_corpus
from model.finetune import finetune
from model.lora import (
    ADAPTER_WEIGHTS,
    AdapterConfig,
    adapter_state,
    add_adapter,
    is_adapter,
    remove_adapter,
)
from model.pipeline import CrowdtunePipeline
from model.registry import ModelRegistry
from tests.helpers import TINY_MEL, make_base, tiny_pipeline


def _inputs(pipe, n: int = 2):
    x = torch.randn((n, *pipe.latent_shape()), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])[:n]
    return x, t, pipe.tag_labels(None, n)


def _out(unet, x, t, labels):
    with torch.no_grad():
        return unet(x, t, class_labels=labels).sample


def test_an_adapter_starts_as_no_change_trains_alone_and_merges_exactly():
    pipe = tiny_pipeline()
    x, t, lab = _inputs(pipe)
    before = _out(pipe.unet, x, t, lab)
    cfg = AdapterConfig(rank=2, alpha=4.0, base="v0001")
    trainable = add_adapter(pipe.unet, cfg)
    assert torch.allclose(_out(pipe.unet, x, t, lab), before)  # B starts at zero
    assert trainable and all(p.requires_grad for p in trainable)
    frozen = [p for n, p in pipe.unet.named_parameters() if ".lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    with torch.no_grad():
        for p in trainable:
            p.add_(0.05 * torch.randn_like(p))
    adapted = _out(pipe.unet, x, t, lab)
    assert not torch.allclose(adapted, before, atol=1e-4)
    state = adapter_state(pipe.unet)
    assert set(state) == {n for n, _ in pipe.unet.named_parameters() if ".lora_" in n}
    remove_adapter(pipe.unet, merge=True)  # W + alpha/rank B @ A: the same function
    assert torch.allclose(_out(pipe.unet, x, t, lab), adapted, atol=1e-4)
    assert not any(".lora_" in n for n, _ in pipe.unet.named_parameters())


def _spec(tmp_path, parent, out, steps: int = 4) -> FinetuneSpec:
    sr = TINY_MEL.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 330 * np.arange(sr) / sr)).astype(np.float32)
    song = str(encode(audio, sr, tmp_path / "song.wav", "wav"))
    return FinetuneSpec(parent_dir=str(parent), out_dir=str(out), steps=steps, batch_size=2,
                        lr=1e-2, replay_clips=0, lora_rank=2, lora_alpha=2.0, threads=1,
                        items=[TrainItem(key="upload:1", path=song, weight=1.0,
                                         kind=ItemKind.UPLOAD)])


def test_a_lineage_of_adapters_over_one_full_version(tmp_path):
    make_base(tmp_path / "models")
    registry = ModelRegistry(tmp_path / "models")
    v1 = registry.ensure_guild("g")
    parent = registry.version_dir("g", v1.version)
    finetune(_spec(tmp_path, parent, tmp_path / "cand"), report=lambda _e: None)
    cand = tmp_path / "cand"
    assert is_adapter(cand) and not (cand / "unet").exists()
    assert AdapterConfig.load(cand).base == "v0001"
    v2 = registry.add_version("g", cand, "v0001", "finetune")
    folder = registry.version_dir("g", v2.version)
    size = sum(p.stat().st_size for p in folder.iterdir())
    full = sum(p.stat().st_size for p in parent.rglob("*") if p.is_file())
    assert size < full / 3  # a tiny UNet: the factors are a third of it at most
    loaded = CrowdtunePipeline.from_pretrained(folder)  # the base, merged with the adapter
    base = CrowdtunePipeline.from_pretrained(parent)
    x, t, lab = _inputs(base)
    assert not torch.allclose(_out(loaded.unet, x, t, lab), _out(base.unet, x, t, lab))
    # The bot generates from it and rehearses its base's corpus (an adapter folder has no
    # model_index.json of its own: a promoted adapter once stopped generation).
    made = run_job(GenerationJob(model_dir=str(folder), seeds=(1,), seconds=0.5, steps=2,
                                 tags=("mode=minor",)))
    assert len(made.audios) == 1 and made.tags == [{"mode": "minor"}]
    assert pool_corpus(folder) == pool_corpus(parent)
    # The next round trains the same adapter on: still one adapter over v0001.
    finetune(_spec(tmp_path, folder, tmp_path / "cand2"), report=lambda _e: None)
    assert AdapterConfig.load(tmp_path / "cand2").base == "v0001"
    v3 = registry.add_version("g", tmp_path / "cand2", v2.version, "finetune")
    registry.promote("g", v3.version)
    kept = registry.kept("g", keep_recent=1)
    assert {"ancestor", "base of v0003"} <= set(kept["v0001"]) and "v0002" in kept
    assert (registry.version_dir("g", v3.version) / ADAPTER_WEIGHTS).is_file()
