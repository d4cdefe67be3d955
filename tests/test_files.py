"""The shared file primitives: atomic writes leave the old file or the new one, never half."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from model.files import atomic_dir, atomic_path, sha256_file, write_text_atomic


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "a" / "file.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]  # no leftovers


def test_atomic_dir_swaps_a_whole_folder(tmp_path):
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(ValueError), atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("v2 (partial)")
        raise ValueError("killed")
    assert (dest / "weights").read_text() == "v1"
    with atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("v2")
    assert (dest / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError):
        sha256_file(tmp_path / "missing")


def test_the_cli_imports_neither_torch_nor_diffusers():
    """`crowdtune --help` must not pay for the model stack (seconds of imports)."""
    code = ("import sys, bot.cli; "
            "print(sorted(m for m in ('torch', 'diffusers', 'discord') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
