"""Trained weights as files: `models/<task>/model.pt` (a plain state dict) beside `config.json` (the model config,
`arch` included, and the task), and the network they describe. Loading needs torch and the model code only, not Lightning, so
`imrestore restore` and `evaluate` start without it; `imrestore.training.export_weights` writes these files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from imrestore.errors import ImrestoreError
from torch import nn

from imrestore.models.network import ModelConfig, build_network


def load_network(weights_dir: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network from `export_weights`' files, refusing anything but plain tensors."""
    weights_dir = Path(weights_dir)
    try:
        config = json.loads((weights_dir / "config.json").read_text())["model"]
        state = load_tensors(weights_dir / "model.pt", map_location)
    except FileNotFoundError as exc:
        raise ImrestoreError(f"trained weights not found: {exc.filename} is missing") from None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ImrestoreError(f"{weights_dir / 'config.json'} is not a model config ({exc})") from None
    return network_from(config, state, source=weights_dir / "model.pt", described_by="config.json",
                        origin=str(weights_dir / "config.json"))


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> object:
    """`torch.load(path, weights_only=True)`: tensors and plain values only, never code. A file torch cannot
    read that way (a pickle that would run code, a truncated or foreign file) is an ImrestoreError naming it;
    a missing file stays a FileNotFoundError, which callers name in their own terms."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch's restricted unpickler and its zip reader raise many kinds
        raise ImrestoreError(f"{path} cannot be loaded safely (weights_only=True): expected a file torch.save "
                             f"wrote of tensors and plain values, found one torch.load cannot read that way "
                             f"({_load_failure(exc)})") from None


def _load_failure(exc: Exception) -> str:
    """What torch.load's error says is wrong with the file, in its first sentence: the rest of its weights_only
    message is advice to load with weights_only=False, which is exactly what must not be done here."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the restricted unpickler's own reason follows this marker
        text = text.split("WeightsUnpickler error:", 1)[1]
    if isinstance(exc, EOFError) and not text.strip():
        return "it ends early: empty or truncated"
    sentence = text.strip().split("\n")[0].split(". ")[0].rstrip(".")
    return sentence or type(exc).__name__


def network_from(model: dict, state: dict, source: Path, described_by: str, origin: str,
                 where: str = "model") -> nn.Module:
    """The network `model` describes, with `state` loaded; a mismatch names the weights and their description.

    A config written before `model.arch` existed has no `arch` key and means the paper's network."""
    net = build_network(ModelConfig.from_params(model, where, origin=origin))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ImrestoreError(f"{source} does not fit the model in {described_by}: {exc}") from None
    return net


# --- weights trained elsewhere ------------------------------------------------------------------------------

PUBLISHED_SUFFIXES = (".pth", ".pt")
# data/checkpoints/<task>/README.md, written by `imrestore data`: evaluate@<task> depends on the folder.
CHECKPOINT_READMES = {
    task: f"Put published {what} weights here (.pth or .pt, e.g. NAFNet's {example}.pth release file), then\n"
          f"`dvc add data`; the next `dvc repro` re-runs evaluate@{task} only and reports each file beside the\n"
          "trained model in metrics/{task}.json (README, \"Published checkpoints\"). They load with\n"
          "weights_only=True; the architecture is read from the tensors.\n".replace("{task}", task)
    for task, what, example in (("deblur", "deblurring", "NAFNet-GoPro-width32"),
                                ("denoise", "denoising", "NAFNet-SIDD-width32"))
}
# Where a checkpoint file keeps its state dict, in the order tried: BasicSR/NAFNet releases ({"params": ...},
# EMA weights first when both are there), Lightning ({"state_dict": {"net.…": ...}}), or the state dict itself.
STATE_KEYS = ("params_ema", "params", "state_dict")


def load_published(path: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint trained elsewhere (NAFNet's release, or this project's network), rebuilt from its tensors.

    The architecture and its sizes are read from the tensors' names and shapes (`model_of_state`), so a
    release file needs no description beside it. Loading refuses anything but tensors and plain values.
    """
    path = Path(path)
    try:
        loaded = load_tensors(path, map_location)
    except FileNotFoundError:
        raise ImrestoreError(f"checkpoint not found: {path}") from None
    state = state_dict_of(loaded, path)
    return network_from(model_of_state(state, path), state, source=path,
                        described_by="the architecture its tensor names and shapes describe", origin=str(path))


def state_dict_of(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in STATE_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ImrestoreError(f"{path}: expected a state dict of tensors, or one under "
                             f"{', '.join(repr(k) for k in STATE_KEYS)}; found {type(loaded).__name__}")
    # Prefixes of the wrappers that saved it: Lightning's module (`net.`), DDP and DataParallel (`module.`).
    for prefix in ("net.", "module."):
        if all(key.startswith(prefix) for key in loaded):
            loaded = {key.removeprefix(prefix): value for key, value in loaded.items()}
    return loaded


def model_of_state(state: dict[str, torch.Tensor], path: Path) -> dict:
    """The `model` params that build a network these tensors fit: NAFNet's sizes, or the paper network's keys."""
    if "intro.weight" in state and "ending.weight" in state:
        levels = _count(state, "downs")
        return {"arch": "nafnet", "nafnet": {
            "width": int(state["intro.weight"].shape[0]),
            "enc_blocks": [_count(state, f"encoders.{level}") for level in range(levels)],
            "middle_blocks": _count(state, "middle_blks"),
            "dec_blocks": [_count(state, f"decoders.{level}") for level in range(levels)]}}
    if "head.weight" in state and "tail.weight" in state:
        return {"arch": "paper", "blocks": _count(state, "body"), "features": int(state["head.weight"].shape[0]),
                "dcn_kernel": int(state["head.weight"].shape[-1]),
                "lka": any(key.startswith("body.0.lka.") for key in state),
                "attention": any(key.startswith("body.0.channel_attention.") for key in state),
                "norm": "batch" if "body.0.norm1.running_mean" in state else "layer"}
    shown = ", ".join(list(state)[:4]) + (", …" if len(state) > 4 else "")
    raise ImrestoreError(f"{path}: expected NAFNet's release layout (intro.*, encoders.*, …, ending.*) or this "
                         f"project's network (head.*, body.*, tail.*), found tensors {shown}")


def _count(state: dict, prefix: str) -> int:
    """How many numbered children `prefix.0`, `prefix.1`, … the state dict has tensors for."""
    indices = {key[len(prefix) + 1:].split(".")[0] for key in state if key.startswith(prefix + ".")}
    return len({int(index) for index in indices if index.isdigit()})
