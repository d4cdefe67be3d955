"""What the one-round benches (bench_lora.py, bench_replay_guide.py) share: clips from a
pipeline, and base clips rated by the simulated community with its own ear into the
reward model's data, their rewards from the bot's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bot.core.rewards import DEFAULT_SETTINGS, Vote, track_rewards
from bot.experiment.ear import EarCommunity
from model.contracts import RatedFile
from model.files import write_wav
from model.pipeline import CrowdtunePipeline
from model.tags import Tags


def clips(pipe: CrowdtunePipeline, tags: list[Tags], seed: int) -> list[np.ndarray]:
    """One clip per tag set, in batches of 8 (batch k seeded `seed + 8k`)."""
    out: list[np.ndarray] = []
    for start in range(0, len(tags), 8):
        out += pipe(batch_size=len(tags[start:start + 8]), tags=tags[start:start + 8],
                    generator=torch.Generator().manual_seed(seed + start)).audios
    return out


def rated_files(community: EarCommunity, audio: list[np.ndarray], sr: int, folder: Path
                ) -> list[RatedFile]:
    """Every member rates every clip (noise seeded 0); the clips are written to `folder`
    as WAVs beside their rewards."""
    stars = community.rate_tracks([community.hear(x) for x in audio], np.random.default_rng(0))
    votes = [Vote(i, m.id, int(stars[i, j])) for i in range(len(audio))
             for j, m in enumerate(community.members)]
    rewards = track_rewards(votes, [], DEFAULT_SETTINGS)
    return [RatedFile(str(write_wav(folder / f"r{i}.wav", x, sr)), rewards[i].reward)
            for i, x in enumerate(audio)]
