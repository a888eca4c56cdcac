"""`imrestore restore`: a trained network on the user's own images, a file or a folder in, PNGs out.

    imrestore restore photos/ --task denoise --out restored/
    imrestore restore blurry.jpg --weights build/checkpoints/deblur/last.ckpt --tile 512 --device cuda

Weights are an exported model folder (models/<task>/: model.pt + config.json, what `dvc pull` fetches) or a
Lightning checkpoint of a training run; both load with `weights_only=True`, so a weights file can hold
tensors and plain values only, never code. A folder is walked recursively and its layout is mirrored under
the output folder. An unreadable image is reported and skipped; the command then exits non-zero. Grey,
16-bit, alpha, palette, CMYK and EXIF-rotated images are handled as `user_images` describes, and whatever is
converted or reduced is reported beside the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imrestore.app.user_images import read_user_image, write_user_image
from imrestore.data.layouts import TASKS
from imrestore.errors import ImrestoreError
from imrestore.evaluation.inference import InferenceConfig, prepare_network, resolve_device, restore_images
from imrestore.models.weights import load_network, network_from
from imrestore.progress import progress_bar

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
CHECKPOINT_PREFIX = "net."  # RestorationModule keeps the network as `self.net`


@dataclass
class RestoreReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    notes: dict[Path, list[str]] = field(default_factory=dict)  # what was converted or reduced, per input


def load_weights(weights: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """An exported model folder (or its model.pt) or a Lightning checkpoint (.ckpt), as a network."""
    weights = Path(weights)
    if not weights.exists():
        raise ImrestoreError(f"--weights {weights} does not exist; expected a model folder (model.pt + "
                             "config.json) or a Lightning checkpoint (.ckpt)")
    if weights.is_dir() or weights.name == "model.pt":
        return load_network(weights if weights.is_dir() else weights.parent, map_location)
    if weights.suffix != ".ckpt":
        raise ImrestoreError(f"--weights {weights}: expected a model folder (model.pt + config.json) or a "
                             f"Lightning checkpoint (.ckpt)")
    try:
        checkpoint = torch.load(weights, map_location=map_location, weights_only=True)
        model = checkpoint["hyper_parameters"]["model"]
        state = {key.removeprefix(CHECKPOINT_PREFIX): value for key, value in checkpoint["state_dict"].items()
                 if key.startswith(CHECKPOINT_PREFIX)}
    except (KeyError, TypeError):
        raise ImrestoreError(f"{weights} is not a checkpoint of an imrestore training run "
                             f"(expected hyper_parameters.model and a state_dict of net.* tensors)") from None
    except Exception as exc:  # torch's unpickler refuses anything but tensors and plain values
        raise ImrestoreError(f"{weights} cannot be loaded safely (weights_only=True): {exc}") from None
    return network_from(model, state, source=weights, described_by="its hyper_parameters",
                        origin=str(weights), where="hyper_parameters.model")


def load_task_weights(task: str, weights: Path | None = None) -> tuple[Path, nn.Module]:
    """(where the weights are, the network) for `task`: `weights`, or models/<task> when it is None. Weights a
    config.json says were trained for the other task are refused."""
    if task not in TASKS:
        raise ImrestoreError(f"--task must be one of {', '.join(TASKS)}, found {task!r}")
    if weights is None:
        weights = Path("models") / task
        if not (weights / "model.pt").is_file():
            raise ImrestoreError(
                f"no trained {task} model in {weights}/ (where it is looked for without --weights): run "
                f"`dvc repro train@{task}` or `dvc pull` in the repository, or pass --weights")
    weights = Path(weights)
    net = load_weights(weights)
    folder = weights if weights.is_dir() else weights.parent
    trained_for = (json.loads((folder / "config.json").read_text()).get("task")
                   if weights.suffix != ".ckpt" and (folder / "config.json").is_file() else None)
    if trained_for not in (None, task):
        raise ImrestoreError(f"{weights} was trained for {trained_for}, not {task}")
    return weights, net


def find_images(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        images = sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ImrestoreError(f"{source} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    raise ImrestoreError(f"{source}: no such file or folder")


def output_path(image: Path, source: Path, out_dir: Path) -> Path:
    relative = image.relative_to(source) if source.is_dir() else Path(image.name)
    return out_dir / relative.with_suffix(".png")


def restore_files(source: Path, out_dir: Path, task: str, weights: Path | None = None,
                  config: InferenceConfig | None = None, device: str = "auto", progress: bool = True
                  ) -> RestoreReport:
    """Restore every image of `source` (a file or folder) into `out_dir` as PNG."""
    source, out_dir = Path(source), Path(out_dir)
    images = find_images(source)
    targets = {image: output_path(image, source, out_dir) for image in images}
    clobbered = [str(image) for image, target in targets.items() if target.resolve() == image.resolve()]
    if clobbered:
        raise ImrestoreError(f"--out {out_dir} would overwrite the input {clobbered[0]}; choose another folder")
    weights, net = load_task_weights(task, weights)
    torch_device = resolve_device(device)
    net = prepare_network(net, torch_device)
    config = config or InferenceConfig()
    report = RestoreReport()
    with progress_bar(f"restore ({task})", total=len(images), unit="images", enabled=progress) as advance:
        for image_path, target in targets.items():
            try:
                image = read_user_image(image_path)
            except ImrestoreError as error:
                report.failed[image_path] = str(error)
                advance(1)
                continue
            batch = torch.from_numpy(image.rgb).permute(2, 0, 1)[None]
            restored = restore_images(net, batch, config)[0].float()
            if not torch.isfinite(restored).all():
                raise ImrestoreError(f"{image_path}: the network returned non-finite values; the weights in "
                                     f"{weights} are broken (retrain, or restore with other weights)")
            write_user_image(target, restored.permute(1, 2, 0).cpu().numpy(), image)
            if image.notes:
                report.notes[image_path] = image.notes
            report.written.append(target)
            advance(1)
    return report
