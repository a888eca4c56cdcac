"""Trained weights as files: `models/<task>/model.pt` (a plain state dict) beside `config.json` (the model config
and task), and the network they describe. Loading needs torch and the model code only, not Lightning, so
`imrestore restore` and `evaluate` start without it; `imrestore.training.export_weights` writes these files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from imrestore.errors import ImrestoreError
from imrestore.models.network import ModelConfig, RestorationNet


def load_network(weights_dir: Path, map_location: str | torch.device = "cpu") -> RestorationNet:
    """Rebuild a network from `export_weights`' files, refusing anything but plain tensors."""
    weights_dir = Path(weights_dir)
    try:
        config = json.loads((weights_dir / "config.json").read_text())["model"]
        state = torch.load(weights_dir / "model.pt", map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise ImrestoreError(f"trained weights not found: {exc.filename} is missing") from None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ImrestoreError(f"{weights_dir / 'config.json'} is not a model config ({exc})") from None
    return network_from(config, state, source=weights_dir / "model.pt", described_by="config.json",
                        where=f"{weights_dir / 'config.json'}: model")


def network_from(model: dict, state: dict, source: Path, described_by: str, where: str) -> RestorationNet:
    """The network `model` describes, with `state` loaded; a mismatch names the weights and their description."""
    net = RestorationNet(ModelConfig.from_params(model, where=where))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ImrestoreError(f"{source} does not fit the model in {described_by}: {exc}") from None
    return net
