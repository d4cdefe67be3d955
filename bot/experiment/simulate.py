"""`crowdtune simulate`: the paper's experiment, offline, through the real services.

A simulated community listens to what the model makes and reacts: by default one with its
own ear (bot/experiment/ear.py: members like tags and hear them through a listener model the
bot never uses), or the older one whose taste is over the spectral statistics the reward
model reads (bot/experiment/community.py, an ablation row). Every step goes through the code
the bot uses: TrackService generates and records tracks (worker process, ffmpeg), members'
votes and listening go through FeedbackService, their uploads through UploadService
(ffprobe, ffmpeg), and each week's RoundService.run_round fine-tunes in a child process,
evaluates and promotes. Members rate what they hear: the encoded files, not anything the
model reports.

Rating pass k (k = 0..rounds) rates the tracks of the champion after k rounds, side by side
with baseline tracks from the base model. The last pass is the final comparison, with
`final_per_arm` tracks per arm so the interval means something.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bot.core.audio import encode
from bot.core.config import BotSettings
from bot.core.report import (
    BASELINE,
    GENERATED,
    RoundRatings,
    compare,
    mean_ci,
    rating_chart,
    round_stats,
)
from bot.core.services import Services
from bot.core.worker import GenerationJob, GenerationResult
from bot.experiment.community import Community
from bot.experiment.ear import (
    OUTSIDE_SEED,
    EarCommunity,
    load_ear,
    load_style_nearness,
    outside_clips,
)
from model import tags as tagvocab
from model.features import AudioFeatures, diversity, extract, frechet_distance
from model.finetune import load_audio

log = logging.getLogger(__name__)
Say = Callable[[str], None]  # one line of progress for the operator
GUILD = "sim"
PROBE_SEED = 7_700_000  # the outside style's model-alone clips (Simulation._model_distance)
JUDGE_SEED = 7_900_000  # the community's own judgement of each candidate (Simulation._judge)


@dataclass(frozen=True)
class SimConfig:
    rounds: int = 5
    tracks_per_round: int = 96
    final_per_arm: int = 160
    members: int = 12
    participation: float = 0.7  # chance a member rates (and hears) a given track
    track_seconds: float = 5.0
    finetune_steps: int = 300
    eval_clips: int = 24
    # Each round's candidate and its parent make this many clips (same seeds, the guild's
    # tag policy's draws), and the community's noise-free stars of both are compared: what
    # the candidate was truly worth, beside the verdict's prediction. 0: not judged.
    judge_clips: int = 48
    sampler_steps: int | None = None  # None: the settings' (CROWDTUNE_SAMPLER_STEPS)
    seed: int = 0
    uploads: bool = True  # members share songs, and a share of tracks is upload-seeded
    fine_tune: bool = True
    use_stars: bool = True
    use_listening: bool = True
    settings: dict = field(default_factory=dict)  # overrides of Settings, for ablations
    # "ear": members like tags and hear through their own listener model (bot/experiment/
    # ear.py); "features": the older community whose taste is over the spectral statistics
    # the reward model reads (bot/experiment/community.py), kept as an ablation row.
    community: str = "ear"
    factions: bool = False  # ear only: half the members want the opposite tempo and drums
    # ear only: the community sings (bot/experiment/ear.py): it uploads songs for voices, a
    # style the corpus lacks, and likes tracks that sound like them
    outside_style: bool = False
    # Songs in the operator's library (bot/core/library.py), 20 s each: songs for voices
    # with the outside style, else starter-corpus songs; 0: no library.
    library: int = 0

    @classmethod
    def quick(cls, **kw: object) -> SimConfig:
        # Sized so that `make demo` on a fresh 2-core machine stays within 10 minutes: tagged
        # generation costs two UNet passes a step, so it samples with 10 steps (measured on
        # the shipped base against 20: feature FD 27.9 vs 23.9, corpus split-half 30.5; the
        # tagger hears the asked instrument on 88% vs 96%, tempo 78% vs 67%, drums 100%).
        return replace(cls(rounds=3, tracks_per_round=24, final_per_arm=24,
                           finetune_steps=60, eval_clips=6, sampler_steps=10,
                           judge_clips=0), **kw)


ABLATIONS: dict[str, dict] = {
    "no fine-tuning": {"fine_tune": False, "uploads": False},
    "ratings only": {"use_listening": False, "uploads": False},
    "listen time only": {"use_stars": False, "uploads": False},
    "ratings + listening": {"uploads": False},
    "ratings + listening + uploads": {},
    # The paper's plain method, for comparison: reward-weighted denoising on the best-rated
    # tracks with a uniform corpus replay (no reward-model guidance), uploads as data.
    "plain reward-weighted (paper)": {"settings": {
        "finetune_track_share": 0.65, "finetune_upload_share": 0.1,
        "finetune_guide_min_corr": 1.1}},
    # The corpus replay guided by the reward model (the default before 2026-12-07; offline
    # it cost the default community's last round -0.09 / -0.14 stars against -0.02 even:
    # bench/bench_round_variants.py, docs/results/even-replay-full-judged/).
    "guided corpus replay": {"settings": {"finetune_corpus_guided": True}},
    "no tag policy": {"settings": {"tag_policy": False}},
    "spectral-only reward model": {"settings": {"reward_inputs": "spectral"}},
    "embedding-only reward model": {"settings": {"reward_inputs": "embedding"}},
    "spectral-feature community": {"community": "features"},
    "with a library of 24 songs": {"library": 24},
}


@dataclass
class PassResult:
    round: int
    version: str
    ratings: RoundRatings
    expected_new: float  # the community's noise-free mean stars for the new model's tracks
    expected_se: float  # its standard error over the pass's tracks
    taste: dict  # mean perceptual features of the new model's tracks
    diversity: float
    promoted: bool | None = None
    reason: str = ""
    rolled_back: str | None = None  # what the round's automatic rollback did, if anything
    round_seconds: float = 0.0
    factions: dict[int, float] = field(default_factory=dict)  # expected stars per faction
    # Outside style: feature FD to the songs for voices, of the pass's new tracks (the served
    # mix) and of the active model at uniform tags and fixed seeds (the model alone)
    fd_outside: float | None = None
    fd_model: float | None = None
    # The round's candidate as the community hears it (SimConfig.judge_clips): its expected
    # stars minus its parent's, paired over the same seeds and tags, and the standard error.
    candidate_gain: float | None = None
    candidate_se: float | None = None

    def row(self) -> dict:
        stats = round_stats(self.ratings)
        return {**stats, "version": self.version, "expected_new": round(self.expected_new, 3),
                **{k: round(v, 3) for k, v in self.taste.items()},
                "diversity": round(self.diversity, 3), "promoted": self.promoted,
                **({"faction_expected": {str(k): round(v, 3) for k, v in self.factions.items()}}
                   if self.factions else {}),
                **({"fd_outside": round(self.fd_outside, 2)} if self.fd_outside is not None
                   else {}),
                **({"fd_model": round(self.fd_model, 2)} if self.fd_model is not None
                   else {}),
                **({"candidate_gain": round(self.candidate_gain, 3),
                    "candidate_se": round(self.candidate_se or 0.0, 3)}
                   if self.candidate_gain is not None else {}),
                "reason": self.reason, "rolled_back": self.rolled_back,
                "round_seconds": round(self.round_seconds, 1)}


@dataclass
class SimResult:
    config: SimConfig
    passes: list[PassResult] = field(default_factory=list)
    seconds: float = 0.0

    def wrong_promotions(self) -> list[int]:
        """Rounds whose promotion was followed by a drop in the community's expected stars
        beyond the passes' sampling noise (two standard errors of the difference)."""
        wrong = []
        for k, (p, q) in enumerate(itertools.pairwise(self.passes), start=1):
            noise = 2.0 * float(np.hypot(p.expected_se, q.expected_se))
            if p.promoted and q.expected_new < p.expected_new - noise:
                wrong.append(k)
        return wrong

    def missed_promotions(self) -> list[int]:
        """Rounds whose kept candidate the community would have liked better than its
        parent, beyond two standard errors of the judged gain."""
        return [p.round + 1 for p in self.passes
                if p.promoted is False and p.candidate_gain is not None
                and p.candidate_gain > 2.0 * (p.candidate_se or 0.0)]

    def to_json(self) -> dict:
        base_div = self.passes[0].diversity if self.passes else float("nan")
        return {
            "rounds": [p.row() for p in self.passes],
            "wrong_promotions": self.wrong_promotions(),
            "missed_promotions": self.missed_promotions(),
            "diversity": {"base": round(base_div, 3),
                          "final": round(self.passes[-1].diversity, 3),
                          "final_vs_base": round(self.passes[-1].diversity / base_div, 3)},
            "config": asdict(self.config),
            "seconds": round(self.seconds, 1),
        }


def fd_tracks(cfg: SimConfig) -> int:
    """Tracks per feature FD: a pass's new tracks at the full size (half its mix). FD falls
    with the number of tracks (corpus clips against the voices: 28.5 at 48, 25.4 at 160,
    measured), so every pass is measured at the same number."""
    return max(2, cfg.tracks_per_round // 2)


def _taste(feats: list[AudioFeatures]) -> dict:
    return {
        "centroid_hz": float(np.mean([f.centroid_hz for f in feats])),
        "onset_rate": float(np.mean([f.onset_rate for f in feats])),
        "register_midi": float(np.mean([f.register_midi for f in feats])),
        "flatness": float(np.median([f.flatness for f in feats])),
        "loudness_db": float(np.median([f.loudness_db for f in feats])),
    }


class Simulation:
    def __init__(self, settings: BotSettings, cfg: SimConfig, workdir: Path,
                 progress: Say | None = None) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.say = progress or (lambda _msg: None)
        # Its own data folder: the simulation never touches a real guild's data.
        self.settings = settings.model_copy(update={
            "data_dir": workdir / "data", "track_seconds": cfg.track_seconds,
            "pool_cache_dir": settings.cache_dir,  # shared: built once by `pretrain`
            "finetune_steps": cfg.finetune_steps, "eval_clips": cfg.eval_clips,
            **({"sampler_steps": cfg.sampler_steps} if cfg.sampler_steps else {}),
            "upload_seeded_share": 0.25 if cfg.uploads else 0.0,
            "reward": {**settings.reward,
                       **({} if cfg.use_stars else {"star_weight": 0.0}),
                       **({} if cfg.use_listening else {"listen_weight": 0.0})},
            "dpo_weight": settings.dpo_weight if cfg.use_stars else 0.0,
            "library_dir": workdir / "library" if cfg.library else None,
            **cfg.settings,
        })
        self.rng = np.random.default_rng(cfg.seed)
        self._outside: np.ndarray | None = None  # features of songs for voices
        if cfg.community == "ear":
            ear = load_ear(self.settings.cache_dir)
            nearness = None
            if cfg.outside_style:
                nearness = load_style_nearness(ear, self.settings.cache_dir)
                voices = outside_clips(64, OUTSIDE_SEED + 1, cfg.track_seconds,
                                       self.settings.cache_dir)
                self._outside = np.stack([extract(a, 16000).vector() for a in voices])
            self.community: Community | EarCommunity = EarCommunity(
                ear, seed=cfg.seed, n_members=cfg.members, factions=cfg.factions,
                outside=nearness)
        elif cfg.community == "features":
            self.community = Community(seed=cfg.seed, n_members=cfg.members)
        else:
            raise ValueError(f"unknown community {cfg.community!r}: ear or features")
        self._sd: np.ndarray | None = None  # the first pass's feature spread

    async def run(self, base_dir: Path) -> SimResult:
        start = time.perf_counter()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.copytree(base_dir, self.settings.models_dir / "base")
        tagger = base_dir.parent / "tagger"  # the reward model's ears, when pretrain made one
        if tagger.is_dir():
            shutil.copytree(tagger, self.settings.tagger_dir)
        if self.cfg.library:
            self._library(self.workdir / "library")
        result = SimResult(config=self.cfg)
        async with await Services.open(self.settings) as services:
            self.services = services
            for k in range(self.cfg.rounds + 1):
                final = k == self.cfg.rounds
                result.passes.append(await self._rating_pass(k, final))
                if final:
                    break
                if self.cfg.uploads:
                    await self._uploads(k)
                if self.cfg.fine_tune:
                    self.say(f"round {k + 1}: fine-tuning")
                    t = time.perf_counter()
                    summary = await services.rounds.run_round(GUILD)
                    p = result.passes[-1]
                    p.promoted, p.reason = summary.promoted, summary.reason
                    p.rolled_back = summary.rolled_back
                    p.round_seconds = time.perf_counter() - t
                    self.say(f"round {k + 1}: {summary.status}, "
                             f"{'promoted' if summary.promoted else 'kept'}: "
                             f"{summary.reason}")
                    if self.cfg.judge_clips and summary.candidate_version \
                            and summary.parent_version:
                        p.candidate_gain, p.candidate_se = await self._judge(
                            summary.parent_version, summary.candidate_version)
        result.seconds = time.perf_counter() - start
        return result

    async def _rating_pass(self, k: int, final: bool) -> PassResult:
        seed = 1_000 * (k + 1) + self.cfg.seed * 100_000
        if final:
            self.say(f"final comparison: {self.cfg.final_per_arm} tracks per arm")
            made = await self.services.tracks.generate(GUILD, self.cfg.final_per_arm, seed=seed,
                                              origin=GENERATED)
            made += await self.services.tracks.generate(GUILD, self.cfg.final_per_arm,
                                               seed=seed + 500_000, origin=BASELINE)
        else:
            self.say(f"pass {k}: generating {self.cfg.tracks_per_round} tracks")
            made = await self.services.tracks.generate_mix(GUILD, self.cfg.tracks_per_round,
                                                           seed=seed)
        audios = [load_audio(t.path, 16000) for t in made]  # what members hear: the files
        feats = [extract(a, 16000) for a in audios]
        heard = [self.community.hear(a) for a in audios]
        stars = self.community.rate_tracks(heard, self.rng)
        present = self.rng.random(stars.shape) < self.cfg.participation
        ratings: dict[str, list[list[float]]] = {}
        play = self.services.clock().timestamp()
        feedback = self.services.feedback
        for i, (track, h) in enumerate(zip(made, heard, strict=True)):
            votes = ratings.setdefault(track.origin, [])
            votes.append([])
            for j, member in enumerate(self.community.members):
                if not present[i, j]:
                    continue
                await feedback.record_vote(track.track_id, member.id, int(stars[i, j]))
                secs = self.community.listen_seconds(member, h, track.duration_s, self.rng)
                await feedback.record_listen(track.track_id, member.id, play + i, 0.0, secs,
                                             True)
                votes[-1].append(float(stars[i, j]))
        new_feats = [f for t, f in zip(made, feats, strict=True) if t.origin == GENERATED]
        new_heard = [h for t, h in zip(made, heard, strict=True) if t.origin == GENERATED]
        vecs = np.stack([f.vector() for f in new_feats])
        if self._sd is None:  # diversity in units of the first pass's spread: passes compare
            self._sd = vecs.std(0) + 1e-6
        z = (vecs - vecs.mean(0)) / self._sd
        version = next(t.model_version for t in made if t.origin == GENERATED)
        rated = RoundRatings(round=k, ratings=ratings)
        expected = [self.community.score(h) for h in new_heard]
        result = PassResult(
            round=k, version=version, ratings=rated,
            expected_new=float(np.mean(expected)),
            expected_se=float(np.std(expected, ddof=1) / np.sqrt(len(expected))),
            taste=_taste(new_feats), diversity=diversity(z),
            factions=(self.community.faction_scores(new_heard)
                      if isinstance(self.community, EarCommunity) else {}),
            fd_outside=None if self._outside is None else self._distance(vecs),
            fd_model=None if self._outside is None else await self._model_distance())
        new_m, _, _ = mean_ci(rated.track_means(GENERATED))
        base_m, _, _ = mean_ci(rated.track_means(BASELINE))
        self.say(f"pass {k} ({version}): new {new_m:.2f}, baseline {base_m:.2f} stars"
                 + ("" if result.fd_outside is None
                    else f"; distance to the voices {result.fd_outside:.1f} (the model at "
                         f"uniform tags {result.fd_model:.1f})"))
        return result

    def _distance(self, vecs: np.ndarray, draws: int = 20) -> float:
        """Feature FD to the voices at `fd_tracks` tracks: the mean over random subsets
        where a pass made more (pass 0 and the final comparison)."""
        n = fd_tracks(self.cfg)
        if len(vecs) <= n:
            return frechet_distance(vecs, self._outside)
        rng = np.random.default_rng(len(vecs))
        return float(np.mean([frechet_distance(vecs[rng.choice(len(vecs), n, replace=False)],
                                               self._outside) for _ in range(draws)]))

    async def _model_distance(self) -> float:
        """Feature FD to the voices of the active model's clips at uniform tags, the same
        seeds every pass: how far the model itself moved toward the style, apart from the
        tag policy's choice of tags. Not posted, not rated."""
        info = await self.services.tracks.active_version(GUILD)
        seeds = range(PROBE_SEED, PROBE_SEED + fd_tracks(self.cfg))
        made = await self._clips(info.version, seeds, [
            (tagvocab.uniform(random.Random(s)), tagvocab.GUIDANCE) for s in seeds])
        return self._distance(np.stack([extract(a, made.sample_rate).vector()
                                        for a in made.audios]))

    async def _clips(self, version: str, seeds: Sequence[int],
                     served: Sequence[tuple[tagvocab.Tags, float]]) -> GenerationResult:
        """Clips of a model version, one per seed with its tags and guidance, made by the
        bot's worker; not posted, not rated."""
        tracks = self.services.tracks
        return await tracks.compute.generate(GenerationJob(
            model_dir=str(tracks.registry.version_dir(GUILD, version)), seeds=tuple(seeds),
            seconds=self.cfg.track_seconds, steps=self.settings.sampler_steps,
            tags=tuple(tagvocab.format_tags(t) for t, _ in served),
            guidance=tuple(g for _, g in served)))

    async def _judge(self, parent: str, candidate: str) -> tuple[float, float]:
        """The community's noise-free stars of the candidate's clips minus its parent's, same
        seeds and tags (fresh draws from the guild's tag policy, not the evaluation's), and
        the paired standard error. Not posted, not rated."""
        policy = await self.services.tracks.tag_policy(GUILD)
        seeds = range(JUDGE_SEED, JUDGE_SEED + self.cfg.judge_clips)
        served = [policy.serve(random.Random(s)) for s in seeds]
        scores = []
        for version in (parent, candidate):
            made = await self._clips(version, seeds, served)
            scores.append([self.community.score(self.community.hear(a)) for a in made.audios])
        diff = np.array(scores[1]) - np.array(scores[0])
        gain = float(diff.mean())
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        self.say(f"round candidate {candidate} as the community hears it: {gain:+.3f} stars "
                 f"(se {se:.3f}) against {parent}")
        return gain, se

    def _library(self, folder: Path) -> None:
        """The operator's library: songs in the community's style (see SimConfig.library)."""
        from model.scores import score_corpus

        folder.mkdir(parents=True)
        seed, cache = self.cfg.seed + 31_000, self.settings.cache_dir
        songs = (outside_clips(self.cfg.library, seed, 20.0, cache) if self.cfg.outside_style
                 else score_corpus(self.cfg.library, seed, 20.0, 16000, cache)[0])
        for i, song in enumerate(songs):
            encode(song, 16000, folder / f"song-{i}.ogg", "ogg")

    async def _uploads(self, k: int) -> None:
        folder = self.workdir / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        for member in self.community.members:
            if not self.community.will_upload(member, self.rng):  # type: ignore[arg-type]
                continue
            song = self.community.make_upload(member, self.rng, 20.0,  # type: ignore[arg-type]
                                              cache_dir=self.settings.cache_dir)
            path = encode(song, 16000, folder / f"song-{k}-{member.id}.mp3", "mp3")
            await self.services.uploads.ingest(GUILD, str(member.id), path, f"my song {k}.mp3")


def markdown(result: SimResult, title: str = "crowdtune simulation") -> str:
    cfg = result.config
    lines = [f"# {title}", "",
             f"{cfg.rounds} rounds, {cfg.members} members, {cfg.tracks_per_round} tracks a "
             f"round, final comparison {cfg.final_per_arm} tracks per arm; "
             f"{result.seconds / 60:.1f} min.", "",
             "| pass | model | new mean [95% CI] | baseline mean [95% CI] | gain vs prev | "
             "gain vs baseline | p (Mann-Whitney, tracks) | expected | centroid Hz | onsets/s | "
             "register | flatness | loudness dB | diversity | next round |",
             "|" + "---|" * 15]
    prev = None
    for p in result.passes:
        r = p.row()

        def ci(m, lo_hi):
            if m is None:
                return "-"
            lo, hi = lo_hi
            return f"{m:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{m:.2f}"

        gain_prev = "-" if prev is None or r["new_mean"] is None else \
            f"{r['new_mean'] - prev:+.2f}"
        gain = "-" if r["gain_over_baseline"] is None else f"{r['gain_over_baseline']:+.2f}"
        pv = "-" if r["p_value"] is None else f"{r['p_value']:.2g}"
        promoted = "" if p.promoted is None else ("promoted" if p.promoted else "kept")
        lines.append(
            f"| {p.round} | {p.version} | {ci(r['new_mean'], r['new_ci'])} | "
            f"{ci(r['baseline_mean'], r['baseline_ci'])} | {gain_prev} | {gain} | {pv} | "
            f"{r['expected_new']:.2f} | {r['centroid_hz']:.0f} | {r['onset_rate']:.2f} | "
            f"{r['register_midi']:.1f} | {r['flatness']:.3f} | {r['loudness_db']:.1f} | "
            f"{r['diversity']:.2f} | {promoted} |")
        prev = r["new_mean"]
    last = result.passes[-1]
    gain, p = compare(last.ratings.track_means(GENERATED),
                      last.ratings.track_means(BASELINE))
    wrong = result.wrong_promotions()
    rollbacks = [f"round {q.round + 1}: {q.rolled_back}" for q in result.passes if q.rolled_back]
    kept = last.diversity / result.passes[0].diversity
    lines += ["", f"Final: new model {gain:+.2f} stars over baseline, Mann-Whitney p = {p:.3g} "
              f"over tracks; diversity {kept:.0%} of the base's.",
              "", "Promotions followed by a drop in expected stars (beyond two standard "
              f"errors): {', '.join(f'round {k}' for k in wrong) if wrong else 'none'}.",
              *([f"Automatic rollbacks: {'; '.join(rollbacks)}."] if rollbacks else [])]
    judged = [q for q in result.passes if q.candidate_gain is not None]
    if judged:
        missed = result.missed_promotions()
        lines += ["", f"Each round's candidate as the community hears it ({cfg.judge_clips} "
                  "clips against its parent, same seeds, the guild's tags; noise-free stars, "
                  "se): " + "; ".join(
                      f"round {q.round + 1} {q.candidate_gain:+.3f} ({q.candidate_se:.3f}), "
                      f"{'promoted' if q.promoted else 'kept'}" for q in judged) + ". Kept "
                  "candidates the community liked better beyond two standard errors: "
                  + (", ".join(f"round {k}" for k in missed) if missed else "none") + "."]
    if result.passes[0].fd_outside is not None:
        lines += ["", "Feature Fréchet distance to the songs for voices (the community's "
                  f"style, outside the corpus), per pass, at {fd_tracks(cfg)}"
                  " tracks each: the new model's tracks as served "
                  + ", ".join(f"{p.fd_outside:.1f}" for p in result.passes)
                  + "; the active model alone, at uniform tags and the same seeds each pass, "
                  + ", ".join(f"{p.fd_model:.1f}" for p in result.passes) + "."]
    if result.passes[0].factions:
        first = result.passes[0].factions
        lines += ["", "Expected stars per faction, base -> last: " + "; ".join(
            f"faction {f}: {first[f]:.2f} -> {last.factions[f]:.2f} "
            f"({last.factions[f] - first[f]:+.2f})" for f in first) + "."]
    return "\n".join(lines) + "\n"


def write_outputs(result: SimResult, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    rating_chart([p.ratings for p in result.passes], out_dir / "simulation.png",
                 title="Simulated community: mean rating per pass (95% CI)")
    (out_dir / "simulation.md").write_text(markdown(result))
    data = result.to_json()
    (out_dir / "simulation.json").write_text(json.dumps(data, indent=1))
    return data
