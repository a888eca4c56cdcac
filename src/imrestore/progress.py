"""Rich progress displays with one look across the project.

They draw on stderr, so a stage's stdout stays free for what it reports; off a terminal rich prints a final
line instead of animating.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def byte_columns() -> tuple[ProgressColumn, ...]:
    """Description, bar, bytes done/total, rate and ETA: for downloads, extraction and hashing."""
    return (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn())


def count_columns(unit: str) -> tuple[ProgressColumn, ...]:
    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
            TimeElapsedColumn(), TimeRemainingColumn())


def new_progress(*columns: ProgressColumn, enabled: bool = True) -> Progress:
    """A rich Progress on stderr; `enabled=False` draws nothing (for tests and benchmarks)."""
    return Progress(*columns, console=Console(stderr=True), disable=not enabled)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items", start: float = 0,
                 enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """One bar; yields `advance(n)`. `unit="bytes"` shows sizes, transfer rate and ETA."""
    columns = byte_columns() if unit == "bytes" else count_columns(unit)
    with new_progress(*columns, enabled=enabled) as progress:
        task = progress.add_task(description, total=total, completed=start)
        yield lambda n: progress.advance(task, n)
