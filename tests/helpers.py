"""Tiny models and data for fast tests."""

from __future__ import annotations

from pathlib import Path

from model.codec import MelConfig
from model.pipeline import CrowdtunePipeline
from model.train import make_builtin_pipeline

# 32 mel bins x 32 frames of hop 250 at 16 kHz: 0.5 s windows, a UNet of ~60k parameters.
TINY_MEL = MelConfig(x_res=32, y_res=32, n_fft=512, hop_length=250, n_iter=4, nnls_iter=4)


def tiny_pipeline(seed: int = 0, tags: bool = True) -> CrowdtunePipeline:
    return make_builtin_pipeline(TINY_MEL, seed, tags=tags, channels=(16, 32),
                                 layers_per_block=1)


def make_base(models_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight base where the registry looks for it."""
    base = models_dir / "base"
    tiny_pipeline(seed).save_pretrained(base)
    return base
