"""What crosses the process boundary between the bot and the model's child processes, typed.

The parent writes a spec (a JSON file) and runs `python -m model.finetune SPEC` or
`python -m model.evaluate SPEC`; the child prints one JSON line per event (`data`, `step`,
then `done` or `error`), and the parent reads them back into the same dataclasses. Plain
dataclasses and enums, no torch, so the bot imports this module without loading the model.

A spec saves and loads symmetrically: `Spec.load(path)` rebuilds the nested rows exactly
(`from_dict` follows the field types: nested dataclasses, lists of them, enums, optionals).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar, Union, get_args, get_origin, get_type_hints

POOL_SEED = 20_000  # corpus seed of the replay pool: apart from pretraining's and the benchmarks'

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build dataclass `cls` from its `asdict` form, nested dataclasses and enums included.
    An unknown or missing field raises ValueError."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
    hints = get_type_hints(cls)
    try:
        return cls(**{k: _build(hints[k], v) for k, v in data.items()})
    except TypeError as exc:  # a missing field
        raise ValueError(f"{cls.__name__}: {exc}") from exc


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if origin is list:
        (arg,) = get_args(tp)
        return [_build(arg, v) for v in value]
    if isinstance(tp, type) and is_dataclass(tp):
        return from_dict(tp, value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    return value


class JsonFile:
    """save / load for a spec dataclass."""

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))  # type: ignore[call-overload]

    @classmethod
    def load(cls, path: Path) -> Self:
        return from_dict(cls, json.loads(Path(path).read_text()))


# --- the fine-tuning spec -----------------------------------------------------------------

class ItemKind(StrEnum):
    TRACK = "track"  # a generated track the community rated
    UPLOAD = "upload"  # a member's own song
    LIBRARY = "library"  # a song from the operator's library folder


@dataclass(frozen=True)
class TrainItem:
    """An audio file fine-tuning learns from, with its non-negative weight."""

    key: str  # "track:<id>" | "upload:<id>" | "library:<sha>": what preference pairs refer to
    path: str
    weight: float
    kind: ItemKind = ItemKind.TRACK
    mel: str | None = None  # the generated mel windows (.npy), for tracks that kept them
    tags: dict[str, str] | None = None  # what a track was made with (model/tags.py); None: none


@dataclass(frozen=True)
class PreferencePair:
    preferred: str  # TrainItem keys
    rejected: str


@dataclass(frozen=True)
class RatedFile:
    """An audio file and its reward: the reward model's data (uploads as positives)."""

    path: str
    reward: float


@dataclass
class FinetuneSpec(JsonFile):
    parent_dir: str
    out_dir: str
    items: list[TrainItem]
    pairs: list[PreferencePair] = field(default_factory=list)  # for Diffusion-DPO
    rated: list[RatedFile] = field(default_factory=list)  # the reward model's data
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    track_share: float = 0.0
    upload_share: float = 0.1
    library_share: float = 0.3  # the operator's library, when it has songs
    replay_clips: int = 512  # the starter-corpus pool; 0: no corpus replay
    replay_seed: int = POOL_SEED
    pool_cache: str | None = None  # folder that caches the corpus pool between rounds
    reward_model_out: str | None = None  # where to save the fitted reward model (JSON)
    reward_inputs: str = "both"  # what it reads (model/reward_model.py INPUTS)
    tagger_dir: str | None = None  # the tagger it hears through; None: the shipped one
    guide_top: float = 0.25
    guide_temp: float = 0.5
    guide_min_corr: float = 0.2
    corpus_guided: bool = False  # the corpus replay drawn by the reward model (False: even)
    dpo_beta: float = 2000.0
    dpo_weight: float = 0.0
    dpo_min_pairs: int = 4
    windows_per_item: int = 4
    # Uploads and library songs trained under the tags the tagger hears in them (model/
    # finetune.py heard_tags); False: under "any" only.
    hear_tags: bool = True
    # Tag dropout (model/training.py drop_tags): per field, and of a whole tag set.
    tag_dropout_field: float = 0.3
    tag_dropout_all: float = 0.1
    # LoRA (model/lora.py): the rank of the adapter to train; 0: full fine-tuning.
    lora_rank: int = 0
    lora_alpha: float = 8.0
    ema_decay: float = 0.95
    seed: int = 0
    threads: int = 2


# --- the evaluation spec ------------------------------------------------------------------

@dataclass
class EvalSpec(JsonFile):
    champion_dir: str
    candidate_dir: str
    rated: list[RatedFile] = field(default_factory=list)  # uploads included
    reward_model: str | None = None  # the fine-tune's fitted reward model, if it saved one
    liked: list[str] = field(default_factory=list)  # paths
    # The tags clip i of both models is made with (the guild's policy); None: uniform.
    tags: list[dict[str, str]] | None = None
    guidance: list[float] | None = None  # clip i's guidance scale, beside `tags`; None: default
    reward_inputs: str = "both"
    tagger_dir: str | None = None
    clips: int = 24
    steps: int = 20
    seed: int = 1234
    min_reward_corr: float = 0.2
    # Promote on the reward model only when the predicted gain's lower bound, gain - promote_z
    # x its standard error (clips' scatter and the model's uncertainty), is above zero.
    promote_z: float = 1.28
    # Per round, on a few clips (noisy): a focused candidate may lose some spread, not half.
    min_diversity: float = 0.5
    max_flatness_ratio: float = 1.5
    max_loudness_drop_db: float = 6.0
    threads: int = 2


# --- events: one JSON line each -----------------------------------------------------------

class ChildEvent:
    """A child process's JSON line: {"event": EVENT, **fields}."""

    EVENT: ClassVar[str]

    def to_json(self) -> str:
        return json.dumps({"event": self.EVENT, **asdict(self)})  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, line: str | bytes) -> Self:
        data = json.loads(line)
        if data.pop("event", None) != cls.EVENT:
            raise ValueError(f"not a {cls.EVENT!r} event: {line!r}")
        return from_dict(cls, data)


# What receives a child's events as they come (the round's progress, the CLI's bar).
OnEvent = Callable[["ChildEvent"], None]

@dataclass(frozen=True)
class StartedEvent(ChildEvent):
    """Emitted by the parent when the child process is up."""

    EVENT: ClassVar[str] = "started"
    module: str
    pid: int


@dataclass(frozen=True)
class PlacedEvent(ChildEvent):
    """Where the work runs, when that is not the parent's machine (a Ray node)."""

    EVENT: ClassVar[str] = "placed"
    backend: str
    node: str


@dataclass(frozen=True)
class Guide:
    """Whether the guild's reward model was trusted to guide the replay (the library's songs
    always; the starter corpus only with `FinetuneSpec.corpus_guided`), and its held-out r."""

    guided: bool = False
    reward_model_corr: float | None = None  # held-out r; None when there was none to fit


@dataclass(frozen=True, kw_only=True)
class DataEvent(Guide, ChildEvent):
    """Fine-tuning read its data and is about to train (and whether its reward model guides)."""

    EVENT: ClassVar[str] = "data"
    windows: int
    pairs: int
    replay: int
    dpo: bool


@dataclass(frozen=True)
class StepEvent(ChildEvent):
    EVENT: ClassVar[str] = "step"
    step: int
    steps: int
    loss: float  # mean of the last 10 steps


@dataclass(frozen=True, kw_only=True)
class TrainResult(DataEvent):
    """Fine-tuning's `done` event: what it trained on (as in its `data` event) and how it
    ended."""

    EVENT: ClassVar[str] = "done"
    final_loss: float
    seconds: float
    # What the tagger heard in each upload (by item key): the bot keeps it as evidence for
    # the guild's taste over tags (bot/core/tag_policy.py).
    heard: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalMetrics:
    """What evaluation measured on the champion's and the candidate's clips (same seeds).
    The optional ones are None when there was nothing to measure them by."""

    clips: int
    diversity_ratio: float
    flatness_champion: float
    flatness_candidate: float
    loudness_champion: float
    loudness_candidate: float
    reward_model_corr: float | None = None
    pred_reward_champion: float | None = None
    pred_reward_candidate: float | None = None
    pred_gain_se: float | None = None  # standard error of the predicted gain
    liked_dist_champion: float | None = None
    liked_dist_candidate: float | None = None


@dataclass(frozen=True)
class Verdict(ChildEvent):
    """Evaluation's `done` event: promote the candidate or keep the champion, and why."""

    EVENT: ClassVar[str] = "done"
    promote: bool
    reason: str
    metrics: EvalMetrics


@dataclass(frozen=True)
class ErrorEvent(ChildEvent):
    EVENT: ClassVar[str] = "error"
    error: str  # one line: "<ExceptionType>: <message>"


_EVENTS: dict[str, type[ChildEvent]] = {
    c.EVENT: c for c in (StartedEvent, PlacedEvent, DataEvent, StepEvent, ErrorEvent)}


def parse_event(line: str | bytes, done: type[ChildEvent]) -> ChildEvent | None:
    """A child's output line as its event (`done` as the given type: TrainResult or Verdict);
    None for a line that is no event (not JSON, or no known "event" tag). A known event with
    the wrong fields raises ValueError."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.pop("event", None)
    cls = done if kind == "done" else _EVENTS.get(kind)  # type: ignore[arg-type]
    return None if cls is None else from_dict(cls, data)


def exit_with_parent(before_exit: Callable[[], object] | None = None) -> None:
    """End this child process when its parent dies (a killed bot or simulation must not leave
    a model process burning the cores), after `before_exit`. A thread watches for
    re-parenting; the kernel's parent-death signal would fire when the spawning *thread*
    ends, which is too early."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        try:
            if before_exit is not None:
                before_exit()
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
