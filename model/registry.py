"""Per-guild model lineages on disk, with hashed versions and an atomic active pointer.

Layout under the registry root:

    base/                       the shared base pipeline (pretrained or imported)
    guilds/<guild>/v0001/       one folder per version: pipeline files + version.json
    guilds/<guild>/ACTIVE       the active version's name, replaced atomically

A version folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written version; `version.json` records its parent, creation time and the
sha256 of every file, which is checked before a version is promoted or loaded. Promotion and
rollback rewrite ACTIVE with os.replace: readers see the old or the new version, never
neither. Weights are stored in half precision (half the disk; loading casts them back to
the compute dtype).

A version is a full copy of the pipeline or, trained with LoRA, an adapter (`adapter.json`,
`adapter.safetensors`: model/lora.py) over another version of the guild, its base.

Retention (`prune`): a guild keeps its active version and its ancestors back to v0001 (the
way back, and the base the baseline arm plays), its newest `keep_recent` versions, the
versions a moderator pinned (PINNED, one name a line), and the base of every adapter it
keeps; the rest are deleted. Version numbers
are never reused: the newest version is always kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.files import atomic_dir, sha256_file, write_text_atomic

log = logging.getLogger(__name__)

META = "version.json"
PINNED = "PINNED"
ADAPTER_CONFIG = "adapter.json"  # a version that is a LoRA adapter (model/lora.py)


def adapter_base(folder: Path) -> str | None:
    """The version an adapter version changes (a sibling folder); None for a full copy."""
    path = Path(folder) / ADAPTER_CONFIG
    return str(json.loads(path.read_text())["base"]) if path.is_file() else None


class CheckpointError(Exception):
    """A model folder that is missing, incomplete or unreadable (one-line message)."""


class RegistryError(Exception):
    """A one-line reason a registry operation cannot be done."""


@dataclass(frozen=True)
class VersionInfo:
    guild: str
    version: str
    parent: str | None
    created_at: float
    files: dict[str, str]  # relative path -> sha256
    source: str  # "base" or "finetune"
    note: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.version.lstrip("v"))


def hash_folder(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != META
    }


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    def has_base(self) -> bool:
        return (self.base_dir / "model_index.json").is_file()

    def guild_dir(self, guild: str | int) -> Path:
        return self.root / "guilds" / str(guild)

    def version_dir(self, guild: str | int, version: str) -> Path:
        return self.guild_dir(guild) / version

    # --- reading --------------------------------------------------------------------------

    def versions(self, guild: str | int) -> list[VersionInfo]:
        gdir = self.guild_dir(guild)
        if not gdir.is_dir():
            return []
        out = []
        for d in sorted(gdir.glob("v[0-9]*")):
            meta = d / META
            if meta.is_file():
                out.append(VersionInfo(**json.loads(meta.read_text())))
        return out

    def info(self, guild: str | int, version: str) -> VersionInfo:
        meta = self.version_dir(guild, version) / META
        if not meta.is_file():
            raise RegistryError(f"guild {guild} has no model version {version}")
        return VersionInfo(**json.loads(meta.read_text()))

    def active_name(self, guild: str | int) -> str | None:
        pointer = self.guild_dir(guild) / "ACTIVE"
        return pointer.read_text().strip() if pointer.is_file() else None

    def verify(self, guild: str | int, version: str) -> str | None:
        """None when every file matches its recorded hash, else a one-line problem."""
        try:
            info = self.info(guild, version)
        except (RegistryError, json.JSONDecodeError, TypeError) as exc:
            return str(exc)
        folder = self.version_dir(guild, version)
        for rel, digest in info.files.items():
            path = folder / rel
            if not path.is_file():
                return f"{version}: {rel} is missing"
            if sha256_file(path) != digest:
                return f"{version}: {rel} does not match its sha256 (corrupt)"
        return None

    def resolve_active(self, guild: str | int) -> VersionInfo:
        """The active version if intact, else its nearest intact ancestor (reported)."""
        name = self.active_name(guild)
        if name is None:
            raise RegistryError(f"guild {guild} has no model yet")
        seen = set()
        while name is not None and name not in seen:
            seen.add(name)
            problem = self.verify(guild, name)
            if problem is None:
                return self.info(guild, name)
            log.error("guild %s: model %s", guild, problem)
            try:
                name = self.info(guild, name).parent
            except (RegistryError, json.JSONDecodeError, TypeError):
                name = None
        raise RegistryError(f"guild {guild}: no intact model version left")

    # --- writing --------------------------------------------------------------------------

    def _next_version(self, guild: str | int) -> str:
        existing = [v.number for v in self.versions(guild)]
        return f"v{(max(existing) + 1 if existing else 1):04d}"

    def add_version(
        self, guild: str | int, source_dir: Path, parent: str | None, source: str,
        note: str = "", metrics: dict | None = None,
    ) -> VersionInfo:
        """Copy a saved pipeline folder in as the guild's next version (not yet active)."""
        gdir = self.guild_dir(guild)
        gdir.mkdir(parents=True, exist_ok=True)
        version = self._next_version(guild)
        with atomic_dir(gdir / version) as tmp:
            shutil.copytree(source_dir, tmp, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(META, "*.tmp"))
            for weights in tmp.rglob("*.safetensors"):
                to_half(weights)
            info = VersionInfo(
                guild=str(guild), version=version, parent=parent, created_at=time.time(),
                files=hash_folder(tmp), source=source, note=note, metrics=metrics or {},
            )
            (tmp / META).write_text(json.dumps(asdict(info), indent=2))
        log.info("guild %s: added model %s (parent %s)", guild, version, parent)
        return info

    def ensure_guild(self, guild: str | int) -> VersionInfo:
        """The guild's active version, creating v0001 from the base on first use."""
        if self.active_name(guild) is not None:
            return self.resolve_active(guild)
        if not self.has_base():
            raise RegistryError("no base model yet: run `crowdtune pretrain` first")
        info = self.add_version(guild, self.base_dir, parent=None, source="base",
                                note="starts from the shared base")
        self.promote(guild, info.version)
        return info

    # --- retention ------------------------------------------------------------------------

    def pinned(self, guild: str | int) -> list[str]:
        path = self.guild_dir(guild) / PINNED
        return path.read_text().split() if path.is_file() else []

    def pin(self, guild: str | int, version: str, pinned: bool = True) -> None:
        """Keep `version` whatever `prune` would do (or, with pinned=False, no longer)."""
        self.info(guild, version)  # RegistryError for a version that is not there
        names = [v for v in self.pinned(guild) if v != version] + ([version] if pinned else [])
        write_text_atomic(self.guild_dir(guild) / PINNED, "".join(f"{v}\n" for v in names))

    def kept(self, guild: str | int, keep_recent: int) -> dict[str, list[str]]:
        """Each version `prune` keeps, with why: active, ancestor, recent, pinned."""
        versions = {v.version: v for v in self.versions(guild)}
        why: dict[str, list[str]] = {}
        name = self.active_name(guild)
        reason = "active"
        while name in versions and name not in why:
            why[name] = [reason]
            name, reason = versions[name].parent, "ancestor"
        for name in sorted(versions)[-keep_recent:] if keep_recent > 0 else []:
            why.setdefault(name, []).append("recent")
        for name in self.pinned(guild):
            if name in versions:
                why.setdefault(name, []).append("pinned")
        for name in list(why):  # an adapter needs the full version it changes
            base = adapter_base(self.version_dir(guild, name))
            if base in versions:
                why.setdefault(base, []).append(f"base of {name}")
        return why

    def prune(self, guild: str | int, keep_recent: int) -> list[str]:
        """Delete the versions `kept` does not list; their names."""
        if keep_recent < 1:
            raise ValueError("keep_recent must be at least 1: version numbers are not reused")
        kept = self.kept(guild, keep_recent)
        gone = [v.version for v in self.versions(guild) if v.version not in kept]
        for name in gone:
            # Renamed first, so a crash mid-delete never leaves a half version in the list.
            doomed = self.guild_dir(guild) / f".pruned-{name}"
            self.version_dir(guild, name).rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            log.info("guild %s: pruned model %s", guild, name)
        return gone

    def promote(self, guild: str | int, version: str) -> None:
        problem = self.verify(guild, version)
        if problem is not None:
            raise RegistryError(f"cannot promote {problem}")
        write_text_atomic(self.guild_dir(guild) / "ACTIVE", version + "\n")
        log.info("guild %s: %s is now active", guild, version)

    def rollback(self, guild: str | int, to: str | None = None) -> VersionInfo:
        """Make `to` (default: the active version's parent) the active version."""
        current = self.active_name(guild)
        if current is None:
            raise RegistryError(f"guild {guild} has no model yet")
        target = to or self.info(guild, current).parent
        if target is None:
            raise RegistryError(f"{current} is the first version of guild {guild}; "
                                "there is nothing to roll back to")
        if target == current:
            raise RegistryError(f"{current} is already active")
        if not self.version_dir(guild, target).is_dir():
            raise RegistryError(f"guild {guild} has no model version {target} (pruned "
                                "versions cannot come back; see the versions kept)")
        self.promote(guild, target)
        return self.info(guild, target)


def to_half(path: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors in float16."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    if all(t.dtype == torch.float16 or not t.is_floating_point() for t in tensors.values()):
        return
    half = {k: t.half() if t.is_floating_point() else t for k, t in tensors.items()}
    save_file(half, str(path), metadata=metadata)
