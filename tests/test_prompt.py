"""/generate's options and prompt read into tags (bot/core/prompt.py)."""

from __future__ import annotations

import pytest

from bot.core.errors import UserFacingError
from bot.core.prompt import BadOption, TagRequest, describe, read_prompt, read_request
from model.tags import VOCAB


@pytest.mark.parametrize(("prompt", "tags", "ignored"), [
    ("sad slow piano", {"instrument": "piano", "mode": "minor", "tempo": "slow"}, ()),
    ("A Sad, SLOW piano song on a spaceship!",
     {"instrument": "piano", "mode": "minor", "tempo": "slow"}, ("spaceship",)),
    ("cheerful upbeat violins with drums",
     {"instrument": "strings", "mode": "major", "tempo": "fast", "drums": "yes"}, ()),
    ("gloomy chill harp", {"instrument": "guitar", "mode": "minor", "tempo": "slow"}, ()),
    ("energetic chiptune groove", {"instrument": "synth", "tempo": "fast", "drums": "yes"}, ()),
    ("something without drums, celtic fiddle", {"drums": "no", "style": "folk"}, ()),
    ("no drums", {"drums": "no"}, ()),
    ("acoustic marimba", {"instrument": "mallets", "drums": "no"}, ()),
    ("trumpet hymn", {"instrument": "brass", "style": "chorale"}, ()),
    ("baroque flute", {"instrument": "woodwind", "style": "classical"}, ()),
    ("medieval rag", {"style": "renaissance"}, ("rag",)),  # the first style word wins
    ("organ medium ragtime", {"instrument": "organ", "tempo": "medium", "style": "ragtime"},
     ()),
    ("happy sad", {"mode": "major"}, ("sad",)),
    ("no piano please", None, ("no piano",)),  # tags say what to play, not what to skip
    ("spaceship lasers", None, ("spaceship", "lasers")),
    ("yes", None, ("yes",)),  # drums' own values are no request on their own
    ("", None, ()),
])
def test_prompt_keywords(prompt, tags, ignored):
    assert read_prompt(prompt) == TagRequest(tags=tags, ignored=ignored)


def test_every_vocabulary_value_is_a_keyword_except_drums_yes_no():
    for field, values in VOCAB.items():
        for value in values:
            tags = read_prompt(value).tags
            if field == "drums":
                assert tags is None
            elif value == "synth":  # both an instrument and a style: the instrument
                assert tags == {"instrument": "synth"}
            else:
                assert tags == {field: value}


def test_options_win_over_the_prompt_and_say_what_they_overrode():
    request = read_request("sad piano in space with drums", mood="happy", instrument="guitar",
                           tempo="slow")
    assert request.tags == {"instrument": "guitar", "mode": "major", "tempo": "slow",
                            "drums": "yes"}
    assert request.ignored == ("space", "sad", "piano")
    assert request.reply_line() == ("Understood: major, slow, guitar, drums; ignored: "
                                    "'space', 'sad', 'piano'")
    assert read_request("no drums", drums="yes").ignored == ("no drums",)
    assert read_request(mood="sad", style="folk", drums="no").tags == {
        "mode": "minor", "drums": "no", "style": "folk"}


def test_nothing_asked_is_the_default_policy_and_says_nothing():
    assert read_request() == TagRequest(tags=None)
    assert read_request().reply_line() is None
    request = read_request("spaceship")
    assert request.tags is None
    assert request.reply_line() == "Did not understand 'spaceship', so here is one in the " \
                                   "usual mix"


def test_replies_and_labels():
    assert read_request("sad slow piano").reply_line() == "Understood: minor, slow, piano"
    assert describe({"style": "synth", "drums": "no", "instrument": "synth", "mode": "major"}
                    ) == "major, synth, synth style, no drums"
    assert describe({"drums": "yes"}) == "drums"


def test_unknown_option_values_are_one_line_for_the_member():
    # Only a client with stale choices sends one; the member reads which values are valid.
    with pytest.raises(UserFacingError, match="^unknown mood 'angry'; valid: happy, sad$"):
        read_request(mood="angry")
    with pytest.raises(BadOption, match="^unknown tempo 'presto'; valid: slow, medium, fast$"):
        read_request(tempo="presto")
