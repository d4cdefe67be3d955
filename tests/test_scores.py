"""The score corpus with the real music21 corpus and the real fluidsynth (no mocks).

Short clips keep this file quick; one cache dir is shared so each score is parsed once.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from model import scores
from model.tags import VOCAB, validate

pytestmark = pytest.mark.slow

SR = 16000


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("score-cache")


@pytest.fixture(scope="module")
def corpus48(cache: Path) -> tuple[np.ndarray, list[scores.ClipInfo]]:
    return scores.score_corpus(48, seed=0, seconds=1.0, cache_dir=cache)


def test_same_seed_same_audio_and_infos_cold_or_cached(cache: Path):
    a, ia = scores.score_corpus(10, seed=3, seconds=1.5, cache_dir=cache)  # parses, caches
    b, ib = scores.score_corpus(10, seed=3, seconds=1.5, cache_dir=cache)  # reads the cache
    assert a.shape == (10, int(1.5 * SR)) and a.dtype == np.float32
    assert np.array_equal(a, b) and ia == ib
    d, _ = scores.score_corpus(10, seed=4, seconds=1.5, cache_dir=cache)
    assert not np.array_equal(a, d)


def test_shapes_peaks_and_valid_tags(corpus48):
    audio, infos = corpus48
    assert audio.shape == (48, SR) and audio.dtype == np.float32 and len(infos) == 48
    peaks = np.abs(audio).max(axis=1)
    assert np.allclose(peaks, 0.9, atol=1e-3)
    for info in infos:
        assert set(info.tags) == set(VOCAB) and validate(info.tags) == info.tags
        assert info.licence
        if info.source == "synth":
            assert info.program == -1 and info.tags["style"] == "synth"
        else:
            assert (scores.corpus_dir() / info.source.split("#")[0]).is_file()
            assert info.program in scores.FAMILIES[info.tags["instrument"]]
            assert "essenFolksong" not in info.source
        json.dumps(info.to_dict())


def test_tag_values_are_covered(corpus48):
    counts = scores.tag_counts(corpus48[1])
    assert all(c == 8 for c in counts["style"].values()), counts["style"]
    for field_, values in counts.items():
        missing = [v for v, c in values.items() if c == 0]
        assert len(missing) <= len(values) // 4, (field_, values)


def test_a_corrupt_score_is_skipped_and_counted(tmp_path: Path, cache: Path, caplog):
    garbage = tmp_path / "broken.mxl"
    garbage.write_bytes(b"PK\x03\x04 this is not a score" * 10)
    with caplog.at_level(logging.WARNING, logger="model.scores"):
        audio, infos, skipped = scores.render_sources(
            [str(garbage), "bach/bwv66.6.mxl"], seconds=1.0, clips_per_source=2, cache_dir=cache)
    assert skipped == [str(garbage)]
    assert str(garbage) in caplog.text
    assert audio.shape == (2, SR) and [i.source for i in infos] == ["bach/bwv66.6.mxl"] * 2
    assert infos[0].tags["style"] == "chorale"


def test_missing_soundfont_names_the_package(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(scores.SOUNDFONT_ENV, str(tmp_path / "nope.sf2"))
    with pytest.raises(scores.RenderError) as err:
        scores.score_corpus(4, seconds=1.0)
    message = str(err.value)
    assert "fluid-soundfont-gm" in message and "\n" not in message


def test_command_line_writes_wavs_and_jsonl(tmp_path: Path, cache: Path, capsys):
    out = tmp_path / "corpus"
    # the first test's corpus: its scores are cached already
    assert scores.main(["--out", str(out), "--clips", "10", "--seed", "3", "--seconds", "1.5",
                        "--cache-dir", str(cache)]) == 0
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all((out / r["file"]).stat().st_size > SR for r in rows)
    printed = capsys.readouterr().out
    assert "style" in printed and "skipped sources: 0" in printed
