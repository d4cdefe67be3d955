import json

import pytest
import torch

import model.train as train
from bot.cli import main
from model.pipeline import CrowdtunePipeline
from tests.helpers import make_base


def crowdtune(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code), *capsys.readouterr()


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    base = make_base(tmp_path / "trained")
    (base / "pretrain.json").write_text(json.dumps({"recipe": {"clips": 5, "train": {"steps": 7}}}))
    out = tmp_path / "shipped"
    train.ship_base(base, out)
    monkeypatch.setattr(train, "SHIPPED_BASE", out)
    return base, out


def test_shipped_base_is_half_size_and_installs_in_full_precision(shipped, tmp_path):
    base, out = shipped
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*.safetensors"))  # noqa: E731
    assert size(out) < 0.6 * size(base)
    train.install_shipped_base(tmp_path / "installed", out)
    original = CrowdtunePipeline.from_pretrained(base).unet.state_dict()
    installed = CrowdtunePipeline.from_pretrained(tmp_path / "installed").unet.state_dict()
    for k, v in original.items():
        assert installed[k].dtype == torch.float32
        assert torch.allclose(installed[k], v.half().float())


def test_pretrain_installs_the_shipped_base_once(capsys, shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROWDTUNE_FINETUNE_REPLAY_CLIPS", "16")
    code, _, err = crowdtune(capsys, "pretrain")
    assert code == 0, err
    said = " ".join(err.split())  # rich wraps long lines
    assert "installing the shipped base" in said and "--steps 7 --clips 5`" in said
    assert (tmp_path / "data" / "models" / "base" / "model_index.json").is_file()
    # The corpus pool that fine-tuning rehearses is built once, with the base.
    (pool,) = (tmp_path / "data" / "cache").glob("pool3-*-16-*.npz")
    built = pool.stat().st_mtime_ns
    code, _, err = crowdtune(capsys, "pretrain")
    assert code == 0 and "already at" in err
    assert pool.stat().st_mtime_ns == built
    # --force installs the shipped base again, and the tagger shipped with it.
    stale = tmp_path / "data" / "models" / "tagger" / "stale"
    stale.write_text("an older tagger")
    code, _, err = crowdtune(capsys, "pretrain", "--force")
    assert code == 0, err
    assert not stale.exists()
    assert (tmp_path / "data" / "models" / "tagger" / "tagger_config.json").is_file()


@pytest.mark.slow
def test_pretrain_trains_the_builtin_model_from_scratch(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROWDTUNE_FINETUNE_REPLAY_CLIPS", "8")
    code, _, err = crowdtune(capsys, "pretrain", "--train", "--steps", "2", "--clips", "16")
    assert code == 0, err
    base = tmp_path / "data" / "models" / "base"
    report = json.loads((base / "pretrain.json").read_text())
    assert report["recipe"]["train"]["steps"] == 2 and report["corpus_clips"] == 16
    assert report["recipe"]["key"]["steps"] == 1  # the key stage: half the first's steps
    pipe = CrowdtunePipeline.from_pretrained(base)
    assert pipe.patch == (8, 4) and pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.keyed and "tonic" in pipe.tag_vocab
    assert not [p for p in (tmp_path / "data" / "models").iterdir() if p.name.startswith(".")]
