"""Write outputs so that an interrupted or failed step leaves nothing a later step could mistake for a result.

Everything is first written next to its final place (same filesystem, so the final `os.replace` is atomic),
then renamed. A crash leaves at most a `.tmp-*` sibling, which the next run removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _tmp_sibling(final: Path, is_dir: bool) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TMP_PREFIX}{final.name}-"
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    os.close(fd)
    return Path(name)


def remove_stale_tmp(final: Path) -> None:
    """Remove temporaries that an interrupted earlier run left beside `final`."""
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f"{TMP_PREFIX}{final.name}-*"):
        remove(stale)


def remove(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `final` only if the block finishes without error."""
    final = Path(final)
    remove_stale_tmp(final)
    tmp = _tmp_sibling(final, is_dir=True)
    try:
        yield tmp
        remove(final)
        os.replace(tmp, final)
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_file(final: Path | str) -> Iterator[Path]:
    """Yield a temporary file path that replaces `final` only if the block finishes without error."""
    final = Path(final)
    tmp = _tmp_sibling(final, is_dir=False)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        remove(tmp)


def write_text(final: Path | str, text: str) -> None:
    with atomic_file(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(final: Path | str, data: bytes) -> None:
    with atomic_file(final) as tmp:
        tmp.write_bytes(data)


def write_json(final: Path | str, data: object) -> None:
    write_text(final, json.dumps(data, indent=2) + "\n")
