"""What every benchmark script shares: where its results go."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console


def write_json(results: dict, path: Path | None, console: Console) -> None:
    """Write `results` to `path` (when given) so runs can be compared later."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")
