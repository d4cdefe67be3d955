"""The weekly round: feedback in, a fine-tuned candidate out, promoted only when it is better.

    run_round(guild)
      1. lock the guild (a file lock: two rounds for one guild never run at once, even from
         two processes); a 'running' row left by a crashed process is marked failed; then wait
         for one of `round_concurrency` slots (rounds that fall due together queue in order)
      2. automatic rollback: if the champion's tracks were rated significantly worse than the
         baseline tracks posted beside them (two-sided Mann-Whitney over the tracks' mean
         stars, p < rollback_p_value),
         the guild goes back to the champion's parent first
      3. the training set: rewards from the window's votes and listens (bot/core/rewards.py), the
         best-rewarded tracks weighted by reward, the guild's uploads as positives, preference
         pairs for Diffusion-DPO, and the reward model's data (every track rated in the last
         `reward_history_days`, uploads as positives): it picks the corpus clips the model
         rehearses; too little feedback -> the round is skipped, nothing changes
      4. fine-tuning in a child process (model/finetune.py): a crash or kill leaves the
         champion active and marks the round failed
      5. the candidate is kept as a new version, evaluated offline against the champion in
         another child process (model/evaluate.py), and promoted when the verdict says so
      6. the round is recorded, with a chart and a text summary for the channel
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bot.core.clock import Clock, system_clock
from bot.core.compute import ChildFailed, Compute, ComputeInfo, LocalCompute
from bot.core.config import Settings
from bot.core.domain import Origin, RoundStatus
from bot.core.errors import UserFacingError
from bot.core.library import LibrarySong, scan_library
from bot.core.report import RoundRatings, compare, rating_chart, summary_text
from bot.core.rewards import (
    Listen,
    RewardSettings,
    TrackReward,
    Vote,
    preference_pairs,
    track_rewards,
)
from bot.core.rewards import training_weights as reward_weights
from bot.core.store import RoundConflict, RoundRow, Store, TrackFeedback, UploadRow
from bot.core.tag_policy import TagPolicy
from bot.core.tracks import mel_file
from model.contracts import (
    ChildEvent,
    EvalSpec,
    FinetuneSpec,
    ItemKind,
    OnEvent,
    PlacedEvent,
    PreferencePair,
    RatedFile,
    TrainItem,
    TrainResult,
    Verdict,
)
from model.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)

# An automatic rollback needs rated tracks on both sides (champion and baseline): at least
# this many, with at least this many votes in all.
ROLLBACK_MIN_TRACKS = 5
ROLLBACK_MIN_VOTES = 10


class RoundBusy(UserFacingError):
    """A round for this guild is already running."""


@dataclass(frozen=True)
class RoundMetrics:
    """What a round that trained measured: the fine-tune's result, the evaluation's verdict
    (with its metrics) and the seconds both took. Stored as JSON with the round."""

    train: TrainResult
    eval: Verdict
    seconds: float


@dataclass
class RoundSummary:
    round_id: int | None
    guild: str
    status: RoundStatus
    reason: str
    promoted: bool = False
    parent_version: str | None = None
    candidate_version: str | None = None
    active_version: str | None = None
    rolled_back: str | None = None  # what the automatic rollback did, if anything
    counts: dict = field(default_factory=dict)
    metrics: RoundMetrics | None = None  # None: the round did not get to train
    compute: dict = field(default_factory=dict)  # where its model steps ran (ComputeInfo)
    chart: str | None = None
    text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class GuildLock:
    """An exclusive, non-blocking flock on a file; released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class TrainingSet:
    items: list[TrainItem]  # what fine-tuning learns from
    pairs: list[PreferencePair]  # for Diffusion-DPO
    rated: list[RatedFile]  # the reward model's data
    liked: list[str]  # paths of liked music, for evaluation
    counts: dict
    # Evaluation's clips: the guild's policy's (tags, guidance) per clip; None: uniform.
    eval_tags: list[tuple[dict[str, str], float]] | None = None


def _rated(feedback: list[TrackFeedback], rewards_cfg: RewardSettings
           ) -> tuple[list[TrackReward], list[Vote], list[Listen], dict[int, str]]:
    """Rewards of the voted tracks that still have a file, best first (and their inputs)."""
    votes = [Vote(v.track_id, v.member_id, v.stars) for f in feedback for v in f.votes]
    listens = [Listen(li.track_id, li.member_id, li.listened_s, li.duration_s,
                      li.present_at_start) for f in feedback for li in f.listens]
    files = {f.track.id: f.track.file for f in feedback if f.track.file}
    rated = [r for r in track_rewards(votes, listens, rewards_cfg).values()
             if r.n_votes > 0 and r.track_id in files]
    rated.sort(key=lambda r: r.reward, reverse=True)
    return rated, votes, listens, files


def build_training_set(feedback: list[TrackFeedback], uploads: list[UploadRow],
                       settings: Settings, rewards_cfg: RewardSettings,
                       history: list[TrackFeedback] | None = None,
                       library: list[LibrarySong] = ()) -> TrainingSet:
    """Rated tracks weighted by reward (best fraction only), uploads, the library's songs,
    preference pairs, and the reward model's data: the tracks rated in `history` (default:
    in `feedback`)."""
    rated, votes, listens, files = _rated(feedback, rewards_cfg)
    keep = rated[: max(1, round(len(rated) * settings.round_top_fraction))]
    weights = reward_weights([r.reward for r in keep], rewards_cfg)
    guild = feedback[0].track.guild_id if feedback else ""
    made_with = {f.track.id: f.track.tags for f in feedback}
    items = []
    for r, w in zip(keep, weights, strict=True):
        mel = mel_file(settings, guild, r.track_id)
        tags = made_with.get(r.track_id)
        items.append(TrainItem(key=f"track:{r.track_id}", path=files[r.track_id],
                               weight=float(w), kind=ItemKind.TRACK,
                               mel=str(mel) if mel.is_file() else None,
                               tags=dict(tags) if tags else None))
    items += [TrainItem(key=f"upload:{u.id}", path=u.file, weight=rewards_cfg.upload_reward,
                        kind=ItemKind.UPLOAD) for u in uploads]
    items += [TrainItem(key=f"library:{Path(song.stored).stem}", path=song.stored, weight=1.0,
                        kind=ItemKind.LIBRARY) for song in library if song.stored]
    pairs = [PreferencePair(f"track:{p.preferred}", f"track:{p.rejected}")
             for p in preference_pairs(votes, rewards_cfg)
             if p.preferred in files and p.rejected in files]
    liked = [files[r.track_id] for r in keep if r.reward > 0] + [u.file for u in uploads]
    counts = {"tracks": len(feedback), "rated_tracks": len(rated), "votes": len(votes),
              "listens": sum(1 for li in listens if li.present_at_start),
              "uploads": len(uploads), "library": sum(1 for song in library if song.stored),
              "train_tracks": len(keep), "pairs": len(pairs)}
    # The reward model's data: every rated track of the history, the uploads as positives.
    if history is None or history is feedback:
        past, past_files = rated, files
    else:
        past, _, _, past_files = _rated(history, rewards_cfg)
    rated_rows = [RatedFile(path=past_files[r.track_id], reward=r.reward) for r in past]
    rated_rows += [RatedFile(path=u.file, reward=rewards_cfg.upload_reward) for u in uploads]
    counts["reward_model_tracks"] = len(past)
    return TrainingSet(items=items, pairs=pairs, liked=liked, counts=counts, rated=rated_rows,
                       eval_tags=eval_tags(history or feedback, settings,
                                           [u.tags for u in uploads if u.tags]))


def eval_tags(feedback: list[TrackFeedback], settings: Settings,
              songs: Sequence[Mapping[str, str]] = ()
              ) -> list[tuple[dict[str, str], float]] | None:
    """The tags evaluation makes its clips with, and their guidance: draws from the guild's
    tag policy (its tracks' rewards and the tags heard in its uploads, `songs`), so the
    candidate is judged on what it will be asked for; None (uniform) when it has none."""
    policy = TagPolicy.for_guild(feedback, settings, songs)
    if not settings.tag_policy or not policy.learnt:
        return None
    return [policy.serve(random.Random(i)) for i in range(settings.eval_clips)]


def round_ratings(feedback: list[TrackFeedback], round_starts: list[float]) -> list[RoundRatings]:
    """Stars per origin for each period between round starts (period k: tracks made before
    round k started), the data of the report chart."""
    bounds = [*round_starts, float("inf")]
    out = []
    for k, end in enumerate(bounds, start=1):
        begin = bounds[k - 2] if k > 1 else float("-inf")
        ratings: dict[str, list[list[float]]] = {}
        for f in feedback:
            if begin <= f.track.created_at < end and f.votes:
                ratings.setdefault(f.track.origin, []).append([v.stars for v in f.votes])
        if ratings:
            out.append(RoundRatings(round=k, ratings=ratings))
    return out


@dataclass(frozen=True)
class RoundState:
    """What /round status shows: the round running now (as recorded) and the last one that
    finished."""

    running: RoundRow | None
    last: RoundRow | None
    ahead: int | None = None  # queued behind this many rounds (None: not queued)
    where: ComputeInfo | None = None  # where the running round's model steps run


class RoundService:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry,
                 clock: Clock = system_clock, compute: Compute | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.clock = clock
        # Round steps need no generation worker, so a default local one starts nothing.
        self.compute = compute or LocalCompute(settings.torch_threads)
        # Rounds due together wait their turn (FIFO) for one of `round_concurrency` slots.
        self._slots = asyncio.Semaphore(settings.round_concurrency)
        self._queued: dict[str, float] = {}  # guild -> when it began waiting
        self._where: dict[str, ComputeInfo] = {}  # guild -> where its round's steps run

    def _rewards_cfg(self) -> RewardSettings:
        return RewardSettings(**self.settings.reward)

    async def run_round(self, guild: str, progress: OnEvent | None = None) -> RoundSummary:
        lock = GuildLock(self.settings.data_dir / "locks" / f"round-{guild}.lock")
        if not lock.acquire():
            raise RoundBusy(f"a round for guild {guild} is already running")
        try:
            stale = await self.store.running_round(guild)
            if stale is not None:  # we hold the lock, so its process is gone
                await self.store.finish_round(stale.id, RoundStatus.FAILED,
                                              reason="interrupted: the process stopped")
            self._queued[guild] = time.monotonic()
            async with self._slots:
                del self._queued[guild]
                self._where[guild] = self.compute.where()
                return await self._run_locked(guild, progress)
        finally:
            self._queued.pop(guild, None)
            self._where.pop(guild, None)
            lock.release()

    async def _run_locked(self, guild: str, progress: OnEvent | None) -> RoundSummary:
        await self.store.ensure_guild(guild)
        champion = await asyncio.to_thread(self.registry.ensure_guild, guild)
        rolled_back = await self._auto_rollback(guild, champion)
        if rolled_back:
            champion = await asyncio.to_thread(self.registry.resolve_active, guild)
        previous = [r for r in await self.store.rounds(guild) if r.status == RoundStatus.SUCCEEDED]
        since = previous[0].started_at if previous else None
        row = await self.store.start_round(guild, parent_version=champion.version)
        summary = RoundSummary(round_id=row.id, guild=guild, status=RoundStatus.RUNNING, reason="",
                               parent_version=champion.version, rolled_back=rolled_back)
        work = self.settings.work_dir / f"round-{row.id}"
        try:
            feedback = await self.store.track_feedback(guild, since=since)
            history = await self._history(guild, since, feedback)
            uploads = await self.store.uploads(guild)
            library = await self._library()
            data = build_training_set(feedback, uploads, self.settings, self._rewards_cfg(),
                                      history, library)
            summary.counts = data.counts
            short = self._too_little(data.counts)
            if short:
                summary.status, summary.reason = RoundStatus.SKIPPED, short
            else:
                await self._train_and_judge(guild, champion, data, work, summary, progress)
                summary.status = RoundStatus.SUCCEEDED
        except (ChildFailed, OSError, ValueError, RoundConflict) as exc:
            summary.status, summary.reason = RoundStatus.FAILED, str(exc)
            log.error("guild %s: round %s failed: %s", guild, row.id, exc)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary.compute = self._where[guild].to_dict()
        if summary.status == RoundStatus.SUCCEEDED:
            pruned = await asyncio.to_thread(self.registry.prune, guild,
                                             self.settings.keep_recent_versions)
            if pruned:
                log.info("guild %s: pruned model versions %s", guild, ", ".join(pruned))
        summary.active_version = self.registry.active_name(guild)
        await self.store.finish_round(
            row.id, summary.status, candidate_version=summary.candidate_version,
            promoted=summary.promoted, reason=summary.reason, counts=summary.counts,
            metrics=asdict(summary.metrics) if summary.metrics else None)
        await self._report(guild, summary)
        return summary

    async def _history(self, guild: str, since: float | None,
                       window: list[TrackFeedback]) -> list[TrackFeedback]:
        """The feedback of the last `reward_history_days` (the window when that is shorter)."""
        days = self.settings.reward_history_days
        start = self.clock().timestamp() - days * 86400
        if days == 0 or since is None or start >= since:
            return window
        return await self.store.track_feedback(guild, since=start)

    async def _library(self) -> list[LibrarySong]:
        s = self.settings
        if s.library_dir is None:
            return []
        scan = await asyncio.to_thread(scan_library, s.library_dir, s.library_store)
        return scan.stored

    def _corpus_replay(self) -> bool:
        s = self.settings
        return s.corpus_replay == "always" or (s.corpus_replay == "auto"
                                               and s.base_model == "builtin")

    def _too_little(self, counts: dict) -> str | None:
        s = self.settings
        if counts["votes"] < s.round_min_votes or counts["rated_tracks"] < s.round_min_rated_tracks:
            return (f"not enough feedback yet: {counts['votes']} votes on "
                    f"{counts['rated_tracks']} tracks (a round needs {s.round_min_votes} votes "
                    f"on {s.round_min_rated_tracks} tracks); the model is unchanged")
        return None

    async def _train_and_judge(self, guild: str, champion: VersionInfo, data: TrainingSet,
                               work: Path, summary: RoundSummary,
                               progress: OnEvent | None) -> None:
        s = self.settings
        work.mkdir(parents=True, exist_ok=True)
        parent_dir = self.registry.version_dir(guild, champion.version)
        spec = FinetuneSpec(
            parent_dir=str(parent_dir), out_dir=str(work / "candidate"), items=data.items,
            pairs=data.pairs, rated=data.rated, steps=s.finetune_steps,
            batch_size=s.finetune_batch_size,
            lr=s.finetune_lora_lr if s.finetune_lora_rank else s.finetune_lr,
            lora_rank=s.finetune_lora_rank, lora_alpha=s.finetune_lora_alpha,
            track_share=s.finetune_track_share, upload_share=s.finetune_upload_share,
            library_share=s.finetune_library_share,
            replay_clips=s.finetune_replay_clips if self._corpus_replay() else 0,
            pool_cache=str(s.cache_dir),
            guide_top=s.finetune_guide_top, guide_temp=s.finetune_guide_temperature,
            guide_min_corr=s.finetune_guide_min_corr, corpus_guided=s.finetune_corpus_guided,
            reward_model_out=str(work / "reward_model.json"),
            reward_inputs=s.reward_inputs, tagger_dir=str(s.tagger_dir),
            dpo_beta=s.dpo_beta, dpo_weight=s.dpo_weight, dpo_min_pairs=s.dpo_min_pairs,
            seed=summary.round_id or 0, threads=s.torch_threads,
        )
        spec.save(work / "finetune.json")
        started = time.perf_counter()

        def seen(event: ChildEvent) -> None:  # where the steps run, for /round status
            if isinstance(event, PlacedEvent):
                self._where[guild] = ComputeInfo(event.backend, event.node)
            if progress:
                progress(event)

        trained = await self.compute.run_model("model.finetune", work / "finetune.json",
                                  work / "finetune.log", s.round_timeout_s, seen,
                                  done=TrainResult)
        for key, tags in trained.heard.items():  # the guild's taste learns from them
            kind, _, upload_id = key.partition(":")
            if kind == "upload":
                await self.store.set_upload_tags(int(upload_id), tags)
        trained = replace(trained, heard={})  # kept with the uploads, not in every record
        info = await asyncio.to_thread(
            self.registry.add_version, guild, work / "candidate", champion.version,
            "finetune", f"round {summary.round_id}", {"train": asdict(trained)})
        summary.candidate_version = info.version
        ev = EvalSpec(champion_dir=str(parent_dir),
                      candidate_dir=str(self.registry.version_dir(guild, info.version)),
                      rated=data.rated, reward_model=str(work / "reward_model.json"),
                      liked=data.liked, clips=s.eval_clips,
                      tags=[t for t, _ in data.eval_tags] if data.eval_tags else None,
                      guidance=[g for _, g in data.eval_tags] if data.eval_tags else None,
                      reward_inputs=s.reward_inputs, tagger_dir=str(s.tagger_dir),
                      promote_z=s.promote_z, steps=s.sampler_steps, threads=s.torch_threads)
        ev.save(work / "evaluate.json")
        verdict = await self.compute.run_model("model.evaluate", work / "evaluate.json",
                                  work / "evaluate.log", s.round_timeout_s, seen,
                                  done=Verdict)
        summary.metrics = RoundMetrics(trained, verdict,
                                       round(time.perf_counter() - started, 1))
        summary.reason = verdict.reason
        if verdict.promote:
            await asyncio.to_thread(self.registry.promote, guild, info.version)
            summary.promoted = True

    async def _auto_rollback(self, guild: str, champion: VersionInfo) -> str | None:
        """Roll back a champion that its community rated significantly below the baseline."""
        if champion.parent is None:
            return None
        feedback = await self.store.track_feedback(guild, since=champion.created_at)
        new = [f.votes for f in feedback if f.track.origin == Origin.GENERATED
               and f.track.model_version == champion.version and f.votes]
        base = [f.votes for f in feedback if f.track.origin == Origin.BASELINE
                and f.track.created_at >= champion.created_at and f.votes]
        if min(len(new), len(base)) < ROLLBACK_MIN_TRACKS or \
                min(sum(map(len, new)), sum(map(len, base))) < ROLLBACK_MIN_VOTES:
            return None
        # The track is the unit: its votes share its sound, so testing votes as if they
        # were independent made a few unlucky tracks look significant.
        gain, p = compare([sum(v.stars for v in vs) / len(vs) for vs in new],
                          [sum(v.stars for v in vs) / len(vs) for vs in base])
        if gain < 0 and p < self.settings.rollback_p_value:
            info = await asyncio.to_thread(self.registry.rollback, guild)
            note = (f"rolled back {champion.version} -> {info.version}: its tracks were rated "
                    f"{gain:+.2f} stars against the baseline (Mann-Whitney p = {p:.3g})")
            log.warning("guild %s: %s", guild, note)
            return note
        return None

    async def ratings_chart(self, guild: str, name: str) -> tuple[list[RoundRatings], Path]:
        """Stars per round and origin so far, and their chart as reports/<guild>/<name>.png
        (no file when nothing is rated yet)."""
        rounds = sorted(await self.store.rounds(guild), key=lambda r: r.started_at)
        feedback = await self.store.track_feedback(guild)
        periods = round_ratings(feedback, [r.started_at for r in rounds])
        chart = self.settings.data_dir / "reports" / guild / f"{name}.png"
        if periods:
            await asyncio.to_thread(rating_chart, periods, chart)
        return periods, chart

    async def state(self, guild: str) -> RoundState:
        """The recorded running round (if any) and the last finished one."""
        running = await self.store.running_round(guild)
        last = next((r for r in await self.store.rounds(guild, limit=5)
                     if r.status != RoundStatus.RUNNING), None)
        order = sorted(self._queued, key=self._queued.__getitem__)
        ahead = order.index(guild) if guild in order else None
        return RoundState(running, last, ahead, self._where.get(guild))

    async def history(self, guild: str, limit: int = 8) -> list[RoundRow]:
        """The guild's last rounds, newest first."""
        return await self.store.rounds(guild, limit=limit)

    async def _report(self, guild: str, summary: RoundSummary) -> None:
        """The chart of ratings per round and origin, and the text for the channel."""
        periods, chart = await self.ratings_chart(guild, f"round-{summary.round_id}")
        reason = summary.reason + (f"\n{summary.rolled_back}" if summary.rolled_back else "")
        if periods:
            summary.chart = str(chart)
            summary.text = summary_text(periods[-1], summary.promoted, reason,
                                        summary.active_version)
        else:
            summary.text = f"Round {summary.round_id}: {summary.status}. {reason}"
