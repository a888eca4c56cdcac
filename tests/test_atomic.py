"""Atomic writes leave a result or nothing, and what they leave has the permissions the umask asks for."""

from __future__ import annotations

import os
import stat

import pytest

from imrestore import atomic
@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_permissions_the_umask_asks_for(tmp_path, umask):
    atomic.write_text(tmp_path / "out.txt", "x")
    with atomic.atomic_dir(tmp_path / "folder") as staging:
        (staging / "inner.txt").write_text("y")
    assert atomic.current_umask() == umask
    assert mode(tmp_path / "out.txt") == 0o666 & ~umask
    assert mode(tmp_path / "folder") == 0o777 & ~umask
    assert mode(tmp_path / "folder" / "inner.txt") == 0o666 & ~umask  # created plainly inside: as always


def test_a_failed_block_leaves_neither_a_result_nor_a_temporary(tmp_path):
    (tmp_path / "out.txt").write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(tmp_path / "folder") as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert (tmp_path / "out.txt").read_text() == "previous"
