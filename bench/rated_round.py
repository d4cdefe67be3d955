"""What the one-round benches (bench_lora.py, bench_replay_guide.py, bench_guidance.py) and
the benches over a finished simulation (bench_round_variants.py, bench_reward_rounds.py)
share: clips from a pipeline; a finished simulation's guild data; base clips rated by the
simulated community with its own ear into the reward model's data, their rewards from the
bot's own code; and tags drawn as a learnt tag policy would serve that community."""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from bot.core.rewards import DEFAULT_SETTINGS, Vote, track_rewards
from bot.core.store import Store, TrackFeedback, UploadRow
from bot.experiment.ear import (
    VALUES,
    Ear,
    EarCommunity,
    Hearing,
    load_ear,
    load_style_nearness,
)
from model.contracts import RatedFile
from model.files import write_wav
from model.pipeline import CrowdtunePipeline
from model.tags import GUIDANCE, VOCAB, Tags, uniform

FAVOURITE_SHARE = 0.8


async def sim_guild(db: Path) -> tuple[list[TrackFeedback], list[UploadRow], list[float]]:
    """A finished simulation's one guild, from its database: every track with its feedback,
    the uploads, and when each round started."""
    with closing(sqlite3.connect(db)) as con:
        guild = con.execute("SELECT guild_id FROM tracks LIMIT 1").fetchone()[0]
    store = await Store.open(db)
    try:
        rounds = sorted(r.started_at for r in await store.rounds(guild))
        return await store.track_feedback(guild), await store.uploads(guild), rounds
    finally:
        await store.close()


def add_community_flags(ap: argparse.ArgumentParser) -> None:
    """`--outside-style` / `--factions`: the finished simulation's community, as its run."""
    ap.add_argument("--outside-style", action="store_true",
                    help="the singing community (a `--outside-style` run's data)")
    ap.add_argument("--factions", action="store_true",
                    help="the two-faction community (a `--factions` run's data)")


def sim_community(a: argparse.Namespace, cache_dir: Path) -> EarCommunity:
    """The community `add_community_flags` named (seed 0, as the simulation's)."""
    ear = load_ear(cache_dir)
    return EarCommunity(ear, seed=0, factions=a.factions, outside=load_style_nearness(
        ear, cache_dir) if a.outside_style else None)


def clips(pipe: CrowdtunePipeline, tags: list[Tags], seed: int,
          guidance: float | Sequence[float] = GUIDANCE) -> list[np.ndarray]:
    """One clip per tag set (and guidance, when one per clip), in batches of 8 (batch k
    seeded `seed + 8k`)."""
    out: list[np.ndarray] = []
    for start in range(0, len(tags), 8):
        out += pipe(batch_size=len(tags[start:start + 8]), tags=tags[start:start + 8],
                    generator=torch.Generator().manual_seed(seed + start),
                    guidance=guidance if isinstance(guidance, float | int)
                    else guidance[start:start + 8]).audios
    return out


def tags_followed(ear: Ear, heard: list[Hearing], tags: list[Tags]) -> np.ndarray:
    """Per clip, the ear's mean belief in each value it was asked for: how well it follows
    its tags."""
    beliefs = ear.beliefs(heard)
    return np.array([beliefs[i, [VALUES.index((f, t[f])) for f in VOCAB]].mean()
                     for i, t in enumerate(tags)])


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


def favourite_values(community: EarCommunity) -> Tags:
    """Per field the value the community's shared taste likes best."""
    taste = community._w.mean(0)
    return {f: max(vs, key=lambda v, f=f: taste[VALUES.index((f, v))]) for f, vs in VOCAB.items()}


def policy_tags(rng: random.Random, favourite: Tags) -> Tags:
    """Per field the favourite value FAVOURITE_SHARE of the time, else uniform (roughly
    where a guild's Thompson sampling stands after a round)."""
    other = uniform(rng)
    return {f: favourite[f] if rng.random() < FAVOURITE_SHARE else other[f] for f in VOCAB}
