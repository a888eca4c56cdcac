"""What every benchmark script shares: where its results go, what machine produced them, how to time."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console


def write_json(results: dict, path: Path | None, console: Console) -> None:
    """Write `results` to `path` (when given) so runs can be compared later."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def machine_facts(device=None) -> dict:
    """Python, torch, cores and (on CUDA) the GPU: recorded beside every result."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
    }


def timed(run: Callable[[], object], sync: Callable[[], object]) -> float:
    """Wall seconds of `run()`, with `sync()` (e.g. torch.cuda.synchronize) before and after."""
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start
