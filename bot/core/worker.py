"""A generation job, as a worker process runs it: loaded pipelines stay warm between jobs.

Generation takes seconds of CPU; in the bot's process it would stall the gateway heartbeat.
So it runs in a spawned process (torch and fork don't mix) or on a Ray actor
(bot/core/compute.py), which caches the loaded pipeline between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import tags as tagvocab

_pipelines: dict[tuple[str, float], object] = {}


@dataclass(frozen=True)
class GenerationJob:
    model_dir: str
    seeds: tuple[int, ...]  # one track per seed, each reproducible on its own
    seconds: float
    steps: int
    seed_audio: tuple[str, ...] = ()  # WAV paths for upload-seeded generation
    # One `model.tags.format_tags` string per seed ("": none); plain strings, so the job
    # pickles small and compares by value. Empty: every track unconditioned.
    tags: tuple[str, ...] = ()
    # How closely each track follows its tags (model/tags.py); empty: the default.
    guidance: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.tags and len(self.tags) != len(self.seeds):
            raise ValueError(f"{len(self.tags)} tag sets for {len(self.seeds)} seeds")
        if self.guidance and len(self.guidance) != len(self.seeds):
            raise ValueError(f"{len(self.guidance)} guidance scales for {len(self.seeds)} seeds")


@dataclass(frozen=True)
class GenerationResult:
    """A job's tracks, in seed order: audio, the mel windows the model made, and the tags
    each was made with ({} when the model takes no tags: they were not used)."""

    audios: list[np.ndarray]
    sample_rate: int
    mels: list[np.ndarray]
    tags: list[dict[str, str]]


def init_worker(threads: int) -> None:
    """A generation process's start: its torch threads; it ends with its parent."""
    import torch

    from model.contracts import exit_with_parent

    exit_with_parent()

    torch.set_num_threads(threads)


def _load(model_dir: str):
    from model.lora import full_model_dir
    from model.pipeline import CrowdtunePipeline

    # Version folders never change; the mtime guards a base that was re-pretrained (an
    # adapter version has no index of its own: its base's).
    key = (model_dir, (full_model_dir(Path(model_dir)) / "model_index.json").stat().st_mtime)
    if key not in _pipelines:
        _pipelines.clear()
        # On the GPU when there is one: the seeds' noise is still drawn on the CPU (the
        # pipeline moves it), and the audio is decoded on the CPU.
        _pipelines[key] = CrowdtunePipeline.from_pretrained(model_dir).for_generation()
    return _pipelines[key]


def run_job(job: GenerationJob) -> GenerationResult:
    """Generate the job's tracks (runs in the worker, or inline in tests and the CLI)."""
    import torch

    from model.finetune import load_audio
    from model.pipeline import SEED_STRENGTH

    pipe = _load(job.model_dir)
    seed_latents = None
    if job.seed_audio:
        sr = pipe.mel.config.sample_rate
        lats = [pipe.invert(load_audio(path, sr), steps=job.steps, max_windows=4,
                            strength=SEED_STRENGTH) for path in job.seed_audio]
        seed_latents = torch.cat(lats)
    audios, mels, used_tags = [], [], []
    for i, seed in enumerate(job.seeds):
        # A track claims only the tags its model knows (none for an imported checkpoint).
        used = pipe.known_tags(tagvocab.parse(job.tags[i]) if job.tags else {})
        out = pipe(num_inference_steps=job.steps, seconds=job.seconds,
                   generator=torch.Generator().manual_seed(seed), seed_latents=seed_latents,
                   tags=used, guidance=job.guidance[i] if job.guidance else tagvocab.GUIDANCE)
        audios.append(out.audios[0])
        mels.append(out.mels[0].astype(np.float16))
        used_tags.append(used)
    return GenerationResult(audios, pipe.mel.config.sample_rate, mels, used_tags)
