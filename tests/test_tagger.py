import json
import math

import numpy as np
import pytest
import torch

from model.codec import MelCodec
from model.synth import PieceParams, corpus
from model.tagger import (
    Tagger,
    TaggerConfig,
    _split,
    adherence,
    confusion_text,
    embed,
    pitch_view,
    predict,
    probabilities,
    train_tagger,
)
from model.tags import FIELDS, VOCAB, tempo_tag

# A small, quick config: 24 held-out clips of 160, ~60 steps of 16.
SMALL = TaggerConfig(channels=(8, 16, 32, 48, 64), embed_dim=64, epochs=6, batch_size=16,
                     holdout=0.15, seed=0)


def synth_tags(p: PieceParams) -> dict[str, str]:
    return {"drums": "yes" if p.drums else "no",
            "mode": "major" if p.scale in ("major", "pentatonic") else "minor",
            "tempo": tempo_tag(p.tempo_bpm)}


@pytest.fixture(scope="module")
def clips() -> tuple[torch.Tensor, list[dict[str, str]]]:
    audio, params = corpus(160, seed=500)
    codec = MelCodec()
    images = codec.encode(torch.from_numpy(audio))[..., : codec.config.x_res]
    return images, [synth_tags(p) for p in params]


@pytest.fixture(scope="module")
def trained(clips):
    images, tags = clips
    return train_tagger(images, tags, SMALL)


def test_hears_drums_on_held_out_clips(trained):
    _, report = trained
    assert report.n_train == 136 and report.n_heldout == 24
    # Measured 1.0 on seeds 0-2; chance (the majority class) is ~0.6.
    assert report.accuracy["drums"] >= 0.8
    # Fields no clip was labelled with are reported as unscored, not as 0.
    assert math.isnan(report.accuracy["instrument"])
    assert sum(map(sum, report.confusion["drums"])) == 24
    table = report.table()
    assert "drums" in table and "rows true" in table


def test_save_load_round_trip(trained, clips, tmp_path):
    model, _ = trained
    images, _ = clips
    model.save(tmp_path / "tagger")
    loaded = Tagger.load(tmp_path / "tagger")
    assert loaded.cfg == model.cfg
    assert predict(loaded, images[:32]) == predict(model, images[:32])
    a, b = probabilities(model, images[:8]), probabilities(loaded, images[:8])
    assert all(np.array_equal(a[f], b[f]) for f in FIELDS)


def test_a_tagger_saved_without_the_pitch_view_still_loads(clips, tmp_path):
    images, tags = clips
    tiny = TaggerConfig(channels=(4, 8), embed_dim=16, epochs=1, batch_size=8, crop=64,
                        pitch_fields=())
    model, _ = train_tagger(images[:24], tags[:24], tiny)
    model.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "tagger_config.json"
    meta = json.loads(meta_path.read_text())
    for key in ("pitch_fields", "pitch_channels", "pitch_shift"):  # the older format
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    loaded = Tagger.load(tmp_path / "old")
    assert loaded.pitch_fields == ()
    assert predict(loaded, images[:8]) == predict(model, images[:8])


def test_mode_is_heard_on_the_pitch_view(trained, clips):
    model, _ = trained
    images, _ = clips
    assert model.pitch_fields == ("mode",)
    # The same notes a semitone higher (the pitch view moved by 3 rows) give nearly the same
    # features: the mode head hears intervals, not the key.
    view = pitch_view(images[:16], model.resampler)
    with torch.no_grad():
        here, higher = model.pitch(view[..., 3:]), model.pitch(view[..., :-3])
        other = model.pitch(pitch_view(images[16:32], model.resampler)[..., 3:])
    assert (here - higher).norm() < 0.5 * (here - other).norm()


def test_any_width_and_embedding(trained, clips):
    model, _ = trained
    images, _ = clips
    long = torch.cat([images[:3]] * 2, -1)  # 320 frames
    for width in (8, 40, 160, 300):
        x = long[..., :width]
        out = model(x)
        assert {f: v.shape for f, v in out.items()} == {f: (3, len(v)) for f, v in VOCAB.items()}
    z = embed(model, images[:5], batch=2)
    assert z.shape == (5, model.cfg.embed_dim) and np.isfinite(z).all()
    heard = predict(model, images[:4])
    assert all(set(h) == set(FIELDS) and h[f] in VOCAB[f] for h in heard for f in h)


def test_missing_fields_are_masked_and_training_is_seeded(clips):
    images, tags = clips
    tiny = TaggerConfig(channels=(4, 8), embed_dim=16, epochs=1, batch_size=8, crop=64)
    partial = [{} if i % 3 == 0 else {"drums": t["drums"]} if i % 3 == 1 else t
               for i, t in enumerate(tags[:48])]
    m1, r1 = train_tagger(images[:48], partial, tiny)
    m2, _ = train_tagger(images[:48], partial, tiny)
    assert r1.n_train + r1.n_heldout == 48
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                 m2.state_dict().values(), strict=True))
    # Scored only where labelled: fewer held-out clips count for mode than for drums.
    scored = {f: sum(map(sum, r1.confusion[f])) for f in ("drums", "mode")}
    assert 0 < scored["mode"] < scored["drums"] <= r1.n_heldout
    with pytest.raises(ValueError, match="unknown"):
        train_tagger(images[:8], [{"drums": "maybe"}] * 8, tiny)


def test_adherence_counts_per_asked_field():
    asked = [{"drums": "yes", "mode": "minor"}, {"drums": "no"}, {"drums": "yes"},
             {"instrument": "piano"}]
    heard = [{"drums": "yes", "mode": "major", "instrument": "organ"},
             {"drums": "no", "mode": "minor"}, {"drums": "no"}, {"instrument": "piano"}]
    share, confusion = adherence(asked, heard)
    assert list(share) == ["instrument", "mode", "drums"]  # VOCAB order, asked fields only
    assert share == {"instrument": 1.0, "mode": 0.0, "drums": 2 / 3}
    assert confusion["drums"] == [[1, 0], [1, 1]]  # rows asked (no, yes), cols heard
    assert confusion["mode"] == [[0, 0], [1, 0]]
    assert confusion["instrument"][0][0] == 1
    assert "drums" in confusion_text(confusion)
    with pytest.raises(ValueError):
        adherence(asked, heard[:2])


def test_split_keeps_groups_together():
    groups = [i // 4 for i in range(40)]  # e.g. 4 windows of each of 10 tunes
    train, held = _split(40, 0.2, 0, groups)
    assert len(held) == 8 and sorted(train + held) == list(range(40))
    assert not {groups[i] for i in train} & {groups[i] for i in held}
    assert (train, held) == _split(40, 0.2, 0, groups)
