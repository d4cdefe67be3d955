"""The tag vocabulary: the words a track can be asked for and is labelled with.

Every clip of the starter corpus carries one value per field (model/scores.py records them);
the built-in base is conditioned on them and the tagger predicts them. No torch here: the CLI
and the bot validate tags before any model loads.

A tag set is a plain `{field: value}` dict; a field left out means "any" (the model is
trained with tag dropout, so leaving every field out is unconditional generation).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

VOCAB: dict[str, tuple[str, ...]] = {
    "instrument": ("piano", "strings", "guitar", "woodwind", "brass", "organ", "mallets",
                   "synth"),
    "mode": ("major", "minor"),
    "tempo": ("slow", "medium", "fast"),
    "drums": ("no", "yes"),
    "style": ("chorale", "folk", "classical", "ragtime", "renaissance", "synth"),
}
FIELDS = tuple(VOCAB)
SLOW_BELOW_BPM = 90.0  # tempo tag from a clip's beats per minute
FAST_FROM_BPM = 130.0

Tags = dict[str, str]

# How closely a track follows its tags: the classifier-free guidance scale (model/pipeline.py).
# GUIDANCE is the default (the baseline arm, evaluation without a policy, imported tracks);
# a guild's tag policy learns which of GUIDANCE_LEVELS its members like (bot/core/
# tag_policy.py). Why learnt, not fixed: it trades likeness to the corpus for following the
# tags. Measured on the shipped base, 64 clips, against 64 held-out corpus clips: feature
# Frechet distance 15.0 / 16.5 / 18.7 at 3 / 4.5 / 6, diversity 0.74 / 0.79 / 0.82 of the
# corpus's; tagger adherence (bench_tags -n 8) at 3 and 6: instrument 88% / 97%, tempo
# 63% / 96%, drums 94% / 100%, style 48% / 67%, mode 56% both.
GUIDANCE = 3.0
GUIDANCE_LEVELS = (3.0, 4.5, 6.0)


class TagError(ValueError):
    """An unknown field or value; the message is one line listing the valid ones."""


def tempo_tag(bpm: float) -> str:
    return "slow" if bpm < SLOW_BELOW_BPM else "fast" if bpm >= FAST_FROM_BPM else "medium"


def validate(tags: Mapping[str, str]) -> Tags:
    """A copy of `tags` in field order, or TagError naming what is valid."""
    out: Tags = {}
    for field, value in tags.items():
        if field not in VOCAB:
            raise TagError(f"unknown tag field {field!r}; valid fields: {', '.join(FIELDS)}")
        if value not in VOCAB[field]:
            raise TagError(f"unknown {field} {value!r}; valid: {', '.join(VOCAB[field])}")
    for field in FIELDS:
        if field in tags:
            out[field] = tags[field]
    return out


def parse(text: str) -> Tags:
    """`"mode=minor,instrument=piano"` -> {"instrument": "piano", "mode": "minor"}."""
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        field, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise TagError(f"tag {item!r} is not field=value; fields: {', '.join(FIELDS)}")
        field, value = field.strip().lower(), value.strip().lower()
        if field in pairs and pairs[field] != value:
            raise TagError(f"tag field {field!r} given twice")
        pairs[field] = value
    return validate(pairs)


def format_tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{f}={tags[f]}" for f in FIELDS if f in tags)


def uniform(rng: random.Random) -> Tags:
    """One value per field, uniformly: the default posting policy until a guild has a taste."""
    return {field: rng.choice(values) for field, values in VOCAB.items()}


# --- indices for the model's class embedding ---------------------------------------------
# Each field owns a block of rows: its values, then one "any" row (the dropped tag). A tag set
# becomes one index per field; the model sums the fields' embeddings.

def offsets(vocab: Mapping[str, tuple[str, ...]] = VOCAB) -> dict[str, int]:
    out, at = {}, 0
    for field, values in vocab.items():
        out[field] = at
        at += len(values) + 1
    return out


def n_embeddings(vocab: Mapping[str, tuple[str, ...]] = VOCAB) -> int:
    return sum(len(v) + 1 for v in vocab.values())


def indices(tags: Mapping[str, str], vocab: Mapping[str, tuple[str, ...]] = VOCAB) -> list[int]:
    """One embedding row per field: the value's, or the field's "any" row when left out."""
    base = offsets(vocab)
    return [base[f] + (vocab[f].index(tags[f]) if f in tags else len(vocab[f])) for f in vocab]
