import json
import random
import sqlite3
import subprocess
import sys

import pytest

from bot.cli import main
from model.tags import uniform
from tests.helpers import make_base


def crowdtune(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def probe_seconds(path: str) -> float:
    res = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", path], capture_output=True, text=True, check=True)
    return float(res.stdout)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env or ./data from the developer's checkout
    make_base(tmp_path / "data" / "models")
    return tmp_path / "data"


@pytest.mark.slow
def test_generate_records_and_writes_decodable_tracks(capsys, data_dir, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = crowdtune(capsys, "generate", "--guild", "g1", "-n", "2", "--out",
                               str(out_dir), "--json", "--seed", "5", "--seconds", "2", "--wav")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["seed"] for r in rows] == [5, 6]
    assert {r["model_version"] for r in rows} == {"v0001"}
    assert set(rows[0]) >= {"track_id", "path", "model_version", "duration_s", "seed", "tags"}
    # No --tags: the guild's default policy, one value per field drawn from the seed.
    assert [r["tags"] for r in rows] == [uniform(random.Random(s)) for s in (5, 6)]
    for r in rows:
        assert r["path"].endswith(".ogg")
        assert abs(probe_seconds(r["path"]) - 2.0) < 0.05
        assert r["duration_s"] == 2.0
    db = sqlite3.connect(data_dir / "crowdtune.sqlite3")
    stored = db.execute("SELECT id, guild_id, model_version, origin, file, seed FROM tracks "
                        "ORDER BY id").fetchall()
    assert stored == [(r["track_id"], "g1", "v0001", "generated", r["path"], r["seed"])
                      for r in rows]
    # Same seed in another guild (same base) gives the same audio.
    code, out, _ = crowdtune(capsys, "generate", "--guild", "g2", "--out", str(tmp_path / "o2"),
                             "--json", "--seed", "5", "--seconds", "2", "--wav")
    again = json.loads(out)
    wav = lambda p: open(p.replace(".ogg", ".wav"), "rb").read()  # noqa: E731
    assert wav(again["path"]) == wav(rows[0]["path"])
    assert wav(rows[0]["path"]) != wav(rows[1]["path"])


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "--guild", "../x", "--out", "o"], "invalid guild"),
    (["generate", "--guild", "g", "-n", "0", "--out", "o"], "from 1 to 100"),
    (["generate", "--guild", "g", "-n", "lots", "--out", "o"], "from 1 to 100"),
    (["generate", "--guild", "g"], "required: --out"),
    (["generate", "--guild", "g", "--out", "o", "--seconds", "0.1"], "between 1 and 300"),
    (["model", "list", "--guild", "nobody"], "no model versions yet"),
    (["model", "rollback", "--guild", "nobody"], "has no model yet"),
    (["frobnicate"], "invalid choice"),
    (["generate", "--guild", "g", "--out", "o", "--tags", "mode=happy"],
     "argument --tags: unknown mode 'happy'; valid: major, minor"),
    (["generate", "--guild", "g", "--out", "o", "--tags", "mood=sad"],
     "unknown tag field 'mood'; valid fields: instrument, mode, tempo, drums, style"),
    (["generate", "--guild", "g", "--out", "o", "--tags", "piano"], "is not field=value"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, data_dir, args, message):
    code, out, err = crowdtune(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_tags_prints_the_vocabulary(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = crowdtune(capsys, "tags", "--json")
    assert code == 0
    vocab = json.loads(out)
    assert list(vocab) == ["instrument", "mode", "tempo", "drums", "style"]
    assert vocab["mode"] == ["major", "minor"] and "piano" in vocab["instrument"]
    code, out, _ = crowdtune(capsys, "tags")
    assert code == 0
    assert out.splitlines()[1] == "mode: major, minor" and len(out.splitlines()) == len(vocab)
    assert not (tmp_path / "data").exists()  # no settings, database or model needed


def test_bad_tags_fail_before_anything_loads(tmp_path):
    """Validated by argparse: no settings, no database, no model stack (torch) loaded."""
    code = ("import sys\nfrom bot.cli import main\ntry:\n"
            "    main(['--data-dir', 'd', 'generate', '--guild', 'g', '--out', 'o', '--tags', "
            "'instrument=kazoo'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert res.stdout.split() == ["2", "False"]
    assert res.stderr == ("crowdtune: error: crowdtune generate: argument --tags: unknown "
                          "instrument 'kazoo'; valid: piano, strings, guitar, woodwind, "
                          "brass, organ, mallets, synth\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_generate_with_tags_records_them(capsys, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDTUNE_SAMPLER_STEPS", "2")
    code, out, err = crowdtune(capsys, "generate", "--guild", "g", "-n", "2", "--out",
                               str(tmp_path / "out"), "--json", "--seed", "3", "--seconds",
                               "1", "--tags", "Mode=minor, instrument=piano")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    asked = {"instrument": "piano", "mode": "minor"}  # the tiny base takes tags
    assert [r["tags"] for r in rows] == [asked, asked]
    db = sqlite3.connect(data_dir / "crowdtune.sqlite3")
    stored = db.execute("SELECT tags FROM tracks ORDER BY id").fetchall()
    assert [json.loads(t) for (t,) in stored] == [asked, asked]


def test_missing_base_and_bad_settings(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = crowdtune(capsys, "simulate", "--ablation", "--only", "no tag policy,kazoo")
    assert code == 2 and "unknown variant 'kazoo'; one of: no fine-tuning" in err
    code, _, err = crowdtune(capsys, "generate", "--guild", "g", "--out", "o")
    assert code == 2 and "run `crowdtune pretrain` first" in err
    (tmp_path / "file").write_text("x")
    make_base(tmp_path / "data" / "models")
    code, _, err = crowdtune(capsys, "generate", "--guild", "g", "--out", "file")
    assert code == 2 and "not a folder" in err
    monkeypatch.setenv("CROWDTUNE_AUDIO_FORMAT", "flac")
    code, _, err = crowdtune(capsys, "generate", "--guild", "g", "--out", "o")
    assert code == 2 and "bad setting audio_format" in err and len(err.splitlines()) == 1


def test_model_list_and_rollback(capsys, data_dir):
    from model.registry import ModelRegistry

    reg = ModelRegistry(data_dir / "models")
    reg.ensure_guild("g")
    reg.promote("g", reg.add_version("g", reg.version_dir("g", "v0001"), "v0001",
                                     "finetune").version)
    code, out, _ = crowdtune(capsys, "model", "list", "--guild", "g", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["version"], r["active"]) for r in rows] == [("v0001", False), ("v0002", True)]
    assert [r["kept"] for r in rows] == [["ancestor", "recent"], ["active", "recent"]]
    code, _, err = crowdtune(capsys, "model", "pin", "--guild", "g", "v0001")
    assert code == 0 and "v0001 is pinned" in err and reg.pinned("g") == ["v0001"]
    code, _, err = crowdtune(capsys, "model", "pin", "--guild", "g", "v0042")
    assert code == 2 and "no model version v0042" in err
    code, _, err = crowdtune(capsys, "model", "rollback", "--guild", "g")
    assert code == 0 and "v0001 is active again" in err
    assert reg.active_name("g") == "v0001"
    code, _, err = crowdtune(capsys, "model", "rollback", "--guild", "g")
    assert code == 2 and "nothing to roll back to" in err


@pytest.mark.slow
def test_simulate_runs_the_loop_and_writes_its_outputs(capsys, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDTUNE_SAMPLER_STEPS", "3")
    monkeypatch.setenv("CROWDTUNE_EVAL_CLIPS", "4")
    monkeypatch.setenv("CROWDTUNE_TORCH_THREADS", "1")
    out = tmp_path / "sim"
    code, stdout, err = crowdtune(capsys, "simulate", "--rounds", "1", "--tracks", "8",
                                  "--final", "6", "--members", "5", "--steps", "2", "--out",
                                  str(out), "--json", "--outside-style", "--judge", "3")
    assert code == 0, err
    data = json.loads(stdout)
    assert [r["round"] for r in data["rounds"]] == [0, 1]
    assert all(r["fd_outside"] > 0 and r["fd_model"] > 0 for r in data["rounds"])
    assert "the voices" in err  # rich wraps (and tags) the log lines
    assert data["wrong_promotions"] in ([], [1])
    # The round's candidate was judged by the community's own stars against its parent.
    judged = data["rounds"][0]
    assert abs(judged["candidate_gain"]) < 4 and judged["candidate_se"] >= 0
    assert data["missed_promotions"] in ([], [1])
    assert "as the community hears it" in (out / "simulation.md").read_text()
    keys = {"round", "new_mean", "new_ci", "baseline_mean", "baseline_ci",
            "gain_over_baseline", "p_value"}
    assert all(keys <= set(r) for r in data["rounds"])
    assert data["diversity"]["base"] > 0
    assert (out / "simulation.png").stat().st_size > 1000
    assert "| pass | model |" in (out / "simulation.md").read_text()
    # The simulation used its own data folder: the real guilds' database is untouched.
    assert not (data_dir / "crowdtune.sqlite3").exists()
    code, _, err = crowdtune(capsys, "simulate", "--rounds", "0")
    assert code == 2 and "from 1 to 50" in err


def test_every_ablation_changes_only_real_settings(tmp_path):
    from bot.core.config import Settings
    from bot.experiment.simulate import ABLATIONS, SimConfig, Simulation

    base = Settings(data_dir=tmp_path / "data")
    seen = set()
    for name, change in ABLATIONS.items():
        cfg = SimConfig(**{**SimConfig.quick().__dict__, **change})
        sim = Simulation(base, cfg, tmp_path / name)
        assert set(cfg.settings) <= set(Settings.model_fields), name
        Settings.model_validate(sim.settings.model_dump())  # every value is valid
        seen.add((sim.settings.finetune_track_share, sim.settings.reward.get("star_weight"),
                  sim.settings.reward.get("listen_weight"), cfg.fine_tune, cfg.uploads,
                  sim.settings.tag_policy, cfg.community, sim.settings.reward_inputs,
                  sim.settings.library_dir is not None, sim.settings.finetune_guide_min_corr,
                  sim.settings.finetune_corpus_guided))
    assert len(seen) == len(ABLATIONS)  # no two variants run the same experiment


def test_env_example_documents_every_setting():
    from pathlib import Path

    from bot.core.config import BotSettings  # the shared settings and the bot's own

    text = (Path(__file__).parent.parent / ".env.example").read_text()
    for name, f in BotSettings.model_fields.items():
        key = f.validation_alias if isinstance(f.validation_alias, str) else \
            f"CROWDTUNE_{name.upper()}"
        assert key in text, f"{key} is not in .env.example"
