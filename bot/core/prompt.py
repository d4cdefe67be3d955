"""What a member asks /generate for: its options and a free-text prompt, read into tags.

The prompt is read by keywords, no model: a vocabulary value (model/tags.py) or a synonym
sets its field; "no drums" / "without drums" turn the drums off. Options picked from the
command's lists win over the prompt. Prompt words that end up unused (not understood,
contradicting an earlier word, overridden by an option) are reported back, so members learn
the words that work. Torch-free, like model/tags.py: the cogs read the vocabulary here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.core.errors import UserFacingError
from model.tags import FIELDS, VOCAB, TagError, Tags, validate

__all__ = ["MOODS", "VOCAB", "BadOption", "TagRequest", "describe", "read_prompt",
           "read_request"]

MOODS = {"happy": "major", "sad": "minor"}  # /generate's mood option -> the mode tag

# Synonyms per tag; each value's own name counts too (except drums' "yes"/"no", which are
# no request on their own). The first entry for a word wins: "synth" is the instrument.
_SYNONYMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("mode", "major"): ("happy", "bright", "cheerful", "joyful"),
    ("mode", "minor"): ("sad", "dark", "melancholy", "melancholic", "gloomy", "moody"),
    ("tempo", "slow"): ("calm", "chill", "relaxed", "relaxing", "gentle"),
    ("tempo", "fast"): ("upbeat", "energetic", "lively", "quick"),
    ("instrument", "strings"): ("string", "violin", "cello", "viola", "orchestra"),
    ("instrument", "woodwind"): ("woodwinds", "flute", "clarinet", "oboe", "bassoon"),
    ("instrument", "brass"): ("trumpet", "horn", "trombone", "tuba"),
    ("instrument", "guitar"): ("harp", "lute"),
    ("instrument", "mallets"): ("mallet", "vibraphone", "marimba", "xylophone", "bells",
                                "bell"),
    ("instrument", "synth"): ("synth", "electronic", "chiptune"),
    ("drums", "no"): ("acoustic",),
    ("drums", "yes"): ("drums", "drum", "beat", "beats", "groove", "percussion"),
    ("style", "folk"): ("fiddle", "celtic"),
    ("style", "chorale"): ("hymn", "choir", "chorale"),
    ("style", "classical"): ("baroque", "symphonic"),
    ("style", "ragtime"): ("rag",),
    ("style", "renaissance"): ("medieval", "madrigal"),
}


def _keywords() -> dict[str, tuple[str, str]]:
    words: dict[str, tuple[str, str]] = {}
    for (field, value), synonyms in _SYNONYMS.items():
        for word in synonyms:
            words.setdefault(word, (field, value))
    for field, values in VOCAB.items():
        if field != "drums":
            for value in values:
                words.setdefault(value, (field, value))
    return words


KEYWORDS = _keywords()
NEGATIONS = frozenset({"no", "without", "not", "non"})
# Words that ask for nothing and are skipped quietly (reporting "a" as ignored is noise).
FILLER = frozenset(
    "a an the and or but with some something of in on for to me my i want would like please "
    "make play give very really quite bit little kind sort style mood feel feeling vibe "
    "vibes music song songs track tune tunes piece sound sounding tempo instrument".split())
# The order tags are read back in: "minor, slow, piano" says what a member asked for.
LABEL_ORDER = ("mode", "tempo", "instrument", "style", "drums")


def _lookup(word: str) -> tuple[str, str] | None:
    if word in KEYWORDS:
        return KEYWORDS[word]
    return KEYWORDS.get(word[:-1]) if word.endswith("s") else None  # "violins", "flutes"


class BadOption(UserFacingError):
    """An option value outside the vocabulary (a client with stale command choices)."""


@dataclass(frozen=True)
class TagRequest:
    """What a member asked for: tags (None: nothing, the guild's default policy) and the
    prompt's words that were not used."""

    tags: Tags | None
    ignored: tuple[str, ...] = ()

    def reply_line(self) -> str | None:
        """The one line echoed to the member; None when they asked for nothing."""
        words = ", ".join(repr(w) for w in self.ignored)
        if self.tags is None:
            return (f"Did not understand {words}, so here is one in the usual mix"
                    if words else None)
        said = f"Understood: {describe(self.tags)}"
        return f"{said}; ignored: {words}" if words else said


def describe(tags: Mapping[str, str]) -> str:
    """Tags as a member reads them: "minor, slow, piano, folk style, no drums"."""
    order = LABEL_ORDER + tuple(f for f in FIELDS if f not in LABEL_ORDER)
    labels = []
    for field in order:
        value = tags.get(field)
        if value is None:
            continue
        if field == "drums":
            labels.append("drums" if value == "yes" else "no drums")
        elif field == "style":
            labels.append(f"{value} style")
        else:
            labels.append(value)
    return ", ".join(labels)


def _read(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """A prompt's tags, the phrase that set each field, and its unused words."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    tags: dict[str, str] = {}
    said: dict[str, str] = {}
    ignored: list[str] = []

    def ignore(phrase: str) -> None:
        if phrase not in ignored:
            ignored.append(phrase)

    def take(phrase: str, field: str, value: str) -> None:
        if field not in tags:
            tags[field], said[field] = value, phrase
        elif tags[field] != value:  # the first word for a field wins
            ignore(phrase)

    i = 0
    while i < len(words):
        word = words[i]
        if word in NEGATIONS and i + 1 < len(words) and _lookup(words[i + 1]):
            phrase = f"{word} {words[i + 1]}"
            if _lookup(words[i + 1]) == ("drums", "yes"):
                take(phrase, "drums", "no")
            else:
                ignore(phrase)  # "no piano": tags say what to play, not what to leave out
            i += 2
            continue
        found = _lookup(word)
        if found is not None:
            take(word, *found)
        elif word not in FILLER:
            ignore(word)
        i += 1
    return tags, said, ignored


def read_prompt(text: str) -> TagRequest:
    """Read a prompt's keywords: "sad slow piano" -> mode=minor, tempo=slow,
    instrument=piano. A field's first word wins; later contradicting ones are ignored."""
    tags, _, ignored = _read(text)
    return TagRequest(tags=validate(tags) if tags else None, ignored=tuple(ignored))


def read_request(prompt: str | None = None, *, mood: str | None = None,
                 **options: str | None) -> TagRequest:
    """/generate's options (instrument, tempo, style, drums: vocabulary values; mood: a key
    of MOODS) over its prompt: an option wins, and the prompt word it overrides is
    reported as ignored. BadOption (one line naming the valid values) for an unknown
    option or value."""
    if mood is not None and mood not in MOODS:
        raise BadOption(f"unknown mood {mood!r}; valid: {', '.join(MOODS)}")
    try:
        chosen = validate({k: v for k, v in {**options, "mode": MOODS.get(mood or "")}.items()
                           if v is not None})
    except TagError as exc:
        raise BadOption(str(exc)) from exc
    read, said, ignored = _read(prompt or "")
    ignored += [said[f] for f, v in read.items() if chosen.get(f, v) != v]
    tags = {**read, **chosen}
    return TagRequest(tags=validate(tags) if tags else None, ignored=tuple(ignored))
