"""Round report: statistics by hand, the chart as a real PNG, the Discord summary."""

import math
import struct

import matplotlib.image
import numpy as np
import pytest

from bot.core.report import (
    MAX_SUMMARY_CHARS,
    RoundRatings,
    compare,
    mean_ci,
    rating_chart,
    round_stats,
    summary_text,
)


def test_mean_ci_by_hand():
    # [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.7764451
    m, lo, hi = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert m == 3.0
    assert lo == pytest.approx(3 - half, abs=1e-6) and hi == pytest.approx(3 + half, abs=1e-6)
    # Two values: t(0.975, 1) = 12.7062047
    m, lo, hi = mean_ci([2, 4])
    assert (m, lo, hi) == pytest.approx((3.0, 3 - 12.7062047, 3 + 12.7062047), abs=1e-6)
    assert mean_ci([4, 4, 4]) == (4.0, 4.0, 4.0)


def test_mean_ci_small_samples():
    m, lo, hi = mean_ci([4])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in mean_ci([]))


def test_compare_clearly_different_and_identical():
    new = [5, 4, 5, 4, 5, 5, 4, 5, 4, 5, 4, 5]
    old = [2, 1, 2, 3, 1, 2, 2, 1, 3, 2, 1, 2]
    gain, p = compare(new, old)
    assert gain == pytest.approx(np.mean(new) - np.mean(old))
    assert p < 0.001
    gain, p = compare(old, new)  # two-sided: the same p, the opposite gain
    assert gain < 0 and p < 0.001
    same = [1, 2, 3, 4, 5, 3, 4]
    assert compare(same, list(same)) == (0.0, pytest.approx(1.0))
    assert compare([3, 3, 3], [3, 3]) == (0.0, 1.0)
    gain, p = compare([], [3, 4])
    assert math.isnan(gain) and math.isnan(p)


def _tracks(*stars: list[float]) -> list[list[float]]:
    return [list(v) for v in stars]


def _rounds() -> list[RoundRatings]:
    rng = np.random.default_rng(0)
    out = []
    for r in range(1, 5):
        def tracks(mu: float, n: int, votes: int = 4) -> list[list[float]]:
            return [np.clip(np.rint(rng.normal(mu, 1.0, votes)), 1, 5).tolist()
                    for _ in range(n)]
        ratings = {"generated": tracks(2.6 + 0.3 * r, 10), "baseline": tracks(2.6, 6),
                   "upload_seeded": tracks(3.5, 1 if r == 1 else 3)}
        out.append(RoundRatings(r, ratings))
    return out


def test_chart_is_a_png_of_discord_embed_size(tmp_path):
    path = rating_chart(_rounds(), tmp_path / "sub" / "chart.png")
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])  # IHDR
    assert (width, height) == (800, 450)
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (450, 800)
    assert img[..., :3].std() > 0.05  # something was drawn


def test_chart_copes_with_missing_origins_and_empty_rounds(tmp_path):
    rounds = [RoundRatings(1, {"generated": [[3.0]]}),
              RoundRatings(2, {"generated": [], "baseline": [[2, 3], []]})]
    assert rating_chart(rounds, tmp_path / "a.png").stat().st_size > 1000
    assert rating_chart([], tmp_path / "b.png").stat().st_size > 1000


def test_statistics_take_the_track_as_the_unit():
    """Twenty votes of one track are one observation of its sound, not twenty: five tracks a
    side, rated alike, with 20 votes each, show no significant gain."""
    r = RoundRatings(1, {"generated": _tracks(*[[4] * 20, [3] * 20] * 2, [4] * 20),
                         "baseline": _tracks(*[[3] * 20, [4] * 20] * 2, [3] * 20)})
    assert r.track_means("generated") == [4.0, 3.0, 4.0, 3.0, 4.0]
    assert (r.n_votes(), r.n_tracks()) == (200, 10)
    s = round_stats(r)
    assert s["gain_over_baseline"] == pytest.approx(0.2)
    assert s["p_value"] > 0.3  # per vote (100 against 100) it would be p < 0.01
    votes = [x for v in r.ratings["generated"] for x in v]
    assert compare(votes, [x for v in r.ratings["baseline"] for x in v])[1] < 0.01
    # The interval is over the five track means, not the 100 votes.
    m, lo, hi = mean_ci([4.0, 3.0, 4.0, 3.0, 4.0])
    assert s["new_ci"] == [pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4)]


def test_summary_text_content():
    r = RoundRatings(3, {"generated": _tracks([5, 4], [5, 4, 5], [5], [4, 5], [4, 4, 5]),
                         "baseline": _tracks([2, 3], [2], [1, 2], [3, 3], [2, 1, 2]),
                         "upload_seeded": _tracks([4])})
    text = summary_text(r, promoted=True, reason="gain significant at p < 0.05", version="v0004")
    lines = text.splitlines()
    assert "Round 3" in lines[0] and "22 ratings on 11 tracks" in lines[0]
    m, lo, hi = mean_ci(r.track_means("generated"))
    assert f"new model: {m:.2f} ± {(hi - lo) / 2:.2f} stars (5 tracks)" in text
    assert "baseline: 2.13 ±" in text
    assert "upload-seeded: 4.00 stars (1 track, too few to tell)" in text  # no interval
    gain, p = compare(r.track_means("generated"), r.track_means("baseline"))
    assert f"Gain over baseline: {gain:+.2f} stars (p={p:.3f}, Mann-Whitney over tracks)" in text
    assert "promoted (v0004 active): gain significant" in lines[-1]
    assert len(text) < MAX_SUMMARY_CHARS

    kept = summary_text(RoundRatings(4, {"generated": _tracks([3, 3])}), promoted=False,
                        reason="no baseline ratings")
    assert "not measured" in kept and "not promoted" in kept
    long = summary_text(r, promoted=False, reason="x" * 5000)
    assert len(long) <= MAX_SUMMARY_CHARS


def test_summary_says_too_few_tracks_instead_of_an_interval_wider_than_the_scale():
    two = summary_text(RoundRatings(2, {"generated": _tracks([4, 4, 4], [5, 5]),
                                        "baseline": _tracks(*[[3], [2]] * 3)}),
                       promoted=False, reason="kept")
    assert "new model: 4.50 stars (2 tracks, too few to tell)" in two
    assert "±" not in two.splitlines()[1]  # not "4.50 ± 6.35"
    assert "Gain over baseline: too few rated tracks to tell (2 and 6" in two
    assert "baseline: 2.50 ±" in two  # six tracks: the interval is shown


def test_round_stats_matches_the_json_contract():
    s = round_stats(_rounds()[2])
    assert set(s) == {"round", "new_mean", "new_ci", "baseline_mean", "baseline_ci",
                      "gain_over_baseline", "p_value"}
    assert s["round"] == 3 and s["new_ci"][0] < s["new_mean"] < s["new_ci"][1]
    assert s["gain_over_baseline"] == pytest.approx(s["new_mean"] - s["baseline_mean"],
                                                    abs=1e-3)
    empty = round_stats(RoundRatings(1, {"generated": [[4, 5]]}))
    assert empty["new_ci"] == [None, None] and empty["p_value"] is None
