"""A guild's taste over tags: Thompson sampling per field, learnt from its tracks' rewards.

Every rated track made with tags is evidence about each of its values: its reward
(bot/core/rewards.py: stars normalised per member, plus listening) counts toward, say,
`instrument=piano` and `mode=minor` alike. Per field and value the mean reward has a normal
posterior: prior mean 0 (the average normalised track) worth `prior_tracks` pseudo-tracks,
and the spread of all the guild's rewards as the noise (floored), so

    mean_v = sum(rewards with v) / (n_v + prior_tracks)
    sd_v   = noise_sd / sqrt(n_v + prior_tracks)

A draw picks, per field, the value with the highest sample from its posterior (Thompson
sampling: values the guild likes come up more, values it has barely heard keep a chance),
except that with probability `explore` the value is uniform instead: an exploration floor
of explore / K per value, so no value ever dies out. Fields are learnt independently
(combinations would need far more ratings than a server gives in weeks).

The baseline arm never uses this (TrackService): it keeps uniform tags, so each round's
gain is measured against where the guild started.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.config import Settings
from bot.core.rewards import DEFAULT_SETTINGS, Listen, RewardSettings, Vote, track_rewards
from bot.core.store import TrackFeedback
from model import tags as tagvocab


@dataclass(frozen=True)
class PolicyConfig:
    prior_tracks: float = 4.0
    explore: float = 0.2
    min_noise_sd: float = 0.3


@dataclass(frozen=True)
class ValueBelief:
    n: int  # rated tracks made with this value
    mean: float  # posterior mean reward
    sd: float  # posterior sd


class TagPolicy:
    def __init__(self, beliefs: Mapping[str, Mapping[str, ValueBelief]],
                 cfg: PolicyConfig = PolicyConfig()) -> None:
        self.beliefs = beliefs
        self.cfg = cfg

    @classmethod
    def fit(cls, rewarded: Iterable[tuple[Mapping[str, str], float]],
            cfg: PolicyConfig = PolicyConfig()) -> TagPolicy:
        """From (tags a track was made with, its reward) pairs."""
        data = [(dict(t), r) for t, r in rewarded]
        rewards = [r for _, r in data]
        spread = math.sqrt(sum(r * r for r in rewards) / len(rewards)) if rewards else 1.0
        noise = max(spread, cfg.min_noise_sd)
        beliefs: dict[str, dict[str, ValueBelief]] = {}
        for field, values in tagvocab.VOCAB.items():
            beliefs[field] = {}
            for value in values:
                got = [r for t, r in data if t.get(field) == value]
                k = len(got) + cfg.prior_tracks
                beliefs[field][value] = ValueBelief(len(got), sum(got) / k, noise / math.sqrt(k))
        return cls(beliefs, cfg)

    @classmethod
    def from_feedback(cls, feedback: Iterable[TrackFeedback],
                      rewards_cfg: RewardSettings = DEFAULT_SETTINGS,
                      cfg: PolicyConfig = PolicyConfig()) -> TagPolicy:
        """From a guild's tracks and their votes and listening (tracks made without tags
        say nothing about tags and are left out)."""
        feedback = [f for f in feedback if f.track.tags]
        votes = [Vote(v.track_id, v.member_id, v.stars) for f in feedback for v in f.votes]
        listens = [Listen(li.track_id, li.member_id, li.listened_s, li.duration_s,
                          li.present_at_start) for f in feedback for li in f.listens]
        rewards = track_rewards(votes, listens, rewards_cfg)
        tags = {f.track.id: f.track.tags or {} for f in feedback}
        return cls.fit(((tags[t], r.reward) for t, r in rewards.items() if r.n_votes > 0), cfg)

    @classmethod
    def for_guild(cls, feedback: Iterable[TrackFeedback], settings: Settings) -> TagPolicy:
        """The policy the settings ask for: learnt from `feedback` (rewards and exploration
        as configured), or uniform with `tag_policy` off."""
        if not settings.tag_policy:
            return cls.fit([], PolicyConfig(explore=1.0))
        return cls.from_feedback(feedback, RewardSettings(**settings.reward),
                                 PolicyConfig(explore=settings.tag_explore))

    @property
    def rated(self) -> int:
        """Rated tracks behind the policy (counted once, through the first field)."""
        return sum(b.n for b in next(iter(self.beliefs.values())).values())

    def draw(self, rng: random.Random) -> dict[str, str]:
        """One tag set: per field a Thompson sample, or (with probability explore) uniform."""
        out = {}
        for field, beliefs in self.beliefs.items():
            values = list(beliefs)
            if rng.random() < self.cfg.explore:
                out[field] = rng.choice(values)
            else:
                out[field] = max(values, key=lambda v: rng.gauss(beliefs[v].mean, beliefs[v].sd))
        return out

    def preferences(self, draws: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
        """Per field, the share of draws each value gets: what the guild is served now."""
        rng = random.Random(seed)
        counts = {f: dict.fromkeys(b, 0) for f, b in self.beliefs.items()}
        for _ in range(draws):
            for field, value in self.draw(rng).items():
                counts[field][value] += 1
        return {f: {v: c / draws for v, c in sorted(cs.items(), key=lambda kv: -kv[1])}
                for f, cs in counts.items()}



def taste_lines(policy: TagPolicy, top: int = 2) -> list[str]:
    """What a guild likes, for /stats: per field its most-served values and their shares."""
    if policy.rated == 0:
        return ["No rated tracks with tags yet: every tag is as likely."]
    lines = [f"What this server likes (from {policy.rated} rated tracks; share of new tracks):"]
    for field, shares in policy.preferences().items():
        best = ", ".join(f"{v} {p:.0%}" for v, p in list(shares.items())[:top])
        lines.append(f"{field}: {best}")
    return lines
