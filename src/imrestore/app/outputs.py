"""Where the app's commands write (`restore`, `export`, `report`): checked before any work, and a failed write
as a clear error.

A command that runs for seconds or minutes must not fail at its end on an output path it could have refused
at the start, and a disk that fills up or turns read-only mid-way is named with the path, not a traceback.
Writes themselves go through `imrestore.atomic`, so a failed one leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from imrestore.errors import ImrestoreError


def check_folder(folder: Path, role: str) -> None:
    """`folder` is, or can be created as, a folder this process may write in; else an error naming `role`."""
    folder = Path(folder)
    existing = folder
    # os.path, not Path: it answers False for any OSError (a file on the way, no permission), never raises
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        where = f"{folder} is a file" if existing == folder else f"{folder} cannot be created: {existing} is a file"
        raise ImrestoreError(f"{where}; expected {role} (a folder: an existing one, or a path where one can be "
                             "created)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImrestoreError(f"{folder}: {existing} is not writable (a read-only file system, or no permission); "
                             f"expected {role} somewhere this user can write")


def check_file(path: Path, role: str) -> None:
    """`path` can be written as a file: no folder in its place, and its folder can be written in."""
    path = Path(path)
    if os.path.isdir(path):
        raise ImrestoreError(f"{path} is a folder; expected {role} (a file to write; an existing file is "
                             "replaced)")
    check_folder(path.parent, f"the folder for {path}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError of the block (disk full, read-only, the path taken meanwhile) into an error naming `path`."""
    try:
        yield
    except OSError as exc:
        at = f" at {exc.filename}" if exc.filename and str(exc.filename) != str(path) else ""
        raise ImrestoreError(f"{path} could not be written: {exc.strerror or exc}{at}; expected a writable folder "
                             "with free space (nothing half-written was left)") from None
