import json

import pytest

from model.registry import ModelRegistry, RegistryError
from tests.helpers import make_base


@pytest.fixture()
def registry(tmp_path):
    make_base(tmp_path)
    return ModelRegistry(tmp_path)


def _finetune(registry: ModelRegistry, guild: str, parent: str, tmp_path) -> str:
    """Stand-in for a round's candidate: the parent's files saved as a new version."""
    return registry.add_version(guild, registry.version_dir(guild, parent), parent=parent,
                                source="finetune").version


def _weights(registry, guild, version):
    return next(registry.version_dir(guild, version).rglob("*.safetensors"))


def test_guild_starts_from_base_with_hashed_v0001(registry):
    info = registry.ensure_guild("g1")
    assert info.version == "v0001" and info.parent is None and info.source == "base"
    assert registry.active_name("g1") == "v0001"
    assert any(f.endswith(".safetensors") for f in info.files)
    assert all(len(d) == 64 for d in info.files.values())
    assert registry.ensure_guild("g1").version == "v0001"  # idempotent
    assert registry.ensure_guild("g2").version == "v0001"  # lineages are per guild
    assert registry.verify("g1", "v0001") is None


def test_no_base_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="run `crowdtune pretrain` first"):
        ModelRegistry(tmp_path).ensure_guild("g")


def test_promote_and_rollback(registry, tmp_path):
    registry.ensure_guild("g")
    v2 = _finetune(registry, "g", "v0001", tmp_path)
    assert registry.active_name("g") == "v0001"  # a new version is not active by itself
    registry.promote("g", v2)
    v3 = _finetune(registry, "g", v2, tmp_path)
    registry.promote("g", v3)
    assert [v.version for v in registry.versions("g")] == ["v0001", "v0002", "v0003"]
    assert registry.rollback("g").version == "v0002"
    assert registry.rollback("g").version == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("g")
    assert registry.rollback("g", to="v0003").version == "v0003"
    with pytest.raises(RegistryError, match="no model version v0009"):
        registry.rollback("g", to="v0009")
    assert registry.active_name("g") == "v0003"


def test_corrupt_checkpoint_is_detected_and_never_promoted(registry, tmp_path):
    registry.ensure_guild("g")
    v2 = _finetune(registry, "g", "v0001", tmp_path)
    weights = _weights(registry, "g", v2)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "corrupt" in registry.verify("g", v2)
    with pytest.raises(RegistryError, match="corrupt"):
        registry.promote("g", v2)
    assert registry.active_name("g") == "v0001"


def test_corrupt_active_falls_back_to_last_good(registry, tmp_path, caplog):
    registry.ensure_guild("g")
    v2 = _finetune(registry, "g", "v0001", tmp_path)
    registry.promote("g", v2)
    _weights(registry, "g", v2).write_bytes(b"truncated")
    assert registry.resolve_active("g").version == "v0001"
    assert "v0002" in caplog.text and "corrupt" in caplog.text
    _weights(registry, "g", "v0001").unlink()
    assert "missing" in registry.verify("g", "v0001")
    with pytest.raises(RegistryError, match="no intact model version"):
        registry.resolve_active("g")


def test_versions_record_parent_and_time(registry, tmp_path):
    registry.ensure_guild("g")
    v2 = _finetune(registry, "g", "v0001", tmp_path)
    meta = json.loads((registry.version_dir("g", v2) / "version.json").read_text())
    assert meta["parent"] == "v0001" and meta["created_at"] > 0
    # No temporary folders are left behind by a finished write.
    assert not [p for p in registry.guild_dir("g").iterdir() if p.name.startswith(".")]


def test_versions_are_stored_in_half_precision_and_load_in_full(registry):
    import torch
    from safetensors import safe_open

    from model.pipeline import CrowdtunePipeline

    registry.ensure_guild("g")
    with safe_open(str(_weights(registry, "g", "v0001")), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    assert dtypes == {torch.float16}
    assert registry.verify("g", "v0001") is None  # hashed after the conversion
    pipe = CrowdtunePipeline.from_pretrained(registry.version_dir("g", "v0001"))
    assert pipe.unet.dtype == torch.float32


def test_pruning_keeps_the_lineage_the_newest_and_the_pinned(registry, tmp_path):
    registry.ensure_guild("g")  # v0001
    for parent in ("v0001", "v0002", "v0002", "v0003", "v0005", "v0005"):
        _finetune(registry, "g", parent, tmp_path)  # v0002..v0007
    registry.promote("g", "v0005")  # lineage v0005 <- v0003 <- v0002 <- v0001
    registry.pin("g", "v0004")
    assert registry.kept("g", keep_recent=2) == {
        "v0005": ["active"], "v0003": ["ancestor"], "v0002": ["ancestor"],
        "v0001": ["ancestor"], "v0006": ["recent"], "v0007": ["recent"], "v0004": ["pinned"]}
    assert registry.prune("g", keep_recent=2) == []
    registry.pin("g", "v0004", pinned=False)
    assert registry.prune("g", keep_recent=2) == ["v0004"]
    assert [v.version for v in registry.versions("g")] == [
        "v0001", "v0002", "v0003", "v0005", "v0006", "v0007"]
    with pytest.raises(RegistryError, match="no model version v0004 .pruned"):
        registry.rollback("g", "v0004")
    assert registry.rollback("g").version == "v0003"  # the parent is always there
    assert _finetune(registry, "g", "v0003", tmp_path) == "v0008"  # numbers never reused
    with pytest.raises(ValueError):
        registry.prune("g", keep_recent=0)
    with pytest.raises(RegistryError):
        registry.pin("g", "v0004")
