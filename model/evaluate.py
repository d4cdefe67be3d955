"""Offline comparison of a candidate and its champion (run as a child process).

    python -m model.evaluate SPEC.json     -> one JSON line with the metrics and a verdict

Both models generate the same number of clips from the same seeds. What can be measured
before the community hears anything:

- predicted reward: the guild's reward model (model/reward_model.py, the same one that
  guides fine-tuning) on both models' clips, made with the same seeds and the same tags (the
  guild's tag policy's draws); its held-out accuracy is reported, a reward model that
  predicts nothing is not trusted, and a trusted one promotes only when the lower bound of
  the predicted gain (gain - promote_z x its standard error) is above zero;
- distance to what the community liked (high-rated tracks and uploads) in feature space;
- diversity (mean pairwise feature distance) relative to the champion's, so a model that
  collapses onto one liked track is not promoted;
- spectral flatness and loudness against the champion's, so drifting toward noise or
  silence is not promoted either.

Clips are generated on the GPU when there is one (the noise still comes from seeded CPU
generators, so both models start from the same noise), else on the CPU.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from model.contracts import ErrorEvent, EvalMetrics, EvalSpec, Verdict, exit_with_parent
from model.features import diversity, extract
from model.finetune import fit_reward_model, load_audio, load_listener, print_event
from model.pipeline import CrowdtunePipeline
from model.reward_model import Heard, RewardModel
from model.tags import GUIDANCE, Tags, uniform


def _generate(model_dir: str, spec: EvalSpec, tags: list[Tags], guidance: list[float]
              ) -> tuple[list[np.ndarray], int]:
    pipe = CrowdtunePipeline.from_pretrained(model_dir).for_generation()
    out = []
    for start in range(0, spec.clips, 8):
        n = min(8, spec.clips - start)
        res = pipe(batch_size=n, num_inference_steps=spec.steps,
                   generator=torch.Generator().manual_seed(spec.seed + start),
                   tags=tags[start:start + n], guidance=guidance[start:start + n])
        out += res.audios
    return out, pipe.mel.config.sample_rate


def _features(audios: list[np.ndarray], sr: int) -> tuple[np.ndarray, list]:
    feats = [extract(a, sr) for a in audios]
    return np.stack([f.vector() for f in feats]), feats


def clip_tags(spec: EvalSpec) -> tuple[list[Tags], list[float]]:
    """The tags of clip i for both models and their guidance: the spec's (the guild's
    policy), else uniform tags at the default guidance."""
    if spec.tags:
        guidance = spec.guidance or [GUIDANCE]
        return ([dict(spec.tags[i % len(spec.tags)]) for i in range(spec.clips)],
                [guidance[i % len(guidance)] for i in range(spec.clips)])
    rng = random.Random(spec.seed)
    return [uniform(rng) for _ in range(spec.clips)], [GUIDANCE] * spec.clips


def evaluate(spec: EvalSpec) -> Verdict:
    torch.set_num_threads(spec.threads)
    tags, guidance = clip_tags(spec)
    champion, sr = _generate(spec.champion_dir, spec, tags, guidance)
    candidate, _ = _generate(spec.candidate_dir, spec, tags, guidance)
    xc, fc = _features(champion, sr)
    xn, fn = _features(candidate, sr)
    mu, sd = xc.mean(0), xc.std(0) + 1e-6  # the champion's spread is the ruler
    zc, zn = (xc - mu) / sd, (xn - mu) / sd

    listener = load_listener(spec.tagger_dir)
    if spec.reward_model and Path(spec.reward_model).is_file():
        model: RewardModel | None = RewardModel.load(Path(spec.reward_model))
    else:
        model = fit_reward_model(spec.rated, listener, spec.reward_inputs)
    reward: dict[str, float] = {}
    if model is not None:
        hc = Heard.concat([listener.audio(a, max_windows=1) for a in champion])
        hn = Heard.concat([listener.audio(a, max_windows=1) for a in candidate])
        _, se = model.gain_bound(hc, hn, spec.promote_z)
        reward = {"reward_model_corr": model.corr,
                  "pred_reward_champion": float(model.predict(hc).mean()),
                  "pred_reward_candidate": float(model.predict(hn).mean()),
                  "pred_gain_se": se}
    liked: dict[str, float] = {}
    if spec.liked:
        xl, _ = _features([load_audio(p, sr)[: sr * 20] for p in spec.liked], sr)
        centre = ((xl - mu) / sd).mean(0)
        liked = {"liked_dist_champion": float(np.linalg.norm(zc - centre, axis=1).mean()),
                 "liked_dist_candidate": float(np.linalg.norm(zn - centre, axis=1).mean())}
    m = EvalMetrics(
        clips=spec.clips,
        diversity_ratio=diversity(zn) / max(diversity(zc), 1e-9),
        flatness_champion=float(np.median([f.flatness for f in fc])),
        flatness_candidate=float(np.median([f.flatness for f in fn])),
        loudness_champion=float(np.median([f.loudness_db for f in fc])),
        loudness_candidate=float(np.median([f.loudness_db for f in fn])),
        **reward, **liked)
    return verdict(m, spec)


def verdict(m: EvalMetrics, spec: EvalSpec) -> Verdict:
    """Promote when the candidate is better by a trusted measure and breaks no guard."""
    def keep(reason: str) -> Verdict:
        return Verdict(promote=False, reason=reason, metrics=m)

    if m.diversity_ratio < spec.min_diversity:
        return keep(f"diversity fell to {m.diversity_ratio:.0%} of the champion's")
    if m.flatness_candidate > spec.max_flatness_ratio * m.flatness_champion + 0.01:
        return keep("output drifted toward noise (spectral flatness "
                    f"{m.flatness_candidate:.3f} vs {m.flatness_champion:.3f})")
    if m.loudness_candidate < m.loudness_champion - spec.max_loudness_drop_db:
        return keep("output drifted toward silence (loudness "
                    f"{m.loudness_candidate:.1f} vs {m.loudness_champion:.1f} dBFS)")
    if (m.reward_model_corr is not None and m.reward_model_corr >= spec.min_reward_corr
            and m.pred_reward_candidate is not None and m.pred_reward_champion is not None):
        gain = m.pred_reward_candidate - m.pred_reward_champion
        low = gain - spec.promote_z * (m.pred_gain_se or 0.0)
        return Verdict(promote=low > 0, metrics=m, reason=f"predicted reward {gain:+.3f}, "
                       f"lower bound {low:+.3f} (reward model held-out "
                       f"r={m.reward_model_corr:.2f})")
    if m.liked_dist_candidate is not None and m.liked_dist_champion is not None:
        closer = m.liked_dist_champion - m.liked_dist_candidate
        return Verdict(promote=closer > 0, metrics=m, reason=f"distance to liked music "
                       f"{-closer:+.3f} (reward model not trusted)")
    return keep("nothing to measure the candidate by")


def main() -> None:
    exit_with_parent()
    spec = EvalSpec.load(Path(sys.argv[1]))
    try:
        print_event(evaluate(spec))
    except Exception as exc:  # noqa: BLE001 - the parent reads one line
        print_event(ErrorEvent(f"{type(exc).__name__}: {exc}"))
        sys.exit(1)


if __name__ == "__main__":
    main()
