"""Rewards: the one place where raw feedback becomes a number per track.

Inputs are one window of feedback (a round's votes and listens for one guild). Every weight
and threshold below is a field of `RewardSettings` (defaults in brackets).

1. Stars, normalised per member. Members use the 1-5 scale differently (a harsh rater's 3 is
   a generous rater's 5), so each vote becomes a z-score against that member's own habits.
   A member's mean and variance are shrunk toward the window's global ones with a prior of
   `a` pseudo-votes [member_prior_votes = 3], so one vote or zero variance cannot blow up:

       mu_g, var_g   global mean and population variance of all stars in the window
       x_m, v_m, n_m member m's mean, population variance and number of votes
       mu_m  = (n_m * x_m + a * mu_g) / (n_m + a)
       var_m = (n_m * v_m + a * var_g) / (n_m + a)
       sd_m  = max(sqrt(var_m), sd_floor)                          [sd_floor = 0.5 stars]
       z     = (stars - mu_m) / sd_m

2. Star score of a track: a Bayesian average of its votes' z toward 0 (the average
   normalised vote) with a prior of `k` votes [track_prior_votes = 2], so a track with one
   enthusiastic vote does not outrank one with ten good ones:

       S_t = sum(z over the track's votes) / (n_t + k)

3. Listen score of a track, from members present when it started only (someone joining late
   says nothing about whether the track held them). With f = clip(listened_s / duration_s,
   0, 1) and threshold c [listen_threshold = 0.5], leaving early counts against more than
   staying counts for [listen_below_weight = 2, listen_above_weight = 0.5]:

       g(f) = listen_below_weight * (f - c)   if f < c
              listen_above_weight * (f - c)   otherwise
       L_t  = sum(g over present members) / (m_t + l)              [listen_prior_count = 1]

4. Reward: r_t = star_weight * S_t + listen_weight * L_t    [star_weight = 1, listen_weight
   = 0.5: stars are asked for, listening is implicit and noisier (people go AFK)].

5. Uploads are positives: a member chose to share the song, so it gets a fixed reward
   [upload_reward = 1, about a track that several members rated a standard deviation above
   their own mean].

6. Training weights for the reward-weighted denoising loss: a softmax with temperature T
   [weight_temperature = 1], scaled so the weights average 1 (the loss keeps its unweighted
   scale): w_i = n * exp(r_i / T) / sum_j exp(r_j / T). Always positive; lower T is greedier.

7. Preference pairs for Diffusion-DPO: (member, preferred, rejected) wherever one member rated
   two tracks at least `pair_min_gap` stars apart [2]. Raw stars are fine here: both votes are
   on the same member's scale.

Votes and listens are upserts: a repeated (track, member) keeps the last record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.core.domain import MAX_STARS, MIN_STARS


@dataclass(frozen=True)
class Vote:
    track_id: int
    member_id: int | str
    stars: int

    def __post_init__(self) -> None:
        if not MIN_STARS <= self.stars <= MAX_STARS:
            raise ValueError(f"stars must be in {MIN_STARS}..{MAX_STARS}, got {self.stars}")


@dataclass(frozen=True)
class Listen:
    """A member's listened seconds on a track (e.g. from `bot.core.listening.listened_seconds`).

    The caller gives one per member present at start, even with 0 s listened: deafening at
    once is a signal too.
    """

    track_id: int
    member_id: int | str
    listened_s: float
    duration_s: float
    present_at_start: bool


@dataclass(frozen=True)
class RewardSettings:
    member_prior_votes: float = 3.0
    sd_floor: float = 0.5
    track_prior_votes: float = 2.0
    listen_threshold: float = 0.5
    listen_below_weight: float = 2.0
    listen_above_weight: float = 0.5
    listen_prior_count: float = 1.0
    star_weight: float = 1.0
    listen_weight: float = 0.5
    upload_reward: float = 1.0
    weight_temperature: float = 1.0
    pair_min_gap: int = 2

    def __post_init__(self) -> None:
        for name in (
            "member_prior_votes",
            "track_prior_votes",
            "listen_prior_count",
            "listen_below_weight",
            "listen_above_weight",
            "star_weight",
            "listen_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.sd_floor > 0:
            raise ValueError("sd_floor must be > 0")
        if not 0 <= self.listen_threshold <= 1:
            raise ValueError("listen_threshold must be in [0, 1]")
        if not self.upload_reward > 0:
            raise ValueError("upload_reward must be > 0 (uploads are positives)")
        if not self.weight_temperature > 0:
            raise ValueError("weight_temperature must be > 0")
        if self.pair_min_gap < 1:
            raise ValueError("pair_min_gap must be >= 1")


DEFAULT_SETTINGS = RewardSettings()


@dataclass(frozen=True)
class TrackReward:
    track_id: int
    reward: float
    star_score: float  # S_t
    listen_score: float  # L_t
    n_votes: int
    n_listeners: int  # present at start, with a known duration
    mean_stars: float | None  # raw, for reports; None without votes
    is_upload: bool = False


@dataclass(frozen=True)
class PreferencePair:
    member_id: int | str
    preferred: int  # track ids
    rejected: int
    gap: int  # stars


def _dedup_votes(votes: Iterable[Vote]) -> list[Vote]:
    return list({(v.track_id, v.member_id): v for v in votes}.values())


def normalised_stars(
    votes: Iterable[Vote], settings: RewardSettings = DEFAULT_SETTINGS
) -> dict[tuple[int, int], float]:
    """z-score of each vote against its member's shrunk mean and sd, by (track_id, member_id)."""
    votes = _dedup_votes(votes)
    if not votes:
        return {}
    stars = np.array([v.stars for v in votes], dtype=float)
    mu_g, var_g = float(stars.mean()), float(stars.var())
    by_member: dict[int, list[float]] = {}
    for v in votes:
        by_member.setdefault(v.member_id, []).append(float(v.stars))
    a = settings.member_prior_votes
    stats: dict[int, tuple[float, float]] = {}
    for member_id, own in by_member.items():
        n, x, var = len(own), float(np.mean(own)), float(np.var(own))
        mu = (n * x + a * mu_g) / (n + a)
        sd = max(math.sqrt((n * var + a * var_g) / (n + a)), settings.sd_floor)
        stats[member_id] = (mu, sd)
    return {
        (v.track_id, v.member_id): (v.stars - stats[v.member_id][0]) / stats[v.member_id][1]
        for v in votes
    }


def listen_value(fraction: float, settings: RewardSettings = DEFAULT_SETTINGS) -> float:
    """g(f): asymmetric value of one present member's listen fraction (clipped to [0, 1])."""
    d = min(max(fraction, 0.0), 1.0) - settings.listen_threshold
    return (settings.listen_below_weight if d < 0 else settings.listen_above_weight) * d


def track_rewards(
    votes: Iterable[Vote],
    listens: Iterable[Listen] = (),
    settings: RewardSettings = DEFAULT_SETTINGS,
) -> dict[int, TrackReward]:
    """One `TrackReward` per track in `votes` or `listens` (voted tracks first, first-seen)."""
    votes = _dedup_votes(votes)
    listens = list({(li.track_id, li.member_id): li for li in listens}.values())
    z = normalised_stars(votes, settings)

    z_sum: dict[int, float] = {}
    star_sum: dict[int, int] = {}
    n_votes: dict[int, int] = {}
    for v in votes:
        z_sum[v.track_id] = z_sum.get(v.track_id, 0.0) + z[(v.track_id, v.member_id)]
        star_sum[v.track_id] = star_sum.get(v.track_id, 0) + v.stars
        n_votes[v.track_id] = n_votes.get(v.track_id, 0) + 1

    g_sum: dict[int, float] = {}
    n_listeners: dict[int, int] = {}
    for li in listens:
        g_sum.setdefault(li.track_id, 0.0)  # a listen record still makes the track known
        if not li.present_at_start or not li.duration_s > 0:
            continue
        g_sum[li.track_id] += listen_value(li.listened_s / li.duration_s, settings)
        n_listeners[li.track_id] = n_listeners.get(li.track_id, 0) + 1

    out: dict[int, TrackReward] = {}
    for track_id in dict.fromkeys([*n_votes, *g_sum]):
        nv, nl = n_votes.get(track_id, 0), n_listeners.get(track_id, 0)
        s = z_sum.get(track_id, 0.0) / (nv + settings.track_prior_votes) if nv else 0.0
        ls = g_sum.get(track_id, 0.0) / (nl + settings.listen_prior_count) if nl else 0.0
        out[track_id] = TrackReward(
            track_id=track_id,
            reward=settings.star_weight * s + settings.listen_weight * ls,
            star_score=s,
            listen_score=ls,
            n_votes=nv,
            n_listeners=nl,
            mean_stars=star_sum[track_id] / nv if nv else None,
        )
    return out


def upload_reward(track_id: int, settings: RewardSettings = DEFAULT_SETTINGS) -> TrackReward:
    """An uploaded song as a positive example: the fixed `upload_reward`."""
    return TrackReward(
        track_id=track_id,
        reward=settings.upload_reward,
        star_score=0.0,
        listen_score=0.0,
        n_votes=0,
        n_listeners=0,
        mean_stars=None,
        is_upload=True,
    )


def training_weights(
    rewards: Sequence[float], settings: RewardSettings = DEFAULT_SETTINGS
) -> np.ndarray:
    """Positive per-example loss weights averaging 1: n * softmax(rewards / T)."""
    r = np.asarray(rewards, dtype=float)
    if r.size == 0:
        return np.zeros(0)
    e = np.exp((r - r.max()) / settings.weight_temperature)  # shift: no overflow
    return r.size * e / e.sum()


def preference_pairs(
    votes: Iterable[Vote], settings: RewardSettings = DEFAULT_SETTINGS
) -> list[PreferencePair]:
    """Every (member, preferred, rejected) with a star gap >= `pair_min_gap`, same member only.

    Ordered by member (first seen), then by the order of that member's votes.
    """
    by_member: dict[int, list[Vote]] = {}
    for v in _dedup_votes(votes):
        by_member.setdefault(v.member_id, []).append(v)
    pairs: list[PreferencePair] = []
    for member_id, own in by_member.items():
        for i, a in enumerate(own):
            for b in own[i + 1 :]:
                gap = abs(a.stars - b.stars)
                if gap >= settings.pair_min_gap:
                    hi, lo = (a, b) if a.stars > b.stars else (b, a)
                    pairs.append(PreferencePair(member_id, hi.track_id, lo.track_id, gap))
    return pairs
