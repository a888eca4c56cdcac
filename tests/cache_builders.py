"""Patch caches written by hand in the format documented in imrestore.data.patches, for tests that need one
without images on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_cache(root: Path, subsets: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A patch cache in the format documented in imrestore.data.patches, written by hand (np.save, CSV, cache.json)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "size": None, "subsets": {}}
    for subset, (inputs, targets) in subsets.items():
        assert inputs.shape == targets.shape and inputs.dtype == targets.dtype == np.uint8
        meta["size"] = inputs.shape[1]
        np.save(root / f"{subset}_input.npy", inputs)
        np.save(root / f"{subset}_target.npy", targets)
        pd.DataFrame({
            "patch": range(len(inputs)),
            "pair_id": [f"pair{i // 4:03d}" for i in range(len(inputs))],
            "input_path": [f"raw/in{i // 4:03d}.png" for i in range(len(inputs))],
            "target_path": [f"raw/gt{i // 4:03d}.png" for i in range(len(inputs))],
            "x": [(i % 2) * inputs.shape[2] for i in range(len(inputs))],
            "y": [(i // 2 % 2) * inputs.shape[1] for i in range(len(inputs))],
        }).to_csv(root / f"{subset}_index.csv", index=False)
        meta["subsets"][subset] = {
            "count": len(inputs),
            "shape": list(inputs.shape),
            "input_sha256": _sha256(root / f"{subset}_input.npy"),
            "target_sha256": _sha256(root / f"{subset}_target.npy"),
            "index_sha256": _sha256(root / f"{subset}_index.csv"),
        }
    (root / "cache.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return root
