"""Rewards: hand-computed cases for every step of the formula in bot/core/rewards.py."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from bot.core.rewards import (
    Listen,
    PreferencePair,
    RewardSettings,
    Vote,
    listen_value,
    normalised_stars,
    preference_pairs,
    track_rewards,
    training_weights,
    upload_reward,
)

H, GEN, M, N = 1, 2, 3, 4  # member ids: harsh, generous, others


def rewards_of(votes: list[Vote], listens: Sequence[Listen] = (), **settings: float) -> dict:
    return {
        t: r.reward for t, r in track_rewards(votes, listens, RewardSettings(**settings)).items()
    }


# --- star normalisation ----------------------------------------------------------------


def test_harsh_and_generous_rater_alone_give_identical_rewards() -> None:
    # One member, so global stats = member stats. Harsh 1,2,3: mean 2, var (1+0+1)/3 = 2/3,
    # shrunk mu = (3*2 + 3*2)/6 = 2, var = (3*2/3 + 3*2/3)/6 = 2/3, sd = sqrt(2/3) = 0.816497.
    # z = -1/sd, 0, 1/sd = -1.224745, 0, 1.224745; S = z / (1 + 2) = -0.408248, 0, 0.408248.
    harsh = rewards_of([Vote(1, H, 1), Vote(2, H, 2), Vote(3, H, 3)])
    generous = rewards_of([Vote(1, GEN, 3), Vote(2, GEN, 4), Vote(3, GEN, 5)])
    assert harsh == pytest.approx({1: -0.408248, 2: 0.0, 3: 0.408248}, abs=1e-6)
    assert generous == pytest.approx(harsh, abs=1e-12)


def test_harsh_and_generous_rater_together_agree_on_order() -> None:
    # stars 1,2,3 (H) and 3,4,5 (GEN): global mean 3, var (4+1+0+0+1+4)/6 = 5/3.
    # H: mu = (3*2 + 3*3)/6 = 2.5, var = (3*2/3 + 3*5/3)/6 = 7/6, sd = 1.080123
    # GEN: mu = (3*4 + 3*3)/6 = 3.5, same sd.
    # z_H = -1.5, -0.5, 0.5 (/sd); z_GEN = -0.5, 0.5, 1.5 (/sd)
    votes = [Vote(t, H, s) for t, s in ((1, 1), (2, 2), (3, 3))]
    votes += [Vote(t, GEN, s) for t, s in ((1, 3), (2, 4), (3, 5))]
    sd = math.sqrt(7 / 6)
    z = normalised_stars(votes)
    assert z[(1, H)] == pytest.approx(-1.5 / sd)  # -1.388730
    assert z[(1, GEN)] == pytest.approx(-0.5 / sd)  # -0.462910
    assert z[(3, GEN)] == pytest.approx(1.5 / sd)
    # S_1 = (-1.5 - 0.5)/sd / (2 + 2) = -0.5/sd = -0.462910; S_2 = 0; S_3 = +0.462910
    r = track_rewards(votes)
    assert r[1].star_score == pytest.approx(-0.462910, abs=1e-6)
    assert r[2].star_score == pytest.approx(0.0, abs=1e-12)
    assert r[3].reward == pytest.approx(0.462910, abs=1e-6)
    assert (r[1].n_votes, r[1].mean_stars, r[3].mean_stars) == (2, 2.0, 4.0)


def test_normalisation_beats_raw_mean() -> None:
    # Raw mean says A (H's 3) == B (GEN's 3); but 3 is H's best and GEN's worst.
    # stars 3,1 (H), 3,5 (GEN): global mean 3, var (0+4+0+4)/4 = 2.
    # H: mean 2, var 1 -> mu = (2*2 + 3*3)/5 = 2.6, var = (2*1 + 3*2)/5 = 1.6
    # GEN: mean 4 -> mu = (2*4 + 9)/5 = 3.4, var 1.6; sd = sqrt(1.6) = 1.264911
    # z(A) = 0.4/sd = 0.316228 -> S_A = 0.316228/3 = 0.105409; S_B = -0.105409
    # z(C) = -1.6/sd = -1.264911 -> S_C = -0.421637; S_D = +0.421637
    votes = [Vote("A", H, 3), Vote("C", H, 1), Vote("B", GEN, 3), Vote("D", GEN, 5)]
    r = track_rewards(votes)
    assert r["A"].mean_stars == r["B"].mean_stars == 3.0
    assert {t: x.reward for t, x in r.items()} == pytest.approx(
        {"A": 0.105409, "B": -0.105409, "C": -0.421637, "D": 0.421637}, abs=1e-6
    )


def test_single_vote_member_is_shrunk_not_blown_up() -> None:
    # M: 1, 5; N: a single 5. Global stars 1,5,5: mean 11/3, var (64+16+16)/9/3 = 32/9.
    # N: mu = (1*5 + 3*11/3)/4 = 4, var = (0 + 3*32/9)/4 = 8/3, sd = 1.632993
    # z_N = (5 - 4)/1.632993 = 0.612372 (raw own stats would give 0/0)
    z = normalised_stars([Vote(1, M, 1), Vote(2, M, 5), Vote(1, N, 5)])
    assert z[(1, N)] == pytest.approx(0.612372, abs=1e-6)


def test_zero_variance_uses_sd_floor() -> None:
    # Everyone gives 4: global and member variance 0 -> sd = floor 0.5, mean 4 -> z = 0.
    votes = [Vote(1, M, 4), Vote(2, M, 4), Vote(1, N, 4)]
    assert set(normalised_stars(votes).values()) == {0.0}
    # Without the member prior, N's lone 5 sits at N's own mean: z = 0, finite.
    z = normalised_stars([Vote(1, M, 1), Vote(1, N, 5)], RewardSettings(member_prior_votes=0))
    assert z == {(1, M): 0.0, (1, N): 0.0}
    # M: 2, 4 with no prior: mean 3, var 1, sd 1 -> z = -1, +1. A tighter floor than sd
    # changes nothing; a floor of 2 caps z at +-0.5.
    votes = [Vote(1, M, 2), Vote(2, M, 4)]
    assert normalised_stars(votes, RewardSettings(member_prior_votes=0))[(2, M)] == 1.0
    z2 = normalised_stars(votes, RewardSettings(member_prior_votes=0, sd_floor=2.0))
    assert z2[(2, M)] == 0.5


# --- few-vote shrinkage ------------------------------------------------------------------


def test_few_votes_are_shrunk_toward_the_mean() -> None:
    # Five members each rate one track 5 and another 1: every member's mean is 3 and var 4,
    # equal to the global ones, so z = +1 / -1 exactly.
    # A: four z=+1 votes -> S = 4/(4 + 2) = 0.666667; C: one z=+1 vote -> 1/(1 + 2) = 0.333333
    votes = [v for m in (11, 12, 13, 14) for v in (Vote("A", m, 5), Vote("B", m, 1))]
    votes += [Vote("C", 15, 5), Vote("D", 15, 1)]
    assert rewards_of(votes) == pytest.approx(
        {"A": 2 / 3, "B": -2 / 3, "C": 1 / 3, "D": -1 / 3}, abs=1e-12
    )
    # No track prior: a single vote counts as much as four (z mean = 1 both).
    assert rewards_of(votes, track_prior_votes=0) == pytest.approx(
        {"A": 1.0, "B": -1.0, "C": 1.0, "D": -1.0}, abs=1e-12
    )


# --- listening -----------------------------------------------------------------------------


def test_listen_value_is_asymmetric() -> None:
    # threshold 0.5, 2.0 below, 0.5 above
    assert listen_value(0.25) == -0.5  # 2.0 * (0.25 - 0.5)
    assert listen_value(0.75) == 0.125  # 0.5 * (0.75 - 0.5): same distance, a quarter
    assert listen_value(0.0) == -1.0
    assert listen_value(1.0) == 0.25
    assert listen_value(0.5) == 0.0
    assert listen_value(1.5) == 0.25  # clipped to 1
    assert listen_value(-0.2) == -1.0  # clipped to 0


def test_listen_scores_count_only_members_present_at_start() -> None:
    listens = [
        # T1: 5 of 20 s -> f 0.25, g -0.5; L = -0.5/(1 + 1) = -0.25; reward 0.5 * L = -0.125
        Listen(1, M, 5.0, 20.0, True),
        # T2: 15 of 20 -> f 0.75, g 0.125; L = 0.0625; reward 0.03125
        Listen(2, M, 15.0, 20.0, True),
        # T3: M stays (g 0.25), N deafens at once (g -1.0), late joiner ignored;
        # L = -0.75/(2 + 1) = -0.25; reward -0.125
        Listen(3, M, 20.0, 20.0, True),
        Listen(3, N, 0.0, 20.0, True),
        Listen(3, H, 20.0, 20.0, False),
        # T4: only a late joiner -> nothing known, reward 0; unknown duration ignored too
        Listen(4, H, 10.0, 20.0, False),
        Listen(4, M, 10.0, 0.0, True),
    ]
    r = track_rewards([], listens)
    assert {t: x.reward for t, x in r.items()} == pytest.approx(
        {1: -0.125, 2: 0.03125, 3: -0.125, 4: 0.0}, abs=1e-12
    )
    assert r[3].listen_score == pytest.approx(-0.25)
    assert [r[t].n_listeners for t in (1, 2, 3, 4)] == [1, 1, 2, 0]
    assert r[4].n_votes == 0 and r[4].mean_stars is None


def test_stars_and_listens_combine() -> None:
    # Star part as in the shrinkage test: S_A = 2/3.
    # Listens on A: 30/30 -> g 0.25; 6/30 = 0.2 -> g 2*(0.2 - 0.5) = -0.6; L = -0.35/(2 + 1)
    # reward = 2/3 + 0.5 * (-0.35/3) = 4/6 - 0.35/6 = 3.65/6 = 0.608333
    votes = [v for m in (11, 12, 13, 14) for v in (Vote("A", m, 5), Vote("B", m, 1))]
    listens = [Listen("A", 11, 30.0, 30.0, True), Listen("A", 12, 6.0, 30.0, True)]
    r = track_rewards(votes, listens)["A"]
    assert r.star_score == pytest.approx(2 / 3)
    assert r.listen_score == pytest.approx(-0.35 / 3)
    assert r.reward == pytest.approx(3.65 / 6)
    assert (r.n_votes, r.n_listeners, r.mean_stars) == (4, 2, 5.0)
    # listen_weight 0: stars only
    assert rewards_of(votes, listens, listen_weight=0)["A"] == pytest.approx(2 / 3)


def test_repeated_records_are_upserts() -> None:
    # the second vote replaces the first; a listen stored twice counts once
    votes = [Vote(1, M, 1), Vote(1, M, 5), Vote(2, M, 1)]
    listens = [Listen(1, M, 5.0, 20.0, True)] * 3
    r = track_rewards(votes, listens)
    assert (r[1].n_votes, r[1].mean_stars, r[1].n_listeners) == (1, 5.0, 1)
    assert r[1].listen_score == pytest.approx(-0.25)  # -0.5 / (1 + 1)


# --- uploads and training weights -------------------------------------------------------


def test_uploads_are_fixed_positives() -> None:
    up = upload_reward(42)
    assert (up.track_id, up.reward, up.is_upload, up.n_votes) == (42, 1.0, True, 0)
    assert upload_reward(42, RewardSettings(upload_reward=2.5)).reward == 2.5
    with pytest.raises(ValueError):
        RewardSettings(upload_reward=0.0)


def test_training_weights_softmax_hand_computed() -> None:
    # exp(0), exp(ln 2), exp(ln 4) = 1, 2, 4 (sum 7); times n = 3 -> 3/7, 6/7, 12/7
    w = training_weights([0.0, math.log(2), math.log(4)])
    assert w == pytest.approx([3 / 7, 6 / 7, 12 / 7])
    # T = 2: 1, sqrt 2, 2 (sum 4.414214) -> 3 * that / sum = 0.679623, 0.961131, 1.359245
    w2 = training_weights([0.0, math.log(2), math.log(4)], RewardSettings(weight_temperature=2))
    assert w2 == pytest.approx([0.679623, 0.961131, 1.359245], abs=1e-6)


def test_training_weights_are_non_negative_and_average_one() -> None:
    rewards = [
        r.reward for r in track_rewards([Vote(1, M, 1), Vote(2, M, 5), Vote(3, N, 2)]).values()
    ] + [upload_reward(9).reward, -3.0]
    w = training_weights(rewards)
    assert np.all(w > 0)
    assert w.mean() == pytest.approx(1.0)
    assert list(np.argsort(w)) == list(np.argsort(rewards))  # order kept
    assert training_weights([0.5, 0.5, 0.5]) == pytest.approx([1.0, 1.0, 1.0])
    assert training_weights([1000.0, 0.0]) == pytest.approx([2.0, 0.0])  # no overflow
    assert training_weights([]).shape == (0,)


# --- preference pairs ---------------------------------------------------------------------


def test_preference_pairs_same_member_gap_at_least_two() -> None:
    # M: A5 B3 C4 D1 -> A>B (2), A>D (4), B>D (2), C>D (3); A-C and B-C are only 1 apart.
    # N: E1 F3 -> F>E (2). M's A5 vs N's E1 is never a pair: different members' scales.
    votes = [Vote("A", M, 5), Vote("B", M, 3), Vote("C", M, 4), Vote("D", M, 1)]
    votes += [Vote("E", N, 1), Vote("F", N, 3), Vote("G", N, 2)]
    assert preference_pairs(votes) == [
        PreferencePair(M, "A", "B", 2),
        PreferencePair(M, "A", "D", 4),
        PreferencePair(M, "B", "D", 2),
        PreferencePair(M, "C", "D", 3),
        PreferencePair(N, "F", "E", 2),
    ]
    # replayed votes add nothing
    assert len(preference_pairs(votes + votes)) == 5
    # a stricter gap
    assert preference_pairs(votes, RewardSettings(pair_min_gap=3)) == [
        PreferencePair(M, "A", "D", 4),
        PreferencePair(M, "C", "D", 3),
    ]
    # equal stars never pair, even with gap 1
    assert preference_pairs([Vote(1, M, 3), Vote(2, M, 3)], RewardSettings(pair_min_gap=1)) == []


# --- inputs and settings ------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    s = RewardSettings()
    assert (s.member_prior_votes, s.sd_floor, s.track_prior_votes) == (3.0, 0.5, 2.0)
    assert (s.listen_threshold, s.listen_below_weight, s.listen_above_weight) == (0.5, 2.0, 0.5)
    assert (s.listen_prior_count, s.star_weight, s.listen_weight) == (1.0, 1.0, 0.5)
    assert (s.upload_reward, s.weight_temperature, s.pair_min_gap) == (1.0, 1.0, 2)


@pytest.mark.parametrize(
    "bad",
    [
        {"member_prior_votes": -1},
        {"sd_floor": 0},
        {"listen_threshold": 1.5},
        {"listen_weight": -0.1},
        {"weight_temperature": 0},
        {"pair_min_gap": 0},
    ],
)
def test_bad_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        RewardSettings(**bad)


@pytest.mark.parametrize("stars", [0, 6])
def test_stars_outside_one_to_five_are_rejected(stars: int) -> None:
    with pytest.raises(ValueError):
        Vote(1, M, stars)


def test_no_feedback_no_rewards() -> None:
    assert track_rewards([], []) == {}
    assert normalised_stars([]) == {}
    assert preference_pairs([]) == []
