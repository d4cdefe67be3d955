"""The round report: per-origin mean ratings with confidence intervals, a significance test
of the new model against the baseline, a chart and a short text for the Discord channel.

Track origins: 'generated' (the candidate/new model), 'baseline' (the previous champion or
the base, posted alongside so that each round's gain is measured, not assumed) and
'upload_seeded' (generated from DDIM inversions of members' uploads).

Statistics (the track is the unit: a track's votes share its sound, so treating 18 votes of
one track as 18 independent observations made every p-value far too small; the simulation
once showed p = 3e-5 between two arms of the same model):
- `mean_ci`: mean of the tracks' mean stars with a Student-t interval over tracks. Stars are
  ordinal, but the mean is what the paper reports (+0.20, +0.39 per iteration) and the
  t-interval is the usual, readable error bar for it.
- `compare`: gain = difference of the mean track means, tested with a two-sided Mann-Whitney
  U test on the track means. Stars are ordinal and bounded, so a t-test's normality does not
  hold for a few votes a track; Mann-Whitney only uses the ranks (with the tie correction),
  asking whether a new track tends to be rated above a baseline track.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from bot.core.domain import Origin

log = logging.getLogger(__name__)

GENERATED, BASELINE, UPLOAD_SEEDED = Origin.GENERATED, Origin.BASELINE, Origin.UPLOAD_SEEDED
ORIGINS = (GENERATED, BASELINE, UPLOAD_SEEDED)
# Fixed colours per origin so every week's chart reads the same (colour-blind-safe trio).
COLOURS = {GENERATED: "#0072B2", BASELINE: "#7F7F7F", UPLOAD_SEEDED: "#E69F00"}
LABELS = {GENERATED: "new model", BASELINE: "baseline", UPLOAD_SEEDED: "upload-seeded"}
MAX_SUMMARY_CHARS = 1500  # well under Discord's 2,000-character message limit
# Below this many rated tracks an arm's interval is wider than the scale says anything about
# (two tracks rated 4 and 5 give "4.50 ± 6.35"): the report says so instead of printing it.
MIN_TRACKS_TO_TELL = 5


@dataclass(frozen=True)
class RoundRatings:
    """One round's star ratings by track origin: per origin, one list of stars per track."""

    round: int
    ratings: dict[str, list[list[float]]]

    def origins(self) -> list[str]:
        """Origins with at least one rated track, the known ones first in their fixed order."""
        rated = [o for o, tracks in self.ratings.items() if any(tracks)]
        return [o for o in ORIGINS if o in rated] + sorted(set(rated) - set(ORIGINS))

    def track_means(self, origin: str) -> list[float]:
        return [float(np.mean(v)) for v in self.ratings.get(origin, []) if len(v)]

    def n_votes(self) -> int:
        return sum(len(v) for tracks in self.ratings.values() for v in tracks)

    def n_tracks(self) -> int:
        return sum(1 for tracks in self.ratings.values() for v in tracks if len(v))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a Student-t interval; NaN bounds for n < 2, all NaN for n = 0."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def compare(new: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """(gain in mean stars, two-sided Mann-Whitney U p-value); NaNs if either side is empty."""
    a, b = np.asarray(new, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    gain = float(a.mean() - b.mean())
    if np.unique(np.concatenate([a, b])).size == 1:
        return gain, 1.0  # all votes tied: no evidence either way (the test is undefined)
    return gain, float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def round_stats(r: RoundRatings) -> dict:
    """One entry of `crowdtune simulate --json`'s `rounds` list (NaN becomes null)."""
    new_m, new_lo, new_hi = mean_ci(r.track_means(GENERATED))
    base_m, base_lo, base_hi = mean_ci(r.track_means(BASELINE))
    gain, p = compare(r.track_means(GENERATED), r.track_means(BASELINE))
    return {
        "round": r.round,
        "new_mean": _json_float(new_m),
        "new_ci": [_json_float(new_lo), _json_float(new_hi)],
        "baseline_mean": _json_float(base_m),
        "baseline_ci": [_json_float(base_lo), _json_float(base_hi)],
        "gain_over_baseline": _json_float(gain),
        "p_value": None if math.isnan(p) else float(f"{p:.3g}"),  # tiny p must not round to 0
    }


def rating_chart(rounds: Sequence[RoundRatings], path: str | Path,
                 title: str = "Mean rating per round (95% CI)") -> Path:
    """Write a PNG (800x450 px: readable at Discord embed size) of mean stars per round."""
    path = Path(path)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)  # Agg canvas, no display or pyplot global state needed
    ax = fig.add_subplot()
    seen = {o for r in rounds for o in r.origins()}
    origins = [o for o in ORIGINS if o in seen] + sorted(seen - set(ORIGINS))
    # Small horizontal offsets so overlapping error bars stay apart.
    n = len(origins)
    offsets = np.linspace(-0.08, 0.08, n) if n > 1 else np.zeros(n)
    for origin, dx in zip(origins, offsets, strict=True):
        xs, means, lo_err, hi_err = [], [], [], []
        for r in sorted(rounds, key=lambda r: r.round):
            m, lo, hi = mean_ci(r.track_means(origin))
            if math.isnan(m):
                continue
            xs.append(r.round + dx)
            means.append(m)
            # A t-interval can pass the scale's ends; stars cannot, so draw it clipped.
            lo_err.append(0.0 if math.isnan(lo) else m - max(lo, 1.0))
            hi_err.append(0.0 if math.isnan(hi) else min(hi, 5.0) - m)
        if not xs:
            continue
        ax.errorbar(xs, means, yerr=[lo_err, hi_err], label=LABELS.get(origin, origin),
                    color=COLOURS.get(origin), marker="o", markersize=6, linewidth=2,
                    capsize=4, elinewidth=1.5)
    ax.set_ylim(0.9, 5.1)  # a hair past 1..5 so points and caps at the ends stay visible
    ax.set_yticks([1, 2, 3, 4, 5])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rounds:
        lo_r, hi_r = min(r.round for r in rounds), max(r.round for r in rounds)
        ax.set_xlim(lo_r - 0.5, hi_r + 0.5)
    ax.set_xlabel("round", fontsize=12)
    ax.set_ylabel("mean stars", fontsize=12)
    ax.set_title(title, fontsize=14)
    ax.tick_params(labelsize=11)
    ax.grid(True, alpha=0.3)
    if origins:
        ax.legend(loc="best", fontsize=11, framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    log.debug("wrote rating chart %s (%d rounds)", path, len(rounds))
    return path


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("p<0.001" if p < 0.001 else f"p={p:.3f}")


def _n_tracks(n: int) -> str:
    return f"{n} track" + ("" if n == 1 else "s")


def summary_text(current: RoundRatings, promoted: bool, reason: str,
                 version: str | None = None) -> str:
    """A short multi-line text for the Discord channel (at most MAX_SUMMARY_CHARS).

    `promoted`/`reason` come from the round's promotion decision; `version` is the model
    version that is active after the round.
    """
    lines = [f"**Round {current.round}** - {current.n_votes()} ratings on "
             f"{_n_tracks(current.n_tracks())}"]
    for origin in current.origins():
        means = current.track_means(origin)
        m, lo, hi = mean_ci(means)
        label, n = LABELS.get(origin, origin), _n_tracks(len(means))
        if len(means) < MIN_TRACKS_TO_TELL:
            lines.append(f"{label}: {m:.2f} stars ({n}, too few to tell)")
        else:
            lines.append(f"{label}: {m:.2f} ± {(hi - lo) / 2:.2f} stars ({n})")
    new, base = current.track_means(GENERATED), current.track_means(BASELINE)
    gain, p = compare(new, base)
    if math.isnan(gain):
        lines.append("Gain over baseline: not measured (no ratings on one side)")
    elif min(len(new), len(base)) < MIN_TRACKS_TO_TELL:
        lines.append(f"Gain over baseline: too few rated tracks to tell ({len(new)} and "
                     f"{len(base)}; {MIN_TRACKS_TO_TELL} each are needed)")
    else:
        lines.append(f"Gain over baseline: {gain:+.2f} stars ({_fmt_p(p)}, Mann-Whitney over "
                     "tracks)")
    decision = "promoted" if promoted else "not promoted, keeping the current model"
    if version:
        decision += f" ({version} active)"
    lines.append(f"Model {decision}: {reason.strip()}")
    text = "\n".join(lines)
    if len(text) > MAX_SUMMARY_CHARS:  # only a very long reason gets here
        text = text[: MAX_SUMMARY_CHARS - 1] + "…"
    return text
