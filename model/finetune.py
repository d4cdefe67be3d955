"""Fine-tuning a guild's champion on its community's feedback (run as a child process).

    python -m model.finetune SPEC.json

The spec names the parent pipeline, the candidate folder to write, the feedback examples
(audio files with non-negative weights), the rated files the reward model learns from,
preference pairs, and the settings.

The objective is denoising on batches whose windows come from four groups, in expected
shares; the replay is the guild's uploads, then the operator's library, then the corpus:

- uploads (`upload_share`, 10%): the community's own songs (all of them), clean music it
  chose to share; they and library songs train under the tags the tagger hears in them
  (`heard_tags`);
- the operator's library (`library_share`, 30%; bot/core/library.py): songs drawn by what
  the guild's reward model (model/reward_model.py, fitted here on the rated tracks and
  uploads) predicts the community would think of them: the best `guide_top` share,
  softmax-weighted with temperature `guide_temp`;
- corpus replay (the rest, when `replay_clips` > 0: off for imported checkpoints unless
  the operator asks): clean starter-corpus clips (model/corpus_pool.py), every clip alike
  by default; with `corpus_guided`, drawn like the library's. It is the replay term against
  forgetting. Why even by default: judged by the simulated communities' own ears, the
  guided draw made every candidate worse (default community, full size: -0.06 to -0.24
  stars a round against -0.08 to +0.02 even; the singing community's last quick round:
  -0.20 against +0.12; at full size even, two of its five candidates were better and one
  was promoted, none guided; bench/bench_round_variants.py, docs/results/
  even-replay-full-judged/, outside-style-even-replay-full/). A reward model that
  predicts nothing (held-out r below `guide_min_corr`) leaves both replays even;
- the best-rated generated tracks (`track_share`, 0 by default), reward-weighted. Measured
  from the shipped base (one round, 48 paired clips): training on them cost -0.19 stars
  alone, and a third of the batch cut guided replay's +0.46 to +0.05: the model's own
  output carries its artifacts, and training on it amplifies them.

Within a group a window is drawn with probability proportional to its weight (drawing,
rather than weighting the loss, keeps the gradient's variance low when a few items carry
most of the weight). A group that is empty gives its share to the others.

Optional (`dpo_weight` > 0, off by default: at 0.5 it cost -0.41 stars against -0.19 without
in the measurement above): Diffusion-DPO (Wallace et al. 2023) on pairs where one member
rated two tracks far apart; the model is pushed to denoise the preferred window better, and
the rejected one worse, than the frozen parent does.

The loop is the shared training core (model/training.py, also pretraining's): fine-tuning
only draws its batches differently, keeps a constant LR and a short EMA, and adds the DPO
term when it is on. It runs on the GPU when there is one, else on the CPU.

Progress goes to stdout as JSON lines (the events of model/contracts.py); the candidate is
written to a temporary folder and renamed into place only when training finished, so a
killed child leaves nothing behind.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.contracts import (
    ChildEvent,
    DataEvent,
    ErrorEvent,
    FinetuneSpec,
    Guide,
    ItemKind,
    OnEvent,
    RatedFile,
    StepEvent,
    TrainItem,
    TrainResult,
    exit_with_parent,
)
from model.corpus_pool import CorpusPool, load_pool, pool_corpus
from model.files import atomic_dir
from model.lora import AdapterConfig, add_adapter, is_adapter, load_adapter_state, save_adapter
from model.pipeline import CrowdtunePipeline
from model.reward_model import Heard, Listener, RewardModel
from model.training import (
    Batch,
    ExtraLoss,
    FitConfig,
    autocast,
    denoise_target,
    drop_tags,
    fit,
)

log = logging.getLogger(__name__)


def print_event(event: ChildEvent) -> None:
    """The child's report: one JSON line on stdout, which the parent reads as it comes."""
    print(event.to_json(), flush=True)


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    from pydub import AudioSegment

    seg = AudioSegment.from_file(path).set_channels(1).set_frame_rate(sample_rate)
    scale = float(1 << (8 * seg.sample_width - 1))
    return np.array(seg.get_array_of_samples(), dtype=np.float32) / scale


def item_images(pipe: CrowdtunePipeline, items: list[TrainItem], per_item: int
                ) -> tuple[torch.Tensor, torch.Tensor, list[ItemKind], dict[str, list[int]],
                           list[dict[str, str]]]:
    """Mel windows of every item, each window carrying its item's weight / window count, its
    item's kind and its item's tags (a track's; none for uploads)."""
    sr = pipe.mel.config.sample_rate
    images, weights, kinds, index, count, tags = [], [], [], {}, 0, []
    for it in items:
        if it.mel:  # the model's own output, exactly as generated
            wins = torch.from_numpy(np.load(it.mel).astype(np.float32))[:per_item]
        elif Path(it.path).is_file():  # uploads (and tracks whose mel is gone): the audio
            wins = pipe.mel.encode_windows(torch.from_numpy(load_audio(it.path, sr)))
            wins = wins[:per_item]
        else:  # deleted since the round read it (a member forgotten, an upload removed)
            log.info("skipping %s: its file is gone", it.key)
            continue
        index[it.key] = list(range(count, count + len(wins)))
        count += len(wins)
        images.append(wins)
        weights += [float(it.weight) / len(wins)] * len(wins)
        kinds += [it.kind] * len(wins)
        tags += [dict(it.tags or {})] * len(wins)
    if not images:
        shape = (0, 1, pipe.mel.config.y_res, pipe.mel.config.x_res)
        return torch.zeros(shape), torch.zeros(0, dtype=torch.float64), [], {}, []
    return torch.cat(images), torch.tensor(weights, dtype=torch.float64), kinds, index, tags


def heard_tags(pipe: CrowdtunePipeline, images: torch.Tensor, kinds: list[ItemKind],
               tags: list[dict[str, str]], listener: Listener) -> list[dict[str, str]]:
    """Uploads' and library songs' windows come without tags: give them the tags the tagger
    hears. Why: under "any" alone only the unconditional branch learns them, and guidance
    (uncond + g (cond - uncond)) then pushes tagged tracks away from them. Measured
    (bench/bench_outside_uploads.py, 16 songs for voices as uploads, 300 steps, the style
    detector's mean P(voices) of tagged clips, base 0.19): untagged 0.17 / 0.13 / 0.10 (LoRA
    10%, LoRA 50%, full 50% uploads), heard tags 0.21 / 0.29 / 0.29."""
    if not pipe.accepts_tags or listener.codec.config != pipe.mel.config:
        return tags
    from model.tagger import predict

    todo = [i for i, (k, t) in enumerate(zip(kinds, tags, strict=True))
            if k != ItemKind.TRACK and not t]
    if not todo:
        return tags
    out = list(tags)
    for i, heard in zip(todo, predict(listener.tagger, images[todo]), strict=True):
        out[i] = pipe.known_tags(heard)
    return out


def heard_uploads(items: list[TrainItem], index: dict[str, list[int]],
                  tags: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per upload whose windows were heard: per field, the value most of its windows got."""
    out = {}
    for it in items:
        wins = [tags[i] for i in index.get(it.key, ())]
        if it.kind == ItemKind.UPLOAD and wins and all(wins):
            out[it.key] = {f: Counter(w[f] for w in wins if f in w).most_common(1)[0][0]
                           for f in wins[0]}
    return out


def draw_probs(groups: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """Mix (share, weights) groups over one index space (each group's weights are zero
    outside it): each group gets its share, spread by its weights. Empty groups give their
    share to the others; if every non-empty group has share 0, they split evenly."""
    live = [(share, w.double()) for share, w in groups if float(w.sum()) > 0]
    total = sum(share for share, _ in live)
    shares = [share / total if total > 0 else 1.0 / len(live) for share, _ in live]
    return sum(g * w / w.sum() for g, (_, w) in zip(shares, live, strict=True))


def load_listener(tagger_dir: str | None) -> Listener:
    """The reward model's ears: the guild's tagger (the shipped one when none is named)."""
    from model.tagger import SHIPPED_TAGGER, Tagger

    folder = Path(tagger_dir) if tagger_dir else SHIPPED_TAGGER
    if not (folder / "tagger_config.json").is_file():
        log.warning("no tagger at %s: the reward model hears through the shipped one", folder)
        folder = SHIPPED_TAGGER
    return Listener(Tagger.load(folder))


def reward_rows(rated: list[RatedFile], listener: Listener
                ) -> tuple[Heard, np.ndarray, list[int]]:
    """What the reward model reads of every rated file's 5-s windows, their rewards, and a
    file id each (files deleted since the round read them are skipped)."""
    sr = listener.codec.config.sample_rate
    parts, ys, groups = [], [], []
    for g, r in enumerate(rated):
        if not Path(r.path).is_file():
            continue
        heard = listener.audio(load_audio(r.path, sr))
        parts.append(heard)
        ys += [float(r.reward)] * len(heard)
        groups += [g] * len(heard)
    return Heard.concat(parts), np.array(ys), groups


def fit_reward_model(rated: list[RatedFile], listener: Listener, inputs: str
                     ) -> RewardModel | None:
    """The guild's reward model; None with fewer than 4 rated files to learn from."""
    heard, y, groups = reward_rows(rated, listener)
    if len(set(groups)) < 4:
        return None
    return RewardModel.fit(heard, y, inputs=inputs, groups=groups)


def fit_guide(rated: list[RatedFile], spec: FinetuneSpec, listener: Listener
              ) -> tuple[RewardModel | None, Guide]:
    """The guild's reward model (saved for evaluation) and whether it is trusted to guide."""
    model = fit_reward_model(rated, listener, spec.reward_inputs)
    if model is None:
        return None, Guide(guided=False)
    if spec.reward_model_out:  # evaluation judges the candidate with the same model
        model.save(Path(spec.reward_model_out))
    return model, Guide(guided=model.corr >= spec.guide_min_corr,
                        reward_model_corr=round(model.corr, 3))


def guided_weights(pred: np.ndarray, spec: FinetuneSpec) -> torch.Tensor:
    """Draw weights from predicted rewards: the best `guide_top` share, softmax-weighted
    with temperature `guide_temp`; the rest 0."""
    keep = np.argsort(-pred)[: max(1, round(len(pred) * spec.guide_top))]
    w = np.zeros(len(pred))
    w[keep] = np.exp((pred[keep] - pred[keep].max()) / spec.guide_temp)
    return torch.from_numpy(w / w.sum())


def replay_probs(pool: CorpusPool, model: RewardModel | None, spec: FinetuneSpec,
                 listener: Listener) -> torch.Tensor:
    """How likely each pool clip is to be rehearsed: guided by the reward model when there
    is a trusted one, uniform otherwise."""
    if model is None:
        return torch.full((len(pool.images),), 1.0 / len(pool.images), dtype=torch.float64)
    return guided_weights(model.predict(pool.heard(listener)), spec)


def library_weights(items: list[TrainItem], kinds: list[ItemKind], index: dict[str, list[int]],
                    model: RewardModel | None, spec: FinetuneSpec, listener: Listener
                    ) -> torch.Tensor:
    """Draw weights of the library songs' windows: by the reward model's prediction of each
    song (its windows share it) when it is trusted, else even."""
    w = torch.zeros(len(kinds), dtype=torch.float64)
    songs = [it for it in items if it.kind == ItemKind.LIBRARY and it.key in index]
    if not songs:
        return w
    if model is None:
        per_song = torch.ones(len(songs), dtype=torch.float64)
    else:
        sr = listener.codec.config.sample_rate
        pred = np.array([model.predict(listener.audio(load_audio(it.path, sr),
                                                      spec.windows_per_item)).mean()
                         for it in songs])
        per_song = guided_weights(pred, spec)
    for it, p in zip(songs, per_song.tolist(), strict=True):
        w[index[it.key]] = p / len(index[it.key])
    return w


def dpo_loss(unet, ref_unet, scheduler, x_w: torch.Tensor, x_l: torch.Tensor, beta: float,
             gen: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Diffusion-DPO: same noise and timestep for the preferred and the rejected window
    (drawn on the CPU from `gen`, then moved to the windows' device). `labels`: the
    windows' tag labels, preferred ones then rejected ones, for a tag-conditioned unet."""
    n = len(x_w)
    noise = torch.randn(x_w.shape, generator=gen).to(x_w.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen)
    t = t.to(x_w.device)
    x = torch.cat([scheduler.add_noise(x_w, noise, t), scheduler.add_noise(x_l, noise, t)])
    tt = torch.cat([t, t])
    target = torch.cat([denoise_target(scheduler, x_w, noise, t),
                        denoise_target(scheduler, x_l, noise, t)])
    with autocast(x.device):
        err = (unet(x, tt, class_labels=labels).sample.float() - target).pow(2)
        err = err.mean(dim=(1, 2, 3))
        with torch.no_grad():
            ref_err = (ref_unet(x, tt, class_labels=labels).sample.float() - target).pow(2)
            ref_err = ref_err.mean(dim=(1, 2, 3))
    model_diff = err[:n] - err[n:]
    ref_diff = ref_err[:n] - ref_err[n:]
    return -F.logsigmoid(-0.5 * beta * (model_diff - ref_diff)).mean()


def dpo_term(ref_unet: torch.nn.Module, scheduler, latents: torch.Tensor,
             pairs: list[tuple[list[int], list[int]]], spec: FinetuneSpec,
             labels: torch.Tensor | None = None) -> ExtraLoss:
    """The DPO loss as the training core's extra term: a few pairs a step, one random window
    of each member, against the frozen parent `ref_unet`; each window under its own tags."""
    n_pairs = max(2, spec.batch_size // 4)

    def term(unet: torch.nn.Module, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        ref_unet.to(device)
        pick = torch.randint(len(pairs), (n_pairs,), generator=gen)
        chosen = [pairs[i] for i in pick.tolist()]
        w_idx = [w[int(torch.randint(len(w), (1,), generator=gen))] for w, _ in chosen]
        l_idx = [lo[int(torch.randint(len(lo), (1,), generator=gen))] for _, lo in chosen]
        x_w, x_l = latents[w_idx].to(device), latents[l_idx].to(device)
        lab = None if labels is None else labels[w_idx + l_idx].to(device)
        return spec.dpo_weight * dpo_loss(unet, ref_unet, scheduler, x_w, x_l, spec.dpo_beta,
                                          gen, lab)

    return term


def load_for_training(spec: FinetuneSpec
                      ) -> tuple[CrowdtunePipeline, AdapterConfig | None,
                                 list[torch.nn.Parameter] | None]:
    """The parent to train: whole (full fine-tuning), or, with `lora_rank` > 0, its base
    version with a LoRA adapter to train (the parent's own adapter when it is one, so a
    lineage keeps one adapter over one base; its rank then wins)."""
    parent = Path(spec.parent_dir)
    if spec.lora_rank <= 0:
        return CrowdtunePipeline.from_pretrained(parent), None, None
    state = None
    if is_adapter(parent):
        cfg = AdapterConfig.load(parent)
        state = load_adapter_state(parent)
    else:
        cfg = AdapterConfig(rank=spec.lora_rank, alpha=spec.lora_alpha, base=parent.name)
    pipe = CrowdtunePipeline.from_pretrained(parent.parent / cfg.base)
    return pipe, cfg, add_adapter(pipe.unet, cfg, state)


def fit_config(spec: FinetuneSpec) -> FitConfig:
    """Fine-tuning's settings of the training core: constant LR, and a short EMA
    (decay min(ema_decay, (1 + s) / (10 + s))) that smooths the last few dozen steps."""
    return FitConfig(steps=spec.steps, lr=spec.lr, warmup=None, ema_decay=spec.ema_decay,
                     ema_warmup=False, seed=spec.seed)


def finetune(spec: FinetuneSpec, report: OnEvent = print_event) -> TrainResult:
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    start = time.perf_counter()
    pipe, adapter, trainable = load_for_training(spec)
    images, weights, kinds, index, tags = item_images(pipe, spec.items, spec.windows_per_item)
    listener = load_listener(spec.tagger_dir)
    if spec.hear_tags:
        tags = heard_tags(pipe, images, kinds, tags, listener)
    heard = heard_uploads(spec.items, index, tags)
    model, guide = fit_guide(spec.rated, spec, listener)
    trusted = model if guide.guided else None
    replay = None
    with torch.no_grad():
        latents = pipe.images_to_latents(images)
        if spec.replay_clips > 0 and pipe.vqvae is None:
            pool = load_pool(spec.replay_clips, spec.replay_seed, pipe.mel.config,
                             Path(spec.pool_cache) if spec.pool_cache else None,
                             pool_corpus(Path(spec.parent_dir)))
            replay = pipe.images_to_latents(pool.images)
            replay_p = replay_probs(pool, trusted if spec.corpus_guided else None, spec,
                                    listener)
            tags += pool.tags
    pairs = [(index[p.preferred], index[p.rejected]) for p in spec.pairs
             if p.preferred in index and p.rejected in index]
    use_dpo = spec.dpo_weight > 0 and len(pairs) >= spec.dpo_min_pairs
    # One index space: the items' windows, then the replay clips.
    n_replay = 0 if replay is None else len(replay)
    pool_latents = latents if replay is None else torch.cat([latents, replay.to(latents.dtype)])
    pad = torch.zeros(n_replay, dtype=torch.float64)
    item_w = torch.cat([weights, pad])
    kind = np.array([k.value for k in kinds] + [""] * n_replay)
    library_w = library_weights(spec.items, kinds, index, trusted, spec, listener)
    groups = [(spec.track_share, torch.where(torch.from_numpy(kind == "track"), item_w, 0.0)),
              (spec.upload_share, torch.where(torch.from_numpy(kind == "upload"), item_w, 0.0)),
              (spec.library_share, torch.cat([library_w, pad]))]
    if replay is not None:
        groups.append((max(0.0, 1.0 - spec.track_share - spec.upload_share - spec.library_share),
                       torch.cat([torch.zeros(len(latents), dtype=torch.float64), replay_p])))
    probs = draw_probs(groups)
    data = DataEvent(windows=len(latents), pairs=len(pairs), replay=n_replay, dpo=use_dpo,
                     **asdict(guide))
    report(data)

    labels = null = None
    if pipe.accepts_tags:  # windows are learnt under their own tags, with tag dropout
        labels = torch.cat([pipe.tag_labels(t, 1).cpu() for t in tags]) if tags else None
        null = pipe.tag_labels(None, 1).cpu()

    def draw_batch(gen: torch.Generator) -> Batch:
        idx = torch.multinomial(probs, spec.batch_size, replacement=True, generator=gen)
        lab = None if labels is None else drop_tags(labels[idx], null, gen,
                                                    spec.tag_dropout_field, spec.tag_dropout_all)
        return pool_latents[idx], None, lab

    recent: list[float] = []

    def on_step(step: int, steps: int, loss: float) -> None:
        recent.append(loss)
        del recent[:-10]
        if step % 10 == 0 or step == steps:
            report(StepEvent(step=step, steps=steps, loss=round(float(np.mean(recent)), 4)))

    extra = None
    if use_dpo:
        ref_unet = copy.deepcopy(pipe.unet).eval().requires_grad_(False)
        extra = dpo_term(ref_unet, pipe.scheduler, latents, pairs, spec,
                         None if labels is None else labels[:len(latents)])
    losses = fit(pipe.unet, pipe.scheduler, draw_batch, fit_config(spec), extra, on_step,
                 trainable)
    with atomic_dir(Path(spec.out_dir)) as tmp:  # a killed child leaves no candidate
        if adapter is None:
            pipe.save_pretrained(tmp)  # fit leaves the EMA weights on the CPU
        else:
            save_adapter(pipe.unet, adapter, tmp)
    result = TrainResult(**asdict(data), final_loss=round(float(np.mean(losses[-10:])), 4),
                         seconds=round(time.perf_counter() - start, 1), heard=heard)
    report(result)
    return result


def main() -> None:
    exit_with_parent()
    logging.basicConfig(level=logging.WARNING)
    spec = FinetuneSpec.load(Path(sys.argv[1]))
    try:
        finetune(spec, report=print_event)
    except Exception as exc:  # noqa: BLE001 - the parent reads one line and marks the round
        print_event(ErrorEvent(f"{type(exc).__name__}: {exc}"))
        sys.exit(1)


if __name__ == "__main__":
    main()
