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
of explore / K per value, so no value ever dies out. The floor shrinks as the evidence grows:
`explore` until the policy rests on `explore_tracks` rated tracks, then in proportion to
1 / rated, down to `explore_min`. A server that has rated 500 tracks has ruled most values
out, and every uniform draw costs it a track it would like less (measured on the shipped base
with the ear community's favourite values, 96 clips, se 0.04: expected stars 3.10 at a floor
of 0.2, 3.15 at 0.1, 3.18 at 0.05, 3.27 at 0). Fields are learnt independently
(combinations would need far more ratings than a server gives in weeks).

How closely tracks follow their tags (the guidance scale, model/tags.py) is learnt as one
more field, `guidance`, over `GUIDANCE_LEVELS`: following the tags strictly serves a liked
tag set more surely but sounds less like the corpus, and which matters more depends on the
server. Measured on the shipped base, four simulated communities (bot/experiment/ear.py,
seeds 0-3) each served its favourite values 80% of the time, 96 clips on the same seeds,
expected stars at guidance 2 / 3 / 4.5 / 6: 3.07 / 3.15 / 3.23 / 3.26, 3.16 / 3.13 / 3.05 /
2.95, 3.84 / 3.84 / 3.77 / 3.65, 2.95 / 3.07 / 3.12 / 3.09 (se ~0.05 each, less between
levels). No one level suits every server. Tracks rated before guidance was recorded count at
the default.

Two camps. A server can hold two groups of members who want opposite things on one axis
(fast drum tracks against slow quiet ones). A mean over all members then follows whichever
camp is louder on the shared axes, and the other camp's ratings fall. So members who voted
enough are split in two by their normalised votes per tag value (2-means); the split stands
only when the two groups truly conflict: on some field each group's favourite value costs
the other at least `conflict_gap` normalised stars, with `conflict_z` standard errors (each
value's effect read with the other fields held fixed, by one regression per group). Then
each group gets its own posteriors, and a draw scores each value by the *lower* of the
groups' samples: the bot serves what neither camp dislikes (maximin), not the louder camp's
favourite. Where no value sits between the camps' favourites (drums or not), that would
hand the field to one camp for good; so on a conflicting field where taking turns between
the favourites leaves the worse-off camp better off (posterior means, by a margin), the
camps take turns: each draw serves one camp, picked by a coin, on every such field.
Members who voted too little to place count in both groups.

Members' songs. An upload is a member saying "this is what I like", so what the tagger
heard in it (recorded by the first round that trains on it) counts toward its values like
a track rated `upload_reward` (the reward model takes uploads at the same value). A server
whose members share songs is served their instruments and moods before anyone rates a
track, and ratings outweigh the songs as they accumulate. Uploads say nothing about
guidance, and the exploration floor shrinks with rated tracks only.

The baseline arm never uses this (TrackService): it keeps uniform tags, so each round's
gain is measured against where the guild started.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.core.config import Settings
from bot.core.rewards import (
    DEFAULT_SETTINGS,
    Listen,
    RewardSettings,
    Vote,
    normalised_stars,
    track_rewards,
)
from bot.core.store import TrackFeedback
from model import tags as tagvocab

GUIDANCE_FIELD = "guidance"
# What a draw picks: a value per tag field, and a guidance level (as text, like a tag value).
POLICY_FIELDS: dict[str, tuple[str, ...]] = {
    **tagvocab.VOCAB, GUIDANCE_FIELD: tuple(f"{g:g}" for g in tagvocab.GUIDANCE_LEVELS)}


def with_guidance(tags: Mapping[str, str], guidance: float | None) -> dict[str, str]:
    """A tagged track's values as the policy reads them: its tags and its guidance level
    (the default when unrecorded)."""
    g = tagvocab.GUIDANCE if guidance is None else guidance
    return {**tags, GUIDANCE_FIELD: f"{g:g}"} if tags else {}


@dataclass(frozen=True)
class PolicyConfig:
    prior_tracks: float = 4.0
    explore: float = 0.2
    explore_min: float = 0.05  # the floor's floor (module doc)
    explore_tracks: int = 100  # rated tracks before the floor starts to shrink
    min_noise_sd: float = 0.3
    # Two camps (module doc): who can be placed, how big a group must be, what a conflict is.
    group_min_votes: int = 12
    group_min_share: float = 0.2
    conflict_gap: float = 0.4
    conflict_z: float = 3.0
    # How much better (normalised stars) the worse-off camp must do by taking turns than
    # with the best single value, for the camps to take turns on a field.
    turns_margin: float = 0.1


@dataclass(frozen=True)
class ValueBelief:
    n: int  # rated tracks made with this value
    mean: float  # posterior mean reward
    sd: float  # posterior sd


Beliefs = Mapping[str, Mapping[str, ValueBelief]]  # field -> value -> belief


@dataclass(frozen=True)
class Camps:
    """Two groups of members who conflict: their member ids, and per conflicting field each
    group's favourite value."""

    groups: tuple[frozenset[int], frozenset[int]]
    conflicts: Mapping[str, tuple[str, str]] = field(default_factory=dict)


class TagPolicy:
    def __init__(self, beliefs: Beliefs | Sequence[Beliefs], cfg: PolicyConfig = PolicyConfig(),
                 camps: Camps | None = None, uploads: int = 0) -> None:
        # One set of posteriors, or one per camp (a draw takes the lower of their samples).
        self.groups: list[Beliefs] = [beliefs] if isinstance(beliefs, Mapping) else list(beliefs)
        self.cfg = cfg
        self.camps = camps
        self.uploads = uploads  # members' songs among the evidence (module doc)
        self.turns = {f for f in (camps.conflicts if camps else {}) if self._take_turns(f)}
        self.explore = self._explore()

    def _explore(self) -> float:
        """The exploration floor for the evidence behind this policy (module doc)."""
        c, rated = self.cfg, self.rated
        if rated <= c.explore_tracks:
            return c.explore
        return max(min(c.explore_min, c.explore), c.explore * c.explore_tracks / rated)

    def _take_turns(self, f: str) -> bool:
        """Whether taking turns between the camps' favourite values of field f serves the
        worse-off camp better than any single value does (module doc)."""
        values = POLICY_FIELDS[f]
        means = [{v: g[f][v].mean for v in values} for g in self.groups]
        favourites = [max(values, key=m.__getitem__) for m in means]
        turns = min(sum(m[v] for v in favourites) / len(favourites) for m in means)
        single = max(min(m[v] for m in means) for v in values)
        return turns > single + self.cfg.turns_margin

    @staticmethod
    def _beliefs(rewarded: Iterable[tuple[Mapping[str, str], float]],
                 cfg: PolicyConfig) -> Beliefs:
        data = [(dict(t), r) for t, r in rewarded]
        rewards = [r for _, r in data]
        spread = math.sqrt(sum(r * r for r in rewards) / len(rewards)) if rewards else 1.0
        noise = max(spread, cfg.min_noise_sd)
        beliefs: dict[str, dict[str, ValueBelief]] = {}
        for f, values in POLICY_FIELDS.items():
            beliefs[f] = {}
            for value in values:
                got = [r for t, r in data if t.get(f) == value]
                k = len(got) + cfg.prior_tracks
                beliefs[f][value] = ValueBelief(len(got), sum(got) / k, noise / math.sqrt(k))
        return beliefs

    @classmethod
    def fit(cls, rewarded: Iterable[tuple[Mapping[str, str], float]],
            cfg: PolicyConfig = PolicyConfig()) -> TagPolicy:
        """From (tags a track was made with, its reward) pairs: one group. A pair's
        `guidance` value (`with_guidance`), if any, counts toward that level."""
        return cls(cls._beliefs(rewarded, cfg), cfg)

    @classmethod
    def from_feedback(cls, feedback: Iterable[TrackFeedback],
                      rewards_cfg: RewardSettings = DEFAULT_SETTINGS,
                      cfg: PolicyConfig = PolicyConfig(),
                      uploads: Sequence[Mapping[str, str]] = ()) -> TagPolicy:
        """From a guild's tracks and their votes and listening (tracks made without tags
        say nothing about tags and are left out), split into camps where members conflict,
        and the tags heard in its members' uploads (module doc)."""
        feedback = [f for f in feedback if f.track.tags]
        votes = [Vote(v.track_id, v.member_id, v.stars) for f in feedback for v in f.votes]
        listens = [Listen(li.track_id, li.member_id, li.listened_s, li.duration_s,
                          li.present_at_start) for f in feedback for li in f.listens]
        tags = {f.track.id: with_guidance(f.track.tags or {}, f.track.guidance)
                for f in feedback}
        return cls.from_votes(votes, listens, tags, rewards_cfg, cfg, uploads)

    @classmethod
    def from_votes(cls, votes: Sequence[Vote], listens: Sequence[Listen],
                   tags: Mapping[int, Mapping[str, str]],
                   rewards_cfg: RewardSettings = DEFAULT_SETTINGS,
                   cfg: PolicyConfig = PolicyConfig(),
                   uploads: Sequence[Mapping[str, str]] = ()) -> TagPolicy:
        """From votes and listening on tracks made with `tags` (by track id), and the tags
        heard in uploads (each as a track rated `upload_reward`, in every camp's evidence;
        an upload counts once the tagger has heard every field of it)."""
        camps = find_camps(votes, tags, cfg)
        songs = [({f: t[f] for f in tagvocab.VOCAB}, rewards_cfg.upload_reward)
                 for t in uploads if all(t.get(f) in vs for f, vs in tagvocab.VOCAB.items())]

        def beliefs(keep: frozenset[int] | None) -> Beliefs:
            vs = [v for v in votes if keep is None or v.member_id in keep]
            ls = [li for li in listens if keep is None or li.member_id in keep]
            rewards = track_rewards(vs, ls, rewards_cfg)
            return cls._beliefs([*((tags[t], r.reward) for t, r in rewards.items()
                                   if r.n_votes > 0), *songs], cfg)

        if camps is None:
            return cls(beliefs(None), cfg, uploads=len(songs))
        placed = camps.groups[0] | camps.groups[1]
        unplaced = frozenset(v.member_id for v in votes) - placed  # they count in both
        return cls([beliefs(g | unplaced) for g in camps.groups], cfg, camps, len(songs))

    @classmethod
    def for_guild(cls, feedback: Iterable[TrackFeedback], settings: Settings,
                  uploads: Sequence[Mapping[str, str]] = ()) -> TagPolicy:
        """The policy the settings ask for: learnt from `feedback` and the tags heard in
        `uploads` (rewards and exploration as configured), or uniform with `tag_policy`
        off."""
        if not settings.tag_policy:
            return cls.fit([], PolicyConfig(explore=1.0))
        return cls.from_feedback(feedback, RewardSettings(**settings.reward),
                                 PolicyConfig(explore=settings.tag_explore,
                                              explore_min=settings.tag_explore_min,
                                              explore_tracks=settings.tag_explore_tracks),
                                 uploads)

    @property
    def rated(self) -> int:
        """Rated tracks behind the policy (counted once, through the first field; every
        upload counted has a value there)."""
        return max(sum(b.n for b in next(iter(g.values())).values())
                   for g in self.groups) - self.uploads

    @property
    def learnt(self) -> bool:
        """Whether anything is behind the policy (rated tracks or heard uploads)."""
        return self.rated + self.uploads > 0

    def serve(self, rng: random.Random) -> tuple[dict[str, str], float]:
        """One tag set and the guidance to make it with (`_draw`)."""
        values = self._draw(rng)
        return {f: values[f] for f in tagvocab.VOCAB}, float(values[GUIDANCE_FIELD])

    def _draw(self, rng: random.Random) -> dict[str, str]:
        """Per policy field a Thompson sample (the lowest of the camps' samples per value,
        or on fields the camps take turns on, this draw's camp's), or (with probability
        `self.explore`, the floor) uniform."""
        out = {}
        turn = self.groups[rng.randrange(len(self.groups))] if self.turns else None
        for f, values in POLICY_FIELDS.items():
            if rng.random() < self.explore:
                out[f] = rng.choice(values)
            elif turn is not None and f in self.turns:
                out[f] = max(values, key=lambda v, f=f: rng.gauss(turn[f][v].mean, turn[f][v].sd))
            else:
                out[f] = max(values, key=lambda v, f=f: min(
                    rng.gauss(g[f][v].mean, g[f][v].sd) for g in self.groups))
        return out

    def preferences(self, draws: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
        """Per field (guidance too), the share of draws each value gets: what the guild is
        served now."""
        rng = random.Random(seed)
        counts = {f: dict.fromkeys(values, 0) for f, values in POLICY_FIELDS.items()}
        for _ in range(draws):
            for f, value in self._draw(rng).items():
                counts[f][value] += 1
        return {f: {v: c / draws for v, c in sorted(cs.items(), key=lambda kv: -kv[1])}
                for f, cs in counts.items()}


def find_camps(votes: Sequence[Vote], tags: Mapping[int, Mapping[str, str]],
               cfg: PolicyConfig = PolicyConfig()) -> Camps | None:
    """Two groups of members who conflict on some field (module doc), or None."""
    z = normalised_stars(votes)
    by_member: dict[int, list[tuple[int, float]]] = {}
    for v in votes:
        if tags.get(v.track_id):
            by_member.setdefault(v.member_id, []).append((v.track_id, z[(v.track_id, v.member_id)]))
    members = sorted(m for m, got in by_member.items() if len(got) >= cfg.group_min_votes)
    if len(members) < 4:
        return None
    columns = [(f, v) for f, values in tagvocab.VOCAB.items() for v in values]
    profile = np.zeros((len(members), len(columns)))
    for i, m in enumerate(members):
        for j, (f, value) in enumerate(columns):
            got = [zz for t, zz in by_member[m] if tags[t].get(f) == value]
            profile[i, j] = sum(got) / (len(got) + 2.0)  # shrunk toward "no opinion"
    labels = _two_means(profile)
    groups = tuple(frozenset(m for m, lab in zip(members, labels, strict=True) if lab == k)
                   for k in (0, 1))
    if min(len(g) for g in groups) < max(2, cfg.group_min_share * len(members)):
        return None
    conflicts = {}
    fits = [_value_effects([(tags[t], zz) for m in g for t, zz in by_member[m]], columns)
            for g in groups]
    for f, values in tagvocab.VOCAB.items():
        idx = {v: columns.index((f, v)) for v in values}
        heard = [v for v in values if all(n[idx[v]] >= 2 for _, _, n in fits)]
        if len(heard) < 2:
            continue
        best = [max(heard, key=lambda v, e=e: e[idx[v]]) for e, _, _ in fits]
        if best[0] == best[1]:
            continue
        if all(_costs(fits[k], idx[best[k]], idx[best[1 - k]], cfg) for k in (0, 1)):
            conflicts[f] = (best[0], best[1])
    return Camps(groups, conflicts) if conflicts else None  # type: ignore[arg-type]


def _value_effects(rows: Sequence[tuple[Mapping[str, str], float]],
                   columns: Sequence[tuple[str, str]], ridge: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A group's normalised stars regressed on every field's values at once (ridge): each
    value's effect with the other fields held fixed, their covariance and the votes behind
    each. Marginal means per value would credit a value with whatever it was served
    alongside (once the policy pairs fast with drums, a camp that wants drums seems to want
    fast too)."""
    x = np.array([[1.0 if t.get(f) == v else 0.0 for f, v in columns] + [1.0]
                  for t, _ in rows])
    y = np.array([z for _, z in rows])
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    inv = np.linalg.inv(x.T @ x + penalty)
    coef = inv @ x.T @ y
    noise = float(np.mean((y - x @ coef) ** 2))
    return coef[:-1], noise * inv[:-1, :-1], x[:, :-1].sum(0)


def _costs(fit: tuple[np.ndarray, np.ndarray, np.ndarray], own: int, other: int,
           cfg: PolicyConfig) -> bool:
    """Whether the other group's favourite value (column `other`) costs this group a
    conflict's worth against its own (column `own`)."""
    effect, cov, _ = fit
    loss = effect[own] - effect[other]
    se = math.sqrt(max(cov[own, own] + cov[other, other] - 2 * cov[own, other], 0.0))
    return loss >= cfg.conflict_gap and loss >= cfg.conflict_z * se


def _two_means(x: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Labels 0/1 from 2-means, started from the two rows farthest apart (deterministic)."""
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmax()), d.shape)
    centres = x[[i, j]].copy()
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iterations):
        labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([x[labels == k].mean(0) if (labels == k).any() else centres[k]
                        for k in (0, 1)])
        if np.allclose(new, centres):
            break
        centres = new
    return labels


def taste_lines(policy: TagPolicy, top: int = 2) -> list[str]:
    """What a guild likes, for /stats: per field its most-served values and their shares,
    and the two camps where there are some."""
    if not policy.learnt:
        return ["No rated tracks with tags yet: every tag is as likely."]
    songs = f" and {policy.uploads} members' songs" if policy.uploads else ""
    lines = [f"What this server likes (from {policy.rated} rated tracks{songs}; share of new "
             f"tracks, {policy.explore:.0%} of each field picked at random to keep exploring):"]
    for f, shares in policy.preferences().items():
        best = ", ".join(f"{v} {p:.0%}" for v, p in list(shares.items())[:top])
        name = "how closely tracks follow their tags (guidance)" if f == GUIDANCE_FIELD else f
        lines.append(f"{name}: {best}")
    if policy.camps:
        sizes = " and ".join(str(len(g)) for g in policy.camps.groups)
        split = "; ".join(f"{f} {a} against {b}" for f, (a, b) in policy.camps.conflicts.items())
        served = "New tracks favour what neither camp dislikes."
        if policy.turns:
            served = ("New tracks take turns between the camps on "
                      f"{', '.join(sorted(policy.turns))} and elsewhere favour what neither "
                      "camp dislikes.")
        lines.append(f"Two camps ({sizes} members) want opposite things: {split}. {served}")
    return lines
