"""Rich progress bars with one look across the project; quiet when output is not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items", start: float = 0,
                 enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """Yield `advance(n)`; `unit="bytes"` shows sizes, transfer rate and ETA."""
    if not enabled:
        yield lambda n: None
        return
    if unit == "bytes":
        columns = [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns = [MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), *columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=start)
        yield lambda n: progress.advance(task, n)
