"""The guild's taste over tags: Thompson sampling per field with an exploration floor."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.core.config import Settings
from bot.core.domain import Origin
from bot.core.feedback import FeedbackService
from bot.core.rewards import Vote
from bot.core.store import ModelVersionRow, Store
from bot.core.tag_policy import PolicyConfig, TagPolicy, taste_lines
from bot.core.tracks import TrackService
from model import tags as tagvocab
from model.registry import ModelRegistry


def liked_piano(n: int, seed: int = 0) -> list[tuple[dict[str, str], float]]:
    """n tracks with uniform tags; piano ones are rewarded, the rest a little below."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tags = tagvocab.uniform(rng)
        out.append((tags, (1.0 if tags["instrument"] == "piano" else -0.3) + rng.gauss(0, .5)))
    return out


def test_a_liked_value_is_served_more_and_no_value_dies_out():
    policy = TagPolicy.fit(liked_piano(200), PolicyConfig(explore=0.2, explore_tracks=200))
    prefs = policy.preferences(draws=4000)
    instruments = prefs["instrument"]
    assert max(instruments, key=instruments.get) == "piano" and instruments["piano"] > 0.7
    floor = 0.2 / len(tagvocab.VOCAB["instrument"])
    assert min(instruments.values()) >= 0.6 * floor  # the exploration floor, give or take
    # Fields the reward does not depend on stay spread out.
    assert max(prefs["mode"].values()) < 0.8
    assert policy.rated == 200


def test_the_exploration_floor_shrinks_as_evidence_grows_but_never_closes():
    cfg = PolicyConfig(explore=0.2, explore_min=0.05, explore_tracks=100)
    floors = [TagPolicy.fit(liked_piano(n), cfg).explore for n in (50, 100, 200, 400, 1600)]
    assert floors == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.05])
    early, late = (TagPolicy.fit(liked_piano(n), cfg).preferences(draws=8000)["instrument"]
                   for n in (100, 1600))
    assert late["piano"] > early["piano"] + 0.05  # less spent on what the server ruled out
    assert min(late.values()) >= 0.6 * 0.05 / len(tagvocab.VOCAB["instrument"])
    # An operator's floor below the minimum is kept, not raised.
    low = PolicyConfig(explore=0.02, explore_min=0.05, explore_tracks=100)
    assert TagPolicy.fit(liked_piano(1600), low).explore == pytest.approx(0.02)


def test_without_ratings_every_value_is_as_likely():
    prefs = TagPolicy.fit([]).preferences(draws=8000)
    for field, values in tagvocab.VOCAB.items():
        for value in values:
            assert prefs[field][value] == pytest.approx(1 / len(values), abs=0.03), (field, value)


def test_members_songs_count_toward_the_values_heard_in_them():
    heard = {**tagvocab.uniform(random.Random(0)), "instrument": "strings", "style": "folk"}
    songs = [heard] * 12 + [{"instrument": "strings"}]  # the last was not heard in full
    cold = TagPolicy.from_votes([], [], {}, uploads=songs)
    assert cold.learnt and cold.rated == 0 and cold.uploads == 12
    assert cold.explore == pytest.approx(PolicyConfig().explore)  # shrinks with ratings only
    prefs = cold.preferences(draws=4000)
    for field, value in (("instrument", "strings"), ("style", "folk")):
        shares = prefs[field]
        assert max(shares, key=shares.get) == value and shares[value] > 3 / len(shares)
    guidance = prefs["guidance"]  # songs say nothing about how closely to follow tags
    assert max(guidance.values()) < 0.6
    assert "12 members' songs" in "\n".join(taste_lines(cold))
    # Ratings outweigh the songs as they come: a server that rates piano up and strings down.
    rng = random.Random(3)
    votes, tags = [], {}
    for t in range(150):
        tags[t] = tagvocab.uniform(rng)
        stars = 5 if tags[t]["instrument"] == "piano" else \
            1 if tags[t]["instrument"] == "strings" else 3
        votes += [Vote(t, m, stars) for m in range(4)]
    rated = TagPolicy.from_votes(votes, [], tags, uploads=songs)
    assert rated.rated == 150 and rated.uploads == 12
    instruments = rated.preferences(draws=4000)["instrument"]
    assert max(instruments, key=instruments.get) == "piano" and instruments["strings"] < 0.1


def test_draws_are_reproducible_from_the_seed_and_valid():
    policy = TagPolicy.fit(liked_piano(50))
    first = [policy.serve(random.Random(s)) for s in range(20)]
    assert first == [policy.serve(random.Random(s)) for s in range(20)]
    for tags, guidance in first:
        assert tagvocab.validate(tags) == tags and set(tags) == set(tagvocab.VOCAB)
        assert guidance in tagvocab.GUIDANCE_LEVELS


async def test_the_track_service_learns_the_guilds_taste_but_not_for_the_baseline(tmp_path: Path):
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    async with await Store.open(settings.db_path) as store:
        await store.record_model_version(ModelVersionRow("g", "v0001", None, "x", "base", 0.0))
        feedback = FeedbackService(store)
        rng = random.Random(1)
        for i in range(90):  # members love minor-key tracks that follow their tags closely
            tags = tagvocab.uniform(rng)
            guidance = tagvocab.GUIDANCE_LEVELS[i % 3]
            t = await store.add_track("g", "v0001", "generated", 20.0, seed=i, tags=tags,
                                      guidance=guidance)
            stars = 2 + 2 * (tags["mode"] == "minor") + (guidance == max(tagvocab.GUIDANCE_LEVELS))
            for m in range(3):
                await feedback.record_vote(t, f"m{m}", stars)
        tracks = TrackService(settings, store, ModelRegistry(settings.models_dir), None)  # type: ignore[arg-type]

        def share(served, mode: str, guidance: float) -> tuple[float, float]:
            return (sum(t["mode"] == mode for t, _ in served) / len(served),
                    sum(g == guidance for _, g in served) / len(served))

        drawn = await tracks.default_tags("g", Origin.GENERATED, range(400))
        minor, strict = share(drawn, "minor", max(tagvocab.GUIDANCE_LEVELS))
        assert minor > 0.8 and strict > 0.7
        # The baseline arm and a guild with the policy off: uniform tags, default guidance.
        baseline = await tracks.default_tags("g", Origin.BASELINE, range(400))
        minor, default = share(baseline, "minor", tagvocab.GUIDANCE)
        assert 0.4 < minor < 0.6 and default == 1.0
        tracks.settings = Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                   tag_policy=False)
        off = await tracks.default_tags("g", Origin.GENERATED, range(400))
        minor, default = share(off, "minor", tagvocab.GUIDANCE)
        assert 0.4 < minor < 0.6 and default == 1.0
        # What /stats says the server likes names the guidance too.
        tracks.settings = settings
        lines = "\n".join(taste_lines(await tracks.tag_policy("g")))
        assert "how closely tracks follow their tags (guidance): 6 " in lines


def camp_votes(opposed: bool, n: int = 96, seed: int = 0):
    """10 members rate n tracks with uniform tags: all like piano; with `opposed`, members
    0-4 want fast tracks and 5-9 slow ones (each hates the other's favourite)."""
    from bot.core.rewards import Vote

    rng = random.Random(seed)
    tags, votes = {}, []
    for t in range(n):
        tags[t] = tagvocab.uniform(rng)
        for m in range(10):
            x = 3.0 + (1.0 if tags[t]["instrument"] == "piano" else 0.0) + rng.gauss(0, 0.7)
            if opposed:
                sign = 1 if m < 5 else -1
                x += sign * {"fast": 1.2, "medium": 0.0, "slow": -1.2}[tags[t]["tempo"]]
            votes.append(Vote(t, m, int(min(5, max(1, round(x))))))
    return votes, tags


def test_two_camps_are_found_and_served_what_neither_dislikes():
    from bot.core.tag_policy import find_camps

    votes, tags = camp_votes(opposed=True)
    camps = find_camps(votes, tags)
    assert camps is not None
    assert {frozenset(range(5)), frozenset(range(5, 10))} == set(camps.groups)
    assert set(camps.conflicts) == {"tempo"}
    assert set(camps.conflicts["tempo"]) == {"fast", "slow"}
    # One mean over everyone would leave tempo to chance; the camps' policy avoids both
    # extremes and still serves the piano everyone likes.
    policy = TagPolicy.from_votes(votes, [], tags)
    assert policy.camps == camps
    assert policy.turns == set()  # medium serves both camps: no turns
    prefs = policy.preferences(draws=3000)
    assert prefs["tempo"]["medium"] > 0.7
    assert prefs["instrument"]["piano"] > 0.6
    lines = "\n".join(taste_lines(policy))
    assert "Two camps (5 and 5 members)" in lines and "tempo" in lines


def test_camps_at_odds_on_a_yes_no_field_take_turns():
    from bot.core.rewards import Vote

    # Members 0-4 want drums and 5-9 do not; there is no value in between, so serving what
    # neither dislikes would hand drums to one camp on every track.
    rng = random.Random(0)
    tags, votes = {}, []
    for t in range(96):
        tags[t] = tagvocab.uniform(rng)
        for m in range(10):
            sign = 1 if m < 5 else -1
            x = 3.0 + sign * (0.9 if tags[t]["drums"] == "yes" else -0.9) + rng.gauss(0, 0.7)
            votes.append(Vote(t, m, int(min(5, max(1, round(x))))))
    policy = TagPolicy.from_votes(votes, [], tags)
    # Other fields are not taken for conflicts because their values came with more or
    # fewer drums by chance (each value's effect is read with the other fields held fixed).
    assert policy.camps is not None and set(policy.camps.conflicts) == {"drums"}
    assert policy.turns == {"drums"}
    assert 0.35 < policy.preferences(draws=3000)["drums"]["yes"] < 0.65
    assert "take turns between the camps on drums" in "\n".join(taste_lines(policy))


def test_a_guild_that_merely_differs_in_degree_has_no_camps():
    from bot.core.tag_policy import find_camps

    for seed in range(3):
        votes, tags = camp_votes(opposed=False, n=192, seed=seed)
        assert find_camps(votes, tags) is None


def test_evaluation_makes_its_clips_as_the_guild_is_served():
    from bot.core.rounds import eval_tags
    from bot.core.store import Track, TrackFeedback, VoteRow
    from model.contracts import EvalSpec
    from model.evaluate import clip_tags

    settings = Settings(_env_file=None, eval_clips=4)  # type: ignore[call-arg]
    assert eval_tags([], settings) is None  # nothing rated: uniform tags, default guidance
    rng = random.Random(0)
    feedback = []
    for i in range(60):  # strictly followed tags are loved, the rest disliked
        guidance = tagvocab.GUIDANCE_LEVELS[i % 3]
        track = Track(i, "g", "v0001", "generated", None, 5.0, i, 0.0,
                      tags=tagvocab.uniform(rng), guidance=guidance)
        stars = 5 if guidance == max(tagvocab.GUIDANCE_LEVELS) else 1
        feedback.append(TrackFeedback(track, tuple(VoteRow(i, f"m{m}", stars, 0.0)
                                                   for m in range(3)), ()))
    served = eval_tags(feedback, settings)
    assert served is not None and len(served) == 4
    assert sum(g == max(tagvocab.GUIDANCE_LEVELS) for _, g in served) >= 3
    spec = EvalSpec(champion_dir="a", candidate_dir="b", clips=6,
                    tags=[t for t, _ in served], guidance=[g for _, g in served])
    tags, guidance = clip_tags(spec)  # both models' clips, cycling through the draws
    assert tags == [t for t, _ in served + served[:2]]
    assert guidance == [g for _, g in served + served[:2]]
    assert clip_tags(EvalSpec(champion_dir="a", candidate_dir="b", clips=3))[1] == \
        [tagvocab.GUIDANCE] * 3
