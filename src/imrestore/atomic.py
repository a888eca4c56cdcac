"""Write outputs so that an interrupted or failed step leaves nothing a later step could mistake for a result.

Everything is first written next to its final place (same filesystem, so the final `os.replace` is atomic),
then renamed. A crash leaves at most a `.tmp-*` sibling, which the next run removes.

`sha256_file` lives here too, beside the writes whose results stages record by hash, so that a stage that
only reads files does not depend on the downloader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process umask, from /proc where Linux shows it; elsewhere POSIX can only read it by setting it
    (which would race with other threads creating files), so that is the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_sibling(final: Path, is_dir: bool) -> Path:
    """A fresh temporary beside `final`, with the permissions `final` would get if created directly.

    mkstemp / mkdtemp create 0600 / 0700 (right for secrets, wrong for results): the file or folder that
    replaces `final` must respect the umask like any other file the user's tools write.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TMP_PREFIX}{final.name}-"
    if is_dir:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        path.chmod(0o777 & ~current_umask())
        return path
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
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


def ensure_text(final: Path | str, text: str) -> None:
    """Make `final` hold `text`; a file that does already is left untouched (its mtime too)."""
    final = Path(final)
    if not (final.is_file() and final.read_text(encoding="utf-8") == text):
        write_text(final, text)


def write_bytes(final: Path | str, data: bytes) -> None:
    with atomic_file(final) as tmp:
        tmp.write_bytes(data)


def write_json(final: Path | str, data: object) -> None:
    write_text(final, json.dumps(data, indent=2) + "\n")


def sha256_file(path: Path | str) -> str:
    """The sha256 of a file as 64 lowercase hex digits, read in chunks so any size fits in memory. Downloads
    hash with a progress bar of their own (imrestore.acquire.download); this is for everything else."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
