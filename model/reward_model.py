"""The reward model: a guild's reward predicted from what a clip sounds like.

Ridge regression on standardised audio features, fitted to the rewards of the guild's rated
tracks (uploads join as positives). Two users:

- fine-tuning (guided replay): it scores the clean starter-corpus clips, and the model
  rehearses the ones the community would like most;
- evaluation: the predicted reward of a candidate's output against its champion's.

Choices, measured on 96 rated base-model tracks, predicting the community's true score of
512 corpus clips (tools in the session notes):
- chroma is left out: 12 key-specific dimensions with ~100 tracks mostly fit noise
  (transfer r 0.42 -> 0.46);
- a strong ridge penalty (alpha 30 on standardised features) transfers from generated audio
  to clean corpus audio far better than a weak one (r 0.36 at alpha 1, 0.57-0.69 at 30-100);
- uploads as positives anchor the model on clean music (r 0.57 -> 0.69 at alpha 30).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from model.features import AudioFeatures, extract

WINDOW_S = 5.0


def reward_vector(f: AudioFeatures) -> np.ndarray:
    """The features the reward model reads: everything but chroma (the chroma field emptied,
    so the vector keeps the other fields' scaling and order whatever their positions)."""
    return replace(f, chroma=()).vector()


def window_vectors(audio: np.ndarray, sr: int, max_windows: int = 4) -> np.ndarray:
    """reward_vector of each 5-s window (at most `max_windows`; a short clip is one window):
    the same unit as the corpus clips and the evaluation clips."""
    n = int(WINDOW_S * sr)
    count = max(1, min(max_windows, len(audio) // n))
    return np.stack([reward_vector(extract(audio[i * n:(i + 1) * n], sr)) for i in range(count)])


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    xb = np.hstack([x, np.ones((len(x), 1))])
    reg = alpha * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the intercept
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


@dataclass
class RewardModel:
    mu: np.ndarray
    sd: np.ndarray
    w: np.ndarray
    corr: float  # k-fold held-out correlation between prediction and reward
    lo: float = -np.inf  # the rewards seen: predictions are clipped to them, since a linear
    hi: float = np.inf  # model extrapolates without bound on audio unlike its training data

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float = 30.0, folds: int = 5,
            groups: Sequence[int] | None = None) -> RewardModel:
        """Fit on rows `x` (reward vectors) and rewards `y`. `groups` (e.g. one id per track)
        keeps a track's windows in one fold, so the held-out score is honest."""
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z = (x - mu) / sd
        return cls(mu, sd, _ridge(z, y, alpha), _held_out_corr(z, y, alpha, folds, groups),
                   float(y.min()), float(y.max()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, path: Path) -> RewardModel:
        d = json.loads(Path(path).read_text())
        return cls(np.array(d["mu"]), np.array(d["sd"]), np.array(d["w"]), d["corr"], d["lo"],
                   d["hi"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mu) / self.sd
        return np.clip(np.hstack([z, np.ones((len(z), 1))]) @ self.w, self.lo, self.hi)


def _held_out_corr(z: np.ndarray, y: np.ndarray, alpha: float, folds: int,
                   groups: Sequence[int] | None) -> float:
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    ids = np.unique(g)
    if len(ids) < 2 * folds or np.std(y) == 0:
        return 0.0
    fold_of = dict(zip(np.random.default_rng(0).permutation(ids), np.arange(len(ids)) % folds,
                       strict=True))
    fold = np.array([fold_of[i] for i in g])
    pred = np.zeros(len(y))
    for k in range(folds):
        test = fold == k
        w = _ridge(z[~test], y[~test], alpha)
        pred[test] = np.hstack([z[test], np.ones((int(test.sum()), 1))]) @ w
    return float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 else 0.0
