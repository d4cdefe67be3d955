"""Settings from the environment and `.env` (every knob is documented in `.env.example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.core.domain import MAX_GENERATE_PER_HOUR, MAX_POSTS_PER_DAY


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CROWDTUNE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    # The bot token is read without the prefix, as Discord's docs name it; never logged.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")

    # Model: "builtin" pretrains (once) the small offline model; otherwise a folder or hub id
    # of a diffusers AudioDiffusionPipeline-format checkpoint.
    base_model: str = "builtin"
    # `crowdtune pretrain --train`: the shipped base's recipe (5,000 steps on 4,096 corpus
    # clips: 1 h 45 min on 2 cores); a first run installs the shipped weights instead.
    pretrain_steps: int = Field(default=5000, ge=1)
    pretrain_clips: int = Field(default=4096, ge=16)
    pretrain_seed: int = 0

    # Generation.
    track_seconds: float = Field(default=20.0, gt=0, le=300)
    # model.pipeline.STEPS, where the choice is measured (not imported: it loads torch).
    sampler_steps: int = Field(default=12, ge=1, le=1000)
    audio_format: Literal["ogg", "mp3"] = "ogg"  # ogg is Opus
    keep_wav: bool = False
    torch_threads: int = 2

    # Generation mix: shares of each batch of posted tracks from the baseline model (so every
    # round's gain is measured side by side) and seeded from the guild's uploads.
    baseline_share: float = Field(default=0.25, ge=0, le=1)
    upload_seeded_share: float = Field(default=0.25, ge=0, le=1)
    baseline_source: Literal["base", "previous"] = "base"  # base model, or previous champion

    # The weekly round.
    round_min_votes: int = Field(default=20, ge=1)  # fewer: the round is skipped
    round_min_rated_tracks: int = Field(default=8, ge=2)
    round_top_fraction: float = Field(default=0.5, gt=0, le=1)  # train on the best-rewarded
    finetune_steps: int = Field(default=150, ge=1)
    finetune_batch_size: int = Field(default=16, ge=2)
    finetune_lr: float = Field(default=1e-4, gt=0)
    # >0: fine-tune a LoRA adapter of this rank (model/lora.py; a version is then 0.5 MB at
    # rank 4 instead of a 20 MB copy); 0: full fine-tuning. Rank 4 is the default since its
    # full simulation gained as much as full fine-tuning's (+0.66 against +0.68 stars, same
    # seeds: docs/results/lora/).
    finetune_lora_rank: int = Field(default=4, ge=0, le=256)
    finetune_lora_alpha: float = Field(default=8.0, gt=0)
    # The adapter's learning rate: its factors start at zero and are few, so they need a
    # larger step than the full weights (bench/bench_lora.py measured with 1e-3).
    finetune_lora_lr: float = Field(default=1e-3, gt=0)
    # Shares of each fine-tuning batch (model/finetune.py): the best-rated generated tracks
    # (0: training on the model's own output amplified its artifacts, measured), the
    # uploads; the rest is starter-corpus replay (even, or guided by the guild's reward model
    # with finetune_corpus_guided: measured worse for the simulated communities, see
    # model/finetune.py).
    finetune_track_share: float = Field(default=0.0, ge=0, le=1)
    finetune_upload_share: float = Field(default=0.1, ge=0, le=1)
    finetune_replay_clips: int = Field(default=512, ge=0)  # the corpus pool (cached)
    # Corpus replay: "auto" rehearses the starter corpus only with the built-in base (an
    # imported checkpoint is never pulled toward it unless the operator says "always").
    corpus_replay: Literal["auto", "always", "never"] = "auto"
    # The operator's library (bot/core/library.py): a folder of songs, checked like uploads,
    # that fine-tuning rehearses (the reward model picks what each guild would like), this
    # share of each batch when it has songs.
    library_dir: Path | None = None
    finetune_library_share: float = Field(default=0.3, ge=0, le=1)
    pool_cache_dir: Path | None = None  # default: <data_dir>/cache
    finetune_guide_top: float = Field(default=0.25, gt=0, le=1)  # rehearse the best quarter
    finetune_guide_temperature: float = Field(default=0.5, gt=0)
    # Below this held-out correlation the reward model is not trusted: replay is uniform.
    finetune_guide_min_corr: float = Field(default=0.2, le=1.1)
    finetune_corpus_guided: bool = False
    # The reward model learns from the ratings of this many past days, not only the week
    # since the last round: taste outlives a week, and each round's tracks cover less of it.
    # 0: only the round's own window.
    reward_history_days: float = Field(default=56.0, ge=0)
    # What the reward model reads (model/reward_model.py): "both" (the tagger's embedding,
    # the tags, and spectral statistics as a minor part), "embedding" (no spectral) or
    # "spectral" (the older model).
    reward_inputs: Literal["both", "embedding", "spectral"] = "both"
    # A candidate is promoted on the reward model only when its predicted gain minus this
    # many standard errors is above zero (1.28: a one-sided 90% bound).
    promote_z: float = Field(default=1.28, ge=0)
    # Tracks nobody asked tags for draw them from the guild's learnt taste (Thompson sampling
    # per field, bot/core/tag_policy.py), uniform with probability `tag_explore` so no value
    # dies out; off: uniform tags.
    tag_policy: bool = True
    tag_explore: float = Field(default=0.2, ge=0, le=1)
    # The floor shrinks once the taste rests on `tag_explore_tracks` rated tracks, as
    # 1 / rated, down to `tag_explore_min`: ruled-out values cost a server less over time.
    tag_explore_min: float = Field(default=0.05, ge=0, le=1)
    tag_explore_tracks: int = Field(default=100, ge=1)
    # Diffusion-DPO on preference pairs; off by default: at weight 0.5 (beta 2000) one round
    # from the shipped base cost -0.41 stars against -0.19 without (same data, measured).
    dpo_weight: float = Field(default=0.0, ge=0)
    dpo_beta: float = Field(default=2000.0, gt=0)
    dpo_min_pairs: int = Field(default=4, ge=1)
    eval_clips: int = Field(default=24, ge=4)
    rollback_p_value: float = Field(default=0.05, gt=0, lt=1)
    # Model versions kept: the active one and its ancestors, the newest this many, and any
    # a moderator pinned; the rest are deleted at the end of each round.
    keep_recent_versions: int = Field(default=4, ge=1)
    round_timeout_s: float = Field(default=3600.0, gt=0)
    # Overrides of bot.rewards.RewardSettings fields, as JSON: {"listen_weight": 0.3}.
    reward: dict[str, float] = Field(default_factory=dict)
    # A guild's data is kept this long after the bot is removed from it (a guild that returns
    # meanwhile finds everything), then purged by the bot's daily job.
    guild_retention_days: float = Field(default=30.0, ge=0)
    # Listening recorded longer ago than this is merged, per track and member, into the
    # disjoint runs rewards read (the same totals, fewer rows); 0: never.
    listen_compact_days: float = Field(default=90.0, ge=0)

    # Where model work runs (bot/core/compute.py): "local" processes (nothing to start), or
    # a Ray cluster at `ray_address` ("host:port" of its head, or "auto": the cluster this
    # machine is part of). Every Ray node must see `data_dir` at the same path (docs).
    compute: Literal["local", "ray"] = "local"
    ray_address: str = "auto"
    ray_generation_actors: int = Field(default=2, ge=1)  # models kept loaded, LRU evicted
    ray_generation_cpus: float = Field(default=1.0, gt=0)
    ray_round_cpus: float = Field(default=1.0, gt=0)  # a round's fine-tune and evaluation
    ray_round_gpus: float = Field(default=0.0, ge=0)
    generation_timeout_s: float = Field(default=900.0, gt=0)  # one job on Ray
    # Rounds that fall due together run this many at a time, the rest queued in order.
    round_concurrency: int = Field(default=1, ge=1)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "crowdtune.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def tracks_dir(self) -> Path:
        return self.data_dir / "tracks"

    @property
    def cache_dir(self) -> Path:
        """Derived data worth keeping (the corpus pool fine-tuning rehearses)."""
        return self.pool_cache_dir or self.data_dir / "cache"

    @property
    def tagger_dir(self) -> Path:
        return self.models_dir / "tagger"

    @property
    def library_store(self) -> Path:
        """The library's songs as converted WAVs, and its index."""
        return self.data_dir / "library"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


# The bot's own settings (same env and file): the defaults every guild starts from; moderators
# change their guild's copy with /setup and /schedule set (bot/core/guild_config.py).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BotSettings(Settings):
    # discord.py's AutoShardedBot: only needed past ~2,500 guilds (Discord then requires it).
    # `shard_count` fixes the number of gateway shards; unset: the count Discord recommends.
    auto_shard: bool = False
    shard_count: int | None = Field(default=None, ge=1)
    # Guild ids (comma-separated) that slash commands are synced to; empty: synced globally
    # (global commands can take a while to appear; guild commands appear at once).
    sync_guilds: str = ""
    # Take every audio post in the uploads channel (needs the privileged Message Content
    # intent); without it a post must mention the bot, or members use /upload.
    message_content: bool = False

    # Per-guild defaults.
    generate_per_hour: int = Field(default=3, ge=0, le=MAX_GENERATE_PER_HOUR)
    posts_per_day: int = Field(default=3, ge=0, le=MAX_POSTS_PER_DAY)
    round_day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "sun"
    round_hour: int = Field(default=18, ge=0, le=23)
    round_minute: int = Field(default=0, ge=0, le=59)
    # Spread the guilds that keep the default round time over this many hours from it (each
    # guild its own hour, fixed by its id), so that many guilds' rounds do not fall due at
    # once; 168 spreads them over the week. 0: every guild at the default time.
    round_spread_hours: int = Field(default=0, ge=0, le=168)
    timezone: str = "UTC"
    # Votes cast while the bot was offline are read back from posts this recent.
    reconcile_days: float = Field(default=14.0, gt=0)
    # Where members can read the privacy notice (PRIVACY.md, published somewhere they can
    # open it); /forget-me and /my-data link it. Empty: they are told to ask a moderator.
    privacy_url: str = ""
    # A daily backup (crowdtune backup) into a new dated folder under this one at this hour
    # (UTC), keeping the newest `backup_keep`; unset: no scheduled backups.
    backup_dir: Path | None = None
    backup_keep: int = Field(default=7, ge=1)
    backup_hour: int = Field(default=4, ge=0, le=23)

    @field_validator("sync_guilds")
    @classmethod
    def _ids(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if not part.isdigit():
                raise ValueError(f"expected comma-separated guild ids, got {part!r}")
        return value

    @property
    def sync_guild_ids(self) -> list[int]:
        return [int(p) for p in self.sync_guilds.split(",") if p.strip()]


S = TypeVar("S", bound=Settings)


def load_settings(config: Path | None = None, cls: type[S] = Settings,  # type: ignore[assignment]
                  **overrides: object) -> S:
    """Settings (`Settings`, or `BotSettings` for the bot) from the environment, an optional
    env-style config file, then overrides (None values are left out)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        return cls(_env_file=config, **clean)  # type: ignore[call-arg]
    return cls(**clean)  # type: ignore[call-arg]
